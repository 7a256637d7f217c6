//! A sequence resumed at token index `k` (its first `k` generated tokens
//! appended to the prompt, `SamplingParams::generated = k`) produces the
//! tokens the uninterrupted sequence produces from `k` on: the sampler's
//! random key is a function of the seed and the token index, and the
//! presence and frequency penalties count the carried tokens as generated.
//! This is what lets the server replay a request on a new worker.
#![allow(clippy::unwrap_used)]

use engine::batch::{BatchConfig, Scheduler, SeqEvent, SeqRequest};
use engine::generate::{GenerateOptions, Generator};
use engine::model::synthetic::Preset;
use engine::{EngineError, Model, Sampler, SamplingParams};

fn model() -> Model {
    Preset::find("tiny-f32").unwrap().build(7).unwrap()
}

fn prompt() -> Vec<u32> {
    (0..13u32).map(|j| (j * 37 + 11) % 256).collect()
}

/// `n` tokens of the one-sequence loop.
fn alone(model: &Model, prompt: &[u32], params: &SamplingParams, n: usize) -> Vec<u32> {
    let vocab = model.config.vocab_size as usize;
    let sampler = Sampler::new(params.clone(), vocab, prompt).unwrap();
    let options = GenerateOptions {
        max_tokens: n,
        ..GenerateOptions::default()
    };
    Generator::new(model, prompt, sampler, options)
        .unwrap()
        .map(|t| t.unwrap().token)
        .collect()
}

/// `n` tokens of the batch scheduler, next to another sequence.
fn batched(model: &Model, prompt: &[u32], params: &SamplingParams, n: usize) -> Vec<u32> {
    let vocab = model.config.vocab_size as usize;
    let mut s = Scheduler::new(model, BatchConfig::default());
    let other: Vec<u32> = (0..9).collect();
    for (id, p, params) in [
        (1, prompt, params.clone()),
        (2, &other[..], SamplingParams::greedy()),
    ] {
        s.submit(SeqRequest {
            id,
            prompt: p.to_vec(),
            sampler: Sampler::new(params, vocab, p).unwrap(),
            max_tokens: n,
            stop_ids: Vec::new(),
            constraint: None,
        })
        .unwrap();
    }
    let mut out = Vec::new();
    while s.is_busy() {
        for event in s.step().unwrap() {
            if let SeqEvent::Token { id: 1, token } = event {
                out.push(token.token);
            }
        }
    }
    out
}

/// Sampling with every stateful part on: a seed, the repetition penalty
/// (its window spans prompt and generated tokens) and the presence and
/// frequency penalties (generated tokens only).
fn sampled(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 1.3,
        top_p: 0.98,
        repetition_penalty: 1.2,
        repetition_context_size: 8,
        presence_penalty: 0.8,
        frequency_penalty: 0.6,
        seed: Some(seed),
        ..SamplingParams::default()
    }
}

fn resumed(params: &SamplingParams, k: usize) -> SamplingParams {
    SamplingParams {
        generated: k,
        ..params.clone()
    }
}

#[test]
fn a_seeded_sequence_resumed_at_k_continues_as_it_would_have() {
    let model = model();
    let prompt = prompt();
    let n = 24;
    for seed in [3, 4, 5] {
        let params = sampled(seed);
        let whole = alone(&model, &prompt, &params, n);
        for k in [1, 5, 17] {
            let mut carried = prompt.clone();
            carried.extend_from_slice(&whole[..k]);
            let rest = alone(&model, &carried, &resumed(&params, k), n - k);
            assert_eq!(rest, whole[k..], "seed {seed}, resumed at {k}");
            let rest = batched(&model, &carried, &resumed(&params, k), n - k);
            assert_eq!(rest, whole[k..], "seed {seed}, resumed at {k} in a batch");
        }
    }
}

#[test]
fn a_greedy_sequence_resumed_at_k_continues_as_it_would_have() {
    let model = model();
    let prompt = prompt();
    let params = SamplingParams {
        frequency_penalty: 1.0,
        ..SamplingParams::greedy()
    };
    let whole = alone(&model, &prompt, &params, 20);
    for k in [1, 10] {
        let mut carried = prompt.clone();
        carried.extend_from_slice(&whole[..k]);
        let rest = alone(&model, &carried, &resumed(&params, k), 20 - k);
        assert_eq!(rest, whole[k..], "resumed at {k}");
    }
}

#[test]
fn without_the_position_a_resumed_sequence_draws_differently() {
    // The check above is not vacuous: the same continuation submitted as a
    // new request (token index 0, no counts) drifts from the original.
    let model = model();
    let prompt = prompt();
    let n = 24;
    let k = 5;
    let drifted = [3, 4, 5].iter().any(|&seed| {
        let params = sampled(seed);
        let whole = alone(&model, &prompt, &params, n);
        let mut carried = prompt.clone();
        carried.extend_from_slice(&whole[..k]);
        alone(&model, &carried, &params, n - k) != whole[k..]
    });
    assert!(drifted);
}

#[test]
fn a_position_the_prompt_cannot_hold_is_refused() {
    let params = SamplingParams {
        generated: 3,
        ..sampled(1)
    };
    match Sampler::new(params, 64, &[1, 2, 3]) {
        Err(EngineError::InvalidRequest(msg)) => assert!(msg.contains("generated"), "{msg}"),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    let params = SamplingParams {
        generated: 1,
        presence_penalty: 0.5,
        ..sampled(1)
    };
    assert!(
        Sampler::new(params, 64, &[1, 99]).is_err(),
        "token outside the vocabulary"
    );
}

#[test]
fn a_sequence_replaying_its_earlier_tokens_continues_exactly() {
    // The other way to resume: the original prompt, and the first k steps
    // pick the earlier tokens (decoded again, step by step).
    let model = model();
    let vocab = model.config.vocab_size as usize;
    let prompt = prompt();
    let n = 24;
    for seed in [3, 4] {
        let params = sampled(seed);
        let whole = alone(&model, &prompt, &params, n);
        for k in [1, 9] {
            let sampler = Sampler::new(params.clone(), vocab, &prompt)
                .unwrap()
                .replaying(&whole[..k])
                .unwrap();
            assert_eq!(sampler.replay_left(), k);
            let options = GenerateOptions {
                max_tokens: n,
                ..GenerateOptions::default()
            };
            let got: Vec<u32> = Generator::new(&model, &prompt, sampler, options)
                .unwrap()
                .map(|t| t.unwrap().token)
                .collect();
            assert_eq!(got, whole, "seed {seed}, replaying {k}");
        }
    }
    let resumed = Sampler::new(resumed(&sampled(1), 1), vocab, &[1, 2]).unwrap();
    assert!(resumed.replaying(&[1]).is_err(), "one way at a time");
}
