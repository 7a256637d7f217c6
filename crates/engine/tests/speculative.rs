//! Speculative decoding in the batch scheduler: greedy output is the
//! output without speculation (prompt lookup, a draft model, the model as
//! its own draft; one sequence and a batch), and sampled output follows
//! the same distribution (a two-sample chi-square test over seeded runs).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::batching::{alone, eight_prompts, ids, request, run};
use engine::batch::{BatchConfig, Scheduler};
use engine::model::synthetic::Preset;
use engine::speculative::{Drafter, SpecCounts, Speculation};
use engine::{Model, SamplingParams};

fn model(seed: u64) -> Model {
    Preset::find("tiny-f32").unwrap().build(seed).unwrap()
}

fn config() -> BatchConfig {
    BatchConfig {
        prefix_cache: 0,
        ..BatchConfig::default()
    }
}

fn speculating<'m>(target: &'m Model, drafter: Drafter<'m>, max_batch: usize) -> Scheduler<'m> {
    Scheduler::new(target, config())
        .with_speculation(Speculation {
            drafter,
            num_draft_tokens: 4,
            max_batch,
        })
        .unwrap()
}

/// A prompt that repeats a phrase, so prompt lookup has drafts.
fn repetitive() -> Vec<u32> {
    let phrase = [11, 42, 7, 99, 3, 250, 18];
    phrase
        .iter()
        .cycle()
        .take(5 * phrase.len())
        .copied()
        .collect()
}

/// Runs `prompts` (ids 0..) for `n` tokens each (the `i`-th `i * longer`
/// more), greedily; their tokens and the draft counts summed over them.
fn greedy_run(
    s: &mut Scheduler,
    target: &Model,
    prompts: &[Vec<u32>],
    n: usize,
    longer: usize,
) -> (Vec<Vec<u32>>, SpecCounts) {
    for (i, prompt) in prompts.iter().enumerate() {
        let n = n + i * longer;
        s.submit(request(
            target,
            i as u64,
            prompt,
            &SamplingParams::greedy(),
            n,
        ))
        .unwrap();
    }
    let out = run(s, HashMap::new());
    let mut counts = SpecCounts::default();
    for report in out.reports.values() {
        counts.drafted += report.speculative.drafted;
        counts.accepted += report.speculative.accepted;
        assert!(report.speculative.accepted <= report.speculative.drafted);
    }
    let tokens = (0..prompts.len() as u64)
        .map(|i| ids(&out.tokens[&i]))
        .collect();
    (tokens, counts)
}

fn reference(target: &Model, prompts: &[Vec<u32>], n: usize, longer: usize) -> Vec<Vec<u32>> {
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| ids(&alone(target, p, &SamplingParams::greedy(), n + i * longer)))
        .collect()
}

#[test]
fn greedy_prompt_lookup_gives_the_tokens_of_normal_decoding() {
    let target = model(7);
    let prompts = vec![repetitive()];
    let expected = reference(&target, &prompts, 40, 0);
    let mut s = speculating(&target, Drafter::PromptLookup, 4);
    let (got, counts) = greedy_run(&mut s, &target, &prompts, 40, 0);
    assert_eq!(got, expected);
    assert!(counts.accepted > 0, "no draft accepted: {counts:?}");
    assert!(
        s.host_times().steps < 40,
        "{} steps for 40 tokens with {counts:?}",
        s.host_times().steps
    );
}

#[test]
fn greedy_draft_models_give_the_tokens_of_normal_decoding() {
    let target = model(7);
    let other = model(8);
    let prompts = vec![eight_prompts()[3].clone()];
    let expected = reference(&target, &prompts, 24, 0);
    let mut s = speculating(&target, Drafter::Model(&other), 4);
    let (got, counts) = greedy_run(&mut s, &target, &prompts, 24, 0);
    assert_eq!(got, expected);
    assert!(counts.drafted > 0);
    // The model as its own draft: every draft token is accepted.
    let mut s = speculating(&target, Drafter::Model(&target), 4);
    let (got, counts) = greedy_run(&mut s, &target, &prompts, 24, 0);
    assert_eq!(got, expected);
    assert!(counts.drafted > 0);
    assert_eq!(counts.accepted, counts.drafted);
    // Five tokens a step after the first (the draft grows to its cap).
    assert!(s.host_times().steps <= 8, "{} steps", s.host_times().steps);
}

#[test]
fn greedy_batches_give_the_tokens_of_normal_decoding() {
    let target = model(7);
    let other = model(8);
    let mut prompts = eight_prompts()[..5].to_vec();
    prompts.push(repetitive());
    let expected = reference(&target, &prompts, 20, 0);
    // Every row speculating together, with drafts of different lengths.
    // (A draft model of other random weights never agrees with the model.)
    for (drafter, agrees) in [
        (Drafter::PromptLookup, true),
        (Drafter::Model(&other), false),
        (Drafter::Model(&target), true),
    ] {
        let mut s = speculating(&target, drafter, 8);
        let (got, counts) = greedy_run(&mut s, &target, &prompts, 20, 0);
        assert_eq!(got, expected);
        assert!(counts.drafted > 0);
        assert_eq!(counts.accepted > 0, agrees, "{counts:?}");
    }
    // Speculating only once at most two rows are left (they end one after
    // another): steps of both kinds.
    let expected = reference(&target, &prompts, 8, 6);
    let mut s = speculating(&target, Drafter::Model(&target), 2);
    let (got, counts) = greedy_run(&mut s, &target, &prompts, 8, 6);
    assert_eq!(got, expected);
    assert!(counts.accepted > 0);
}

