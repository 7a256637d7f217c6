//! Continuous batching against the one-sequence decode loop: a sequence's
//! tokens are the same alone, in a batch, joining a batch mid-flight, and
//! next to a cancelled neighbour; a prompt-cache hit gives the logits of a
//! cold prefill.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::batching::{alone, eight_prompts, ids, request, run, run_cancelling, sampler};
use engine::batch::{BatchConfig, Scheduler, SeqEnd, SeqEvent, SeqRequest};
use engine::generate::{GenerateOptions, Generator};
use engine::model::synthetic::Preset;
use engine::{Model, SamplingParams};

fn model() -> Model {
    Preset::find("tiny-f32").unwrap().build(7).unwrap()
}

#[test]
fn no_step_is_computed_past_the_last_token() {
    let model = model();
    let prompts = eight_prompts();
    let mut s = Scheduler::new(&model, BatchConfig::default());
    s.submit(request(
        &model,
        1,
        &prompts[2],
        &SamplingParams::greedy(),
        5,
    ))
    .unwrap();
    let alone = run(&mut s, HashMap::new());
    assert_eq!(alone.tokens[&1].len(), 5);
    assert_eq!(s.host_times().steps, 5, "one decode step per token");
    // The generator's host times cover the steps after the first token's,
    // one per token that follows it.
    let options = GenerateOptions {
        max_tokens: 5,
        ..GenerateOptions::default()
    };
    let params = SamplingParams::greedy();
    let mut generator = Generator::new(
        &model,
        &prompts[2],
        sampler(&model, &prompts[2], &params),
        options,
    )
    .unwrap();
    assert_eq!(generator.by_ref().map(Result::unwrap).count(), 5);
    let stats = generator.stats();
    assert_eq!(stats.host_steps, 4);
    assert!(stats.host_build > Duration::ZERO && stats.host_dispatch > Duration::ZERO);
    // Two rows ending at different lengths: steps until the longer one's
    // last token, none after.
    let mut s = Scheduler::new(&model, BatchConfig::default());
    for (id, n) in [(1, 3), (2, 7)] {
        s.submit(request(
            &model,
            id,
            &prompts[id as usize],
            &SamplingParams::greedy(),
            n,
        ))
        .unwrap();
    }
    let both = run(&mut s, HashMap::new());
    assert_eq!((both.tokens[&1].len(), both.tokens[&2].len()), (3, 7));
    let steps = s.host_times().steps;
    assert!(
        steps <= 8,
        "{steps} steps for 7 tokens (the rows join one step apart at most)"
    );
    assert!(!s.is_busy());
}

#[test]
fn greedy_outputs_in_a_batch_equal_the_outputs_alone() {
    let model = model();
    let params = SamplingParams::greedy();
    let n = 12;
    let want: Vec<Vec<u32>> = eight_prompts()
        .iter()
        .map(|p| ids(&alone(&model, p, &params, n)))
        .collect();
    // Alone through the scheduler.
    for (i, p) in eight_prompts().iter().enumerate() {
        let mut s = Scheduler::new(&model, BatchConfig::default());
        s.submit(request(&model, 1, p, &params, n)).unwrap();
        let got = run(&mut s, HashMap::new());
        assert_eq!(ids(&got.tokens[&1]), want[i], "prompt {i} alone");
    }
    // All at once, and half of them joining a running batch.
    let mut s = Scheduler::new(&model, BatchConfig::default());
    let mut later: HashMap<usize, Vec<SeqRequest>> = HashMap::new();
    for (i, p) in eight_prompts().iter().enumerate() {
        let req = request(&model, i as u64, p, &params, n);
        if i % 2 == 0 {
            s.submit(req).unwrap();
        } else {
            later.entry(3 * i).or_default().push(req);
        }
    }
    let got = run(&mut s, later);
    for (i, want) in want.iter().enumerate() {
        assert_eq!(
            &ids(&got.tokens[&(i as u64)]),
            want,
            "prompt {i} in a batch"
        );
        let report = &got.reports[&(i as u64)];
        assert_eq!(report.end, SeqEnd::Length);
        assert_eq!(report.generated, n);
    }
    // The four submitted together were prefilled in one pass (left-padded
    // from 2 to 44 prompt tokens), the four joining later one by one.
    assert_eq!(s.prefill_passes(), 5);
    // All eight together, and with a budget that splits them in two
    // groups (8 × 51 padded tokens do not fit in 256).
    for (step, passes) in [(2048, 1), (256, 3)] {
        let config = BatchConfig {
            prefill_step: step,
            ..BatchConfig::default()
        };
        let mut s = Scheduler::new(&model, config);
        for (i, p) in eight_prompts().iter().enumerate() {
            s.submit(request(&model, i as u64, p, &params, n)).unwrap();
        }
        let got = run(&mut s, HashMap::new());
        for (i, want) in want.iter().enumerate() {
            assert_eq!(
                &ids(&got.tokens[&(i as u64)]),
                want,
                "prompt {i}, budget {step}"
            );
        }
        assert_eq!(s.prefill_passes(), passes, "budget {step}");
    }
}

