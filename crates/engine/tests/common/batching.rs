//! Running the batch scheduler in tests: requests, the one-sequence
//! reference, and a loop that steps a scheduler until every sequence ended.

use std::collections::HashMap;

use engine::batch::{BatchConfig, Scheduler, SeqEvent, SeqReport, SeqRequest};
use engine::generate::{GenerateOptions, Generator};
use engine::{Model, SampledToken, Sampler, SamplingParams};

/// Eight prompts of 3 to 52 tokens, different in length and content.
pub fn eight_prompts() -> Vec<Vec<u32>> {
    (0..8u32)
        .map(|i| {
            let len = 3 + 7 * i;
            (0..len).map(|j| (j * 31 + i * 17 + 5) % 256).collect()
        })
        .collect()
}

/// The eight prompts and one of 150 tokens (several prefill chunks).
pub fn nine_prompts() -> Vec<Vec<u32>> {
    let mut out = eight_prompts();
    out.push((0..150u32).map(|j| (j * 7 + 3) % 256).collect());
    out
}

/// A sampler for `prompt` on `model`.
pub fn sampler(model: &Model, prompt: &[u32], params: &SamplingParams) -> Sampler {
    Sampler::new(params.clone(), model.config.vocab_size as usize, prompt).unwrap()
}

/// A free request of `n` tokens.
pub fn request(
    model: &Model,
    id: u64,
    prompt: &[u32],
    params: &SamplingParams,
    n: usize,
) -> SeqRequest {
    SeqRequest {
        id,
        prompt: prompt.to_vec(),
        sampler: sampler(model, prompt, params),
        max_tokens: n,
        stop_ids: Vec::new(),
        constraint: None,
    }
}

/// The reference: the one-sequence loop.
pub fn alone(
    model: &Model,
    prompt: &[u32],
    params: &SamplingParams,
    n: usize,
) -> Vec<SampledToken> {
    let options = GenerateOptions {
        max_tokens: n,
        ..GenerateOptions::default()
    };
    Generator::new(model, prompt, sampler(model, prompt, params), options)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// What a run gave each sequence.
pub struct Run {
    pub tokens: HashMap<u64, Vec<SampledToken>>,
    pub reports: HashMap<u64, SeqReport>,
}

/// Steps until every sequence ended, submitting `later[k]` after step `k`.
pub fn run(scheduler: &mut Scheduler, later: HashMap<usize, Vec<SeqRequest>>) -> Run {
    run_cancelling(scheduler, later, &HashMap::new())
}

/// As [`run`], also cancelling `cancel_at[k]` after step `k`.
pub fn run_cancelling(
    scheduler: &mut Scheduler,
    mut later: HashMap<usize, Vec<SeqRequest>>,
    cancel_at: &HashMap<usize, u64>,
) -> Run {
    let mut out = Run {
        tokens: HashMap::new(),
        reports: HashMap::new(),
    };
    let mut step = 0;
    while scheduler.is_busy() || !later.is_empty() {
        for event in scheduler.step().unwrap() {
            match event {
                SeqEvent::Token { id, token } => out.tokens.entry(id).or_default().push(token),
                SeqEvent::Done(report) => {
                    out.reports.insert(report.id, report);
                }
            }
        }
        for req in later.remove(&step).unwrap_or_default() {
            scheduler.submit(req).unwrap();
        }
        if let Some(&id) = cancel_at.get(&step) {
            assert!(scheduler.cancel(id));
        }
        step += 1;
        assert!(step < 10_000, "the scheduler never finished");
    }
    out
}

/// The token ids of sampled tokens.
pub fn ids(tokens: &[SampledToken]) -> Vec<u32> {
    tokens.iter().map(|t| t.token).collect()
}

/// That `model`'s greedy tokens for [`nine_prompts`] are the same alone and
/// in a batch: prefilled together (one left-padded pass for the short ones)
/// with half of them joining the running batch later, once with whole
/// prompts and once in prefill pieces of 32 tokens, so the long prompt is
/// cut while others decode. `name` labels failures.
pub fn assert_greedy_batched_equals_alone(name: &str, model: &Model) {
    let params = SamplingParams::greedy();
    let n = 10;
    let want: Vec<Vec<u32>> = nine_prompts()
        .iter()
        .map(|p| ids(&alone(model, p, &params, n)))
        .collect();
    for chunk in [512, 32] {
        let config = BatchConfig {
            prefill_chunk: chunk,
            ..BatchConfig::default()
        };
        let mut s = Scheduler::new(model, config);
        let mut later: HashMap<usize, Vec<SeqRequest>> = HashMap::new();
        for (i, p) in nine_prompts().iter().enumerate() {
            let req = request(model, i as u64, p, &params, n);
            if i % 2 == 0 {
                s.submit(req).unwrap();
            } else {
                later.entry(2 * i).or_default().push(req);
            }
        }
        let got = run(&mut s, later);
        for (i, want) in want.iter().enumerate() {
            assert_eq!(
                &ids(&got.tokens[&(i as u64)]),
                want,
                "{name}: prompt {i}, chunk {chunk}"
            );
        }
    }
}

/// That a prompt sharing its first 60 tokens with one `model` ran before
/// (90 tokens) takes them from the prompt cache and gets the tokens and
/// top logprobs (within 1e-4) of a cold prefill. `name` labels failures.
pub fn assert_prompt_cache_hit_equals_cold_prefill(name: &str, model: &Model) {
    let params = SamplingParams {
        logprobs: true,
        top_logprobs: 20,
        ..SamplingParams::greedy()
    };
    let history: Vec<u32> = (0..90u32).map(|i| (i * 13 + 7) % 256).collect();
    let n = 6;
    let mut s = Scheduler::new(model, BatchConfig::default());
    s.submit(request(model, 1, &history, &params, n)).unwrap();
    run(&mut s, HashMap::new());
    let mut branch = history[..60].to_vec();
    branch.extend([1, 2, 3, 4]);
    s.submit(request(model, 2, &branch, &params, n)).unwrap();
    let warm = run(&mut s, HashMap::new());
    assert!(warm.reports[&2].cached_tokens >= 59, "{name}");
    let cold = alone(model, &branch, &params, n);
    assert_eq!(ids(&warm.tokens[&2]), ids(&cold), "{name}");
    for (w, c) in warm.tokens[&2].iter().zip(&cold) {
        let (w, c) = (w.logprobs.as_ref().unwrap(), c.logprobs.as_ref().unwrap());
        for ((wi, wl), (ci, cl)) in w.top.iter().zip(&c.top) {
            assert_eq!(wi, ci, "{name}");
            assert!((wl - cl).abs() < 1e-4, "{name}: {wl} vs {cl}");
        }
    }
}