/// The first `n` tokens of `runs` seeded requests (seeds from `first`) of
/// `prompt` under `params`.
fn sampled_runs(
    s: &mut Scheduler,
    target: &Model,
    prompt: &[u32],
    params: &SamplingParams,
    first: u64,
    runs: u64,
    n: usize,
) -> Vec<Vec<u32>> {
    for seed in first..first + runs {
        let params = SamplingParams {
            seed: Some(seed),
            ..params.clone()
        };
        s.submit(request(target, seed, prompt, &params, n)).unwrap();
    }
    let out = run(s, HashMap::new());
    (first..first + runs)
        .map(|seed| ids(&out.tokens[&seed]))
        .collect()
}

/// Sampling that puts most of the mass on the phrase's tokens (about one
/// tenth each), so a draft from the phrase is accepted about as often as
/// rejected, and a rule that accepts too often or resamples wrongly moves
/// the distribution of the first tokens far.
fn phrase_sampling() -> SamplingParams {
    SamplingParams {
        logit_bias: [11u32, 42, 7, 99, 3]
            .into_iter()
            .map(|t| (t, 4.0))
            .collect(),
        ..SamplingParams::default()
    }
}

/// The cell of a sampled sequence: its first two tokens, each one of the
/// five favoured ones or "other".
fn cell(tokens: &[u32]) -> usize {
    let class = |t: u32| {
        [11u32, 42, 7, 99, 3]
            .iter()
            .position(|&f| f == t)
            .unwrap_or(5)
    };
    class(tokens[0]) * 6 + class(tokens[1])
}

/// The two-sample chi-square statistic of equal-sized samples `a`, `b`
/// over cells, cells too sparse to test merged into one, and its degrees of
/// freedom.
fn chi_square(a: &[usize], b: &[usize]) -> (f64, usize) {
    let mut stat = 0.0;
    let mut cells = 0;
    let (mut rest_a, mut rest_b) = (0, 0);
    for (&x, &y) in a.iter().zip(b) {
        if x + y < 20 {
            rest_a += x;
            rest_b += y;
            continue;
        }
        let d = x as f64 - y as f64;
        stat += d * d / (x + y) as f64;
        cells += 1;
    }
    if rest_a + rest_b > 0 {
        let d = rest_a as f64 - rest_b as f64;
        stat += d * d / (rest_a + rest_b) as f64;
        cells += 1;
    }
    (stat, cells.max(2) - 1)
}

/// The chi-square quantile of `df` degrees of freedom at 1 - 1e-4
/// (Wilson-Hilferty, z = 3.719).
fn critical(df: usize) -> f64 {
    let df = df as f64;
    let h = 2.0 / (9.0 * df);
    df * (1.0 - h + 3.719 * h.sqrt()).powi(3)
}

#[test]
fn sampled_prompt_lookup_keeps_the_distribution_of_normal_decoding() {
    let target = model(7);
    let prompt = repetitive();
    let params = phrase_sampling();
    let runs = 1500;
    let config = BatchConfig {
        max_batch: 64,
        ..config()
    };
    let mut plain = Scheduler::new(&target, config);
    let base = sampled_runs(&mut plain, &target, &prompt, &params, 0, runs, 3);
    let mut s = Scheduler::new(&target, config)
        .with_speculation(Speculation {
            drafter: Drafter::PromptLookup,
            num_draft_tokens: 4,
            max_batch: 64,
        })
        .unwrap();
    // Other seeds: a test of the distribution, not of the draws.
    let spec = sampled_runs(&mut s, &target, &prompt, &params, runs, runs, 3);
    let (mut a, mut b) = (vec![0; 36], vec![0; 36]);
    base.iter().for_each(|t| a[cell(t)] += 1);
    spec.iter().for_each(|t| b[cell(t)] += 1);
    let (stat, df) = chi_square(&a, &b);
    assert!(
        stat < critical(df),
        "chi-square {stat:.1} over {df} degrees of freedom: {a:?} vs {b:?}"
    );
    // Drafts were made and some accepted, some rejected.
    let spec_again = sampled_runs(&mut s, &target, &prompt, &params, 0, 200, 3);
    // The same seeds give the same tokens with speculation as without:
    // each token is the draw normal decoding makes with that token's key.
    assert_eq!(spec_again, base[..200].to_vec());
}