#[test]
fn seeded_sampling_in_a_batch_equals_sampling_alone() {
    let model = model();
    let n = 10;
    let params = |seed| SamplingParams {
        temperature: 0.9,
        top_p: 0.95,
        seed: Some(seed),
        logprobs: true,
        top_logprobs: 3,
        ..SamplingParams::default()
    };
    let mut s = Scheduler::new(&model, BatchConfig::default());
    for (i, p) in eight_prompts().iter().enumerate() {
        s.submit(request(&model, i as u64, p, &params(100 + i as u64), n))
            .unwrap();
    }
    let got = run(&mut s, HashMap::new());
    for (i, p) in eight_prompts().iter().enumerate() {
        let want = alone(&model, p, &params(100 + i as u64), n);
        let batch = &got.tokens[&(i as u64)];
        assert_eq!(ids(batch), ids(&want), "prompt {i}");
        for (b, w) in batch.iter().zip(&want) {
            let (b, w) = (b.logprobs.as_ref().unwrap(), w.logprobs.as_ref().unwrap());
            assert!((b.logprob - w.logprob).abs() < 1e-4, "{b:?} vs {w:?}");
        }
    }
}

#[test]
fn a_cancelled_sequence_leaves_without_disturbing_the_others() {
    let model = model();
    let params = SamplingParams::greedy();
    let n = 16;
    let mut s = Scheduler::new(&model, BatchConfig::default());
    for (i, p) in eight_prompts().iter().enumerate() {
        s.submit(request(&model, i as u64, p, &params, n)).unwrap();
    }
    let cancel: HashMap<usize, u64> = [(12, 3)].into();
    let got = run_cancelling(&mut s, HashMap::new(), &cancel);
    let cancelled = &got.reports[&3];
    assert_eq!(cancelled.end, SeqEnd::Cancelled);
    assert!(cancelled.generated < n, "{cancelled:?}");
    for (i, p) in eight_prompts().iter().enumerate() {
        if i == 3 {
            continue;
        }
        assert_eq!(
            ids(&got.tokens[&(i as u64)]),
            ids(&alone(&model, p, &params, n))
        );
        assert_eq!(got.reports[&(i as u64)].end, SeqEnd::Length);
    }
}

#[test]
fn a_stop_token_ends_only_its_sequence() {
    let model = model();
    let params = SamplingParams::greedy();
    let prompts = eight_prompts();
    let reference = ids(&alone(&model, &prompts[5], &params, 8));
    let stop = reference[3];
    let first = reference.iter().position(|&t| t == stop).unwrap();
    let mut s = Scheduler::new(&model, BatchConfig::default());
    let mut req = request(&model, 5, &prompts[5], &params, 8);
    req.stop_ids = vec![stop];
    s.submit(req).unwrap();
    s.submit(request(&model, 6, &prompts[6], &params, 8))
        .unwrap();
    let got = run(&mut s, HashMap::new());
    assert_eq!(ids(&got.tokens[&5]), reference[..=first]);
    assert_eq!(got.reports[&5].end, SeqEnd::Stop);
    assert_eq!(got.tokens[&6].len(), 8);
}

#[test]
fn a_prompt_cache_hit_gives_the_logits_of_a_cold_prefill() {
    let model = model();
    let params = SamplingParams {
        logprobs: true,
        top_logprobs: 20,
        ..SamplingParams::greedy()
    };
    let history: Vec<u32> = (0..60u32).map(|i| (i * 13 + 7) % 256).collect();
    let n = 6;
    // Turn 1 fills the prompt cache with the history and its answer.
    let mut s = Scheduler::new(&model, BatchConfig::default());
    s.submit(request(&model, 1, &history, &params, n)).unwrap();
    let first = run(&mut s, HashMap::new());
    let mut turn2 = history.clone();
    turn2.extend(ids(&first.tokens[&1]));
    turn2.extend([9, 8, 7, 6, 5]);
    s.submit(request(&model, 2, &turn2, &params, n)).unwrap();
    let warm = run(&mut s, HashMap::new());
    // The history and the answer came from the cache, but for the answer's
    // last token: no step is built past a sequence's last token, so its
    // keys and values were never computed.
    assert_eq!(warm.reports[&2].cached_tokens, history.len() + n - 1);
    let cold = alone(&model, &turn2, &params, n);
    assert_eq!(ids(&warm.tokens[&2]), ids(&cold));
    for (w, c) in warm.tokens[&2].iter().zip(&cold) {
        let (w, c) = (w.logprobs.as_ref().unwrap(), c.logprobs.as_ref().unwrap());
        for ((wi, wl), (ci, cl)) in w.top.iter().zip(&c.top) {
            assert_eq!(wi, ci);
            assert!((wl - cl).abs() < 1e-5, "{wl} vs {cl}");
        }
    }
    // Without the cache: nothing reused, same tokens.
    let off = BatchConfig {
        prefix_cache: 0,
        ..BatchConfig::default()
    };
    let mut s = Scheduler::new(&model, off);
    s.submit(request(&model, 1, &history, &params, n)).unwrap();
    run(&mut s, HashMap::new());
    s.submit(request(&model, 2, &turn2, &params, n)).unwrap();
    let uncached = run(&mut s, HashMap::new());
    assert_eq!(uncached.reports[&2].cached_tokens, 0);
    assert_eq!(ids(&uncached.tokens[&2]), ids(&cold));
}

#[test]
fn limits_hold_sequences_back_in_arrival_order() {
    let model = model();
    let params = SamplingParams::greedy();
    let config = BatchConfig {
        max_batch: 3,
        ..BatchConfig::default()
    };
    let mut s = Scheduler::new(&model, config);
    for (i, p) in eight_prompts().iter().enumerate() {
        s.submit(request(&model, i as u64, p, &params, 4)).unwrap();
    }
    let mut first_token_step = HashMap::new();
    let mut step = 0;
    while s.is_busy() {
        for event in s.step().unwrap() {
            if let SeqEvent::Token { id, .. } = event {
                first_token_step.entry(id).or_insert(step);
            }
        }
        assert!(s.active() <= 3);
        step += 1;
    }
    let order: Vec<usize> = (0..8u64).map(|id| first_token_step[&id]).collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
    assert!(order[7] > order[0], "{order:?}");
}

#[test]
fn a_burst_of_arrivals_is_prefilled_in_few_passes_while_running_rows_keep_stepping() {
    let model = model();
    let params = SamplingParams::greedy();
    let mut s = Scheduler::new(&model, BatchConfig::default());
    // Two streams decoding, then 16 arrivals at once (the eight prompts
    // twice over: 3 to 52 tokens each).
    let prompts = eight_prompts();
    for id in [100, 101] {
        s.submit(request(&model, id, &prompts[7], &params, 40))
            .unwrap();
    }
    for _ in 0..3 {
        s.step().unwrap();
    }
    assert_eq!(s.active(), 2);
    let before = s.prefill_passes();
    for (i, p) in prompts.iter().chain(&prompts).enumerate() {
        s.submit(request(&model, i as u64, p, &params, 4)).unwrap();
    }
    // Until every arrival has joined, each step still gives both running
    // streams their next token.
    let mut steps = 0;
    while s.waiting() > 0 {
        let events = s.step().unwrap();
        let running = events
            .iter()
            .filter(|e| matches!(e, SeqEvent::Token { id, .. } if *id >= 100))
            .count();
        assert_eq!(
            running, 2,
            "step {steps} of the burst left a running stream out"
        );
        steps += 1;
        assert!(steps < 100, "the arrivals never joined");
    }
    let passes = s.prefill_passes() - before;
    assert!(
        passes < 16,
        "16 arrivals took {passes} prefill passes, one each or more"
    );
    let got = run(&mut s, HashMap::new());
    for i in 0..16u64 {
        assert_eq!(got.reports[&i].generated, 4, "arrival {i}");
    }
}