#[test]
fn penalties_and_logprobs_apply_per_position_as_in_normal_decoding() {
    let target = model(7);
    let prompt = repetitive();
    let params = SamplingParams {
        repetition_penalty: 1.3,
        presence_penalty: 0.5,
        frequency_penalty: 0.3,
        logprobs: true,
        top_logprobs: 2,
        ..phrase_sampling()
    };
    let config = BatchConfig {
        max_batch: 16,
        ..config()
    };
    let mut plain = Scheduler::new(&target, config);
    for drafter in [Drafter::PromptLookup, Drafter::Model(&target)] {
        let mut s = Scheduler::new(&target, config)
            .with_speculation(Speculation {
                drafter,
                num_draft_tokens: 3,
                max_batch: 16,
            })
            .unwrap();
        for seed in 0..16u64 {
            let params = SamplingParams {
                seed: Some(seed),
                ..params.clone()
            };
            plain
                .submit(request(&target, seed, &prompt, &params, 12))
                .unwrap();
            s.submit(request(&target, seed, &prompt, &params, 12))
                .unwrap();
        }
        let (want, got) = (run(&mut plain, HashMap::new()), run(&mut s, HashMap::new()));
        let accepted: usize = got.reports.values().map(|r| r.speculative.accepted).sum();
        assert!(accepted > 0);
        for seed in 0..16u64 {
            let (want, got) = (&want.tokens[&seed], &got.tokens[&seed]);
            assert_eq!(ids(got), ids(want), "seed {seed}");
            for (g, w) in got.iter().zip(want) {
                let (g, w) = (g.logprobs.as_ref().unwrap(), w.logprobs.as_ref().unwrap());
                assert!((g.logprob - w.logprob).abs() < 1e-4, "{g:?} vs {w:?}");
                assert_eq!(g.top.len(), 2);
            }
        }
    }
}

#[test]
fn models_with_recurrent_layers_refuse_speculation() {
    let hybrid = common::mlx_lm::load("qwen3_next_f32_interval2");
    let target = model(7);
    let spec = |drafter| Speculation {
        drafter,
        num_draft_tokens: 4,
        max_batch: 4,
    };
    let refused = Scheduler::new(&hybrid, config())
        .with_speculation(spec(Drafter::PromptLookup))
        .err()
        .unwrap()
        .to_string();
    assert!(refused.contains("recurrent"), "{refused}");
    // Nor can a hybrid draft for an attention model.
    assert!(
        Scheduler::new(&target, config())
            .with_speculation(spec(Drafter::Model(&hybrid)))
            .is_err()
    );
    // A draft model of another vocabulary is refused too.
    let other = Preset::find("tiny-f32")
        .unwrap()
        .with_vocab(300)
        .build(1)
        .unwrap();
    let refused = Scheduler::new(&target, config())
        .with_speculation(spec(Drafter::Model(&other)))
        .err()
        .unwrap()
        .to_string();
    assert!(refused.contains("vocabulary"), "{refused}");
}

#[test]
fn the_prompt_cache_keeps_what_speculative_rows_computed() {
    let target = model(7);
    let mut prompts = eight_prompts()[2..6].to_vec();
    prompts.push(repetitive());
    let expected = reference(&target, &prompts, 16, 0);
    let mut s = Scheduler::new(&target, BatchConfig::default())
        .with_speculation(Speculation {
            drafter: Drafter::Model(&target),
            num_draft_tokens: 4,
            max_batch: 8,
        })
        .unwrap();
    let (got, _) = greedy_run(&mut s, &target, &prompts, 16, 0);
    assert_eq!(got, expected);
    // The same prompts continued by their answers: served from the entries
    // the finished rows left (their shifted, trimmed columns).
    let continued: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&got)
        .map(|(p, a)| p.iter().chain(a).copied().collect())
        .collect();
    let expected = reference(&target, &continued, 8, 0);
    for (i, prompt) in continued.iter().enumerate() {
        let greedy = SamplingParams::greedy();
        s.submit(request(&target, i as u64, prompt, &greedy, 8))
            .unwrap();
    }
    let out = run(&mut s, HashMap::new());
    for (i, want) in expected.iter().enumerate() {
        let i = i as u64;
        assert_eq!(&ids(&out.tokens[&i]), want);
        // All but the last answer token were fed back and cached.
        let cached = out.reports[&i].cached_tokens;
        assert!(cached >= prompts[i as usize].len(), "{cached} cached");
    }
}

#[test]
fn other_families_verify_drafts_as_they_decode() {
    // Gemma 3's sliding window (8 positions in the tiny preset) and
    // gpt-oss's attention sinks see several new tokens per row at once.
    for name in ["tiny-gemma3-f32", "tiny-moe-f32", "tiny-gpt-oss-mxfp4"] {
        let target = Preset::find(name).unwrap().build(3).unwrap();
        let mut prompts = eight_prompts()[1..5].to_vec();
        prompts.push(repetitive());
        let expected = reference(&target, &prompts, 14, 0);
        for drafter in [Drafter::PromptLookup, Drafter::Model(&target)] {
            let mut s = speculating(&target, drafter, 8);
            let (got, counts) = greedy_run(&mut s, &target, &prompts, 14, 0);
            assert_eq!(got, expected, "{name}");
            assert!(counts.accepted > 0, "{name}: {counts:?}");
        }
    }
}
