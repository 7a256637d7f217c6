//! The sampler against mlx-lm's `sample_utils.py` (seeded token sequences
//! and filter outputs produced by `data/sampler_reference.py`), hand-computed
//! penalties, filter invariants over random inputs, reproducibility and
//! logprobs.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::LazyLock;

use engine::EngineError;
use engine::sampler::{
    Sampled, SampledToken, Sampler, SamplingParams, apply_min_p, apply_top_k, apply_top_p,
};
use mlx::{Array, Dtype};
use proptest::prelude::*;
use serde_json::Value;

// ---------------------------------------------------------------- helpers

/// `$MLXD_PYTHON`, else the repository's `.venv` interpreter.
fn python() -> PathBuf {
    let python = std::env::var_os("MLXD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
        });
    assert!(
        python.exists(),
        "no Python interpreter at {}: run scripts/setup.sh test (or set MLXD_PYTHON)",
        python.display()
    );
    python
}

/// What `data/sampler_reference.py` prints, run once per test binary.
static REFERENCE: LazyLock<Value> = LazyLock::new(|| {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/sampler_reference.py");
    let python = python();
    let out = Command::new(&python)
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "{} failed (is mlx-lm installed? run scripts/setup.sh test):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the reference script prints JSON")
});

fn row(values: &[f32]) -> Array {
    Array::from_slice(values, &[1, values.len() as i32]).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn ints(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn assert_close(actual: &[f32], expected: &[f32], tol: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let same_inf = a.is_infinite() && e.is_infinite() && a.signum() == e.signum();
        assert!(
            same_inf || (a - e).abs() <= tol,
            "{what}[{i}]: {a} vs expected {e}"
        );
    }
}

/// Decodes `steps` tokens the way the engine loop does: step N+1's graph
/// is built from step N's lazy token and `async_eval`ed before step N's
/// token is read.
fn decode_pipelined(sampler: &mut Sampler, rows: &[Array], steps: usize) -> Vec<SampledToken> {
    let mut out = Vec::with_capacity(steps);
    let mut pending: Option<Sampled> = None;
    for step in 0..steps {
        let sampled = sampler.sample(&rows[step % rows.len()]).unwrap();
        sampler.accept(&sampled.token).unwrap();
        mlx::async_eval(&sampled.arrays()).unwrap();
        if let Some(previous) = pending.replace(sampled) {
            out.push(previous.read().unwrap());
        }
    }
    out.extend(pending.map(|last| last.read().unwrap()));
    out
}

/// Decodes with every token read on the host and fed back as a fresh
/// array before the next step.
fn decode_eager(sampler: &mut Sampler, rows: &[Array], steps: usize) -> Vec<SampledToken> {
    (0..steps)
        .map(|step| {
            let sampled = sampler.sample(&rows[step % rows.len()]).unwrap();
            let read = sampled.read().unwrap();
            sampler
                .accept(&Array::from_slice(&[read.token as i32], &[1]).unwrap())
                .unwrap();
            read
        })
        .collect()
}

fn tokens(decoded: &[SampledToken]) -> Vec<u32> {
    decoded.iter().map(|t| t.token).collect()
}

fn random_rows(seed: u64, n: usize, vocab: usize) -> Vec<Array> {
    let all = mlx::random::normal(
        &[n as i32, vocab as i32],
        Dtype::F32,
        Some(&mlx::random::key(seed).unwrap()),
    )
    .unwrap();
    (0..n as i32)
        .map(|i| all.slice_axis(0, i, i + 1).unwrap())
        .collect()
}

fn params_from(json: &Value) -> SamplingParams {
    let f = |k: &str| json[k].as_f64().unwrap() as f32;
    SamplingParams {
        temperature: f("temperature"),
        top_p: f("top_p"),
        top_k: json["top_k"].as_u64().unwrap() as u32,
        min_p: f("min_p"),
        repetition_penalty: f("repetition_penalty"),
        repetition_context_size: json["repetition_context_size"].as_u64().unwrap() as usize,
        presence_penalty: f("presence_penalty"),
        frequency_penalty: f("frequency_penalty"),
        logit_bias: json["logit_bias"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| {
                (
                    pair[0].as_u64().unwrap() as u32,
                    pair[1].as_f64().unwrap() as f32,
                )
            })
            .collect(),
        seed: json["seed"].as_u64(),
        logprobs: false,
        top_logprobs: 0,
        generated: 0,
    }
}

// ------------------------------------------------------ mlx-lm reference

#[test]
fn seeded_sequences_match_mlx_lm() {
    let cases = REFERENCE["sequences"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let vocab = case["vocab"].as_u64().unwrap() as usize;
        let rows: Vec<Array> = case["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| row(&floats(r)))
            .collect();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let params = SamplingParams {
            logprobs: true,
            top_logprobs: case["top_logprobs"].as_u64().unwrap() as u32,
            ..params_from(&case["params"])
        };
        let mut sampler = Sampler::new(params, vocab, &ints(&case["prompt"])).unwrap();
        let decoded = decode_pipelined(&mut sampler, &rows, steps);

        assert_eq!(tokens(&decoded), ints(&case["tokens"]), "{name}: tokens");
        let logprobs: Vec<f32> = decoded
            .iter()
            .map(|t| t.logprobs.as_ref().unwrap().logprob)
            .collect();
        assert_close(&logprobs, &floats(&case["token_logprobs"]), 1e-5, name);
        for (step, (got, want)) in decoded
            .iter()
            .zip(case["top"].as_array().unwrap())
            .enumerate()
        {
            let got = &got.logprobs.as_ref().unwrap().top;
            let want = want.as_array().unwrap();
            let ids: Vec<u32> = got.iter().map(|t| t.0).collect();
            let want_ids: Vec<u32> = want.iter().map(|t| t[0].as_u64().unwrap() as u32).collect();
            assert_eq!(ids, want_ids, "{name}: top ids at step {step}");
            let values: Vec<f32> = got.iter().map(|t| t.1).collect();
            let want_values: Vec<f32> =
                want.iter().map(|t| t[1].as_f64().unwrap() as f32).collect();
            assert_close(
                &values,
                &want_values,
                1e-5,
                &format!("{name}: top at step {step}"),
            );
        }
    }
}

#[test]
fn filters_match_mlx_lm() {
    let reference = &REFERENCE["filters"];
    let rows: Vec<Vec<f32>> = reference["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let width = rows[0].len();
    let flat: Vec<f32> = rows.concat();
    let logprobs = Array::from_slice(&flat, &[rows.len() as i32, width as i32]).unwrap();
    let expected = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter())
            .map(|x| x.as_f64().map_or(f32::NEG_INFINITY, |x| x as f32))
            .collect()
    };
    let mut checked = 0;
    for case in reference["top_p"].as_array().unwrap() {
        let p = case[0].as_f64().unwrap() as f32;
        let got = apply_top_p(&logprobs, p).unwrap().to_vec::<f32>().unwrap();
        assert_close(&got, &expected(&case[1]), 0.0, &format!("top_p {p}"));
        checked += 1;
    }
    for case in reference["min_p"].as_array().unwrap() {
        let p = case[0].as_f64().unwrap() as f32;
        let got = apply_min_p(&logprobs, p).unwrap().to_vec::<f32>().unwrap();
        assert_close(&got, &expected(&case[1]), 0.0, &format!("min_p {p}"));
        checked += 1;
    }
    for case in reference["top_k"].as_array().unwrap() {
        let k = case[0].as_u64().unwrap() as usize;
        let got = apply_top_k(&logprobs, k).unwrap().to_vec::<f32>().unwrap();
        assert_close(&got, &expected(&case[1]), 0.0, &format!("top_k {k}"));
        checked += 1;
    }
    assert_eq!(checked, 15);
}

// ------------------------------------------------ hand-computed processors

fn processed(sampler: &Sampler, logits: &[f32]) -> Vec<f32> {
    sampler
        .process_logits(&row(logits))
        .unwrap()
        .to_vec::<f32>()
        .unwrap()
}

fn token(id: u32) -> Array {
    Array::from_slice(&[id], &[1]).unwrap()
}

#[test]
fn logit_bias_adds_to_the_named_tokens_and_repeated_ids_add_up() {
    let params = SamplingParams {
        logit_bias: vec![(0, 5.0), (3, -100.0), (0, 1.0)],
        ..SamplingParams::greedy()
    };
    let sampler = Sampler::new(params, 4, &[1]).unwrap();
    assert_eq!(
        processed(&sampler, &[0.0, 1.0, 2.0, 3.0]),
        [6.0, 1.0, 2.0, -97.0]
    );
}

#[test]
fn repetition_penalty_scales_a_sliding_window_by_sign() {
    let params = SamplingParams {
        repetition_penalty: 2.0,
        repetition_context_size: 3,
        ..SamplingParams::greedy()
    };
    let logits = [1.0, -2.0, 0.5, 3.0, -0.5, 2.0];
    // The window starts as the prompt's last three tokens: 0, 1, 1.
    let mut sampler = Sampler::new(params, 6, &[5, 0, 1, 1]).unwrap();
    assert_eq!(
        processed(&sampler, &logits),
        [0.5, -4.0, 0.5, 3.0, -0.5, 2.0]
    );
    sampler.accept(&token(3)).unwrap(); // window 1, 1, 3
    assert_eq!(
        processed(&sampler, &logits),
        [1.0, -4.0, 0.5, 1.5, -0.5, 2.0]
    );
    // Any integer dtype and a [1, 1] shape are accepted.
    sampler
        .accept(&Array::from_slice(&[4i32], &[1, 1]).unwrap())
        .unwrap(); // window 1, 3, 4
    assert_eq!(
        processed(&sampler, &logits),
        [1.0, -4.0, 0.5, 1.5, -1.0, 2.0]
    );
    sampler.accept(&token(2)).unwrap();
    sampler.accept(&token(2)).unwrap(); // window 4, 2, 2
    assert_eq!(
        processed(&sampler, &logits),
        [1.0, -2.0, 0.25, 3.0, -1.0, 2.0]
    );
}

#[test]
fn presence_and_frequency_penalties_count_generated_tokens_only() {
    let params = SamplingParams {
        presence_penalty: 0.5,
        frequency_penalty: 0.25,
        ..SamplingParams::greedy()
    };
    let logits = [0.0, 1.0, 2.0, -1.0, 0.5];
    // Prompt tokens do not count.
    let mut sampler = Sampler::new(params, 5, &[0, 0, 0]).unwrap();
    assert_eq!(processed(&sampler, &logits), logits);
    for id in [1, 2, 1] {
        sampler.accept(&token(id)).unwrap();
    }
    // counts: token 1 twice, token 2 once.
    assert_eq!(processed(&sampler, &logits), [0.0, 0.0, 1.25, -1.0, 0.5]);
    for _ in 0..30 {
        sampler.accept(&token(4)).unwrap();
    }
    // No window: all 30 occurrences count. 0.5 - (0.5 + 0.25 * 30) = -7.5
    assert_eq!(processed(&sampler, &logits), [0.0, 0.0, 1.25, -1.0, -7.5]);

    let params = SamplingParams {
        presence_penalty: -0.5,
        ..SamplingParams::greedy()
    };
    let mut sampler = Sampler::new(params, 5, &[]).unwrap();
    sampler.accept(&token(3)).unwrap();
    sampler.accept(&token(3)).unwrap();
    assert_eq!(processed(&sampler, &logits), [0.0, 1.0, 2.0, -0.5, 0.5]);
}

#[test]
fn processors_apply_bias_then_repetition_then_occurrence() {
    let params = SamplingParams {
        logit_bias: vec![(0, -3.0)],
        repetition_penalty: 2.0,
        presence_penalty: 1.0,
        ..SamplingParams::greedy()
    };
    let mut sampler = Sampler::new(params, 3, &[2]).unwrap();
    // bias: 1 - 3 = -2; token 2 is in the window: 2 / 2 = 1.
    assert_eq!(processed(&sampler, &[1.0, 0.5, 2.0]), [-2.0, 0.5, 1.0]);
    sampler.accept(&token(0)).unwrap();
    // token 0: bias -2, repetition -4, presence -5.
    assert_eq!(processed(&sampler, &[1.0, 0.5, 2.0]), [-5.0, 0.5, 1.0]);
}

// ----------------------------------------------------- filter invariants

/// Log-softmax on the host, in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    logits
        .iter()
        .map(|&x| f64::from(x) - max - sum.ln())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn filters_never_emit_an_excluded_token(
        logits in prop::collection::vec(-6.0f32..6.0, 2..40),
        top_p in 0.05f32..=1.0,
        min_p in prop::sample::select(vec![0.0f32, 0.01, 0.1, 0.3, 0.6, 1.0]),
        top_k in 0u32..45,
        temperature in 0.05f32..3.0,
        seed in any::<u64>(),
    ) {
        let vocab = logits.len();
        let params = SamplingParams { temperature, top_p, min_p, top_k, seed: Some(seed), ..Default::default() };
        let mut sampler = Sampler::new(params, vocab, &[]).unwrap();
        let t = sampler.sample(&row(&logits)).unwrap().token_id().unwrap() as usize;
        prop_assert!(t < vocab);
        let lp = log_softmax(&logits);
        let probs: Vec<f64> = lp.iter().map(|x| x.exp()).collect();
        let more_likely: Vec<usize> = (0..vocab).filter(|&i| lp[i] > lp[t]).collect();
        // top_p: the mass strictly above the token is below top_p.
        let mass_above: f64 = more_likely.iter().map(|&i| probs[i]).sum();
        prop_assert!(mass_above < f64::from(top_p) + 1e-5, "top_p {top_p}: mass above {mass_above}");
        // min_p: the token is at least min_p times the most likely one.
        let best = lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if min_p > 0.0 {
            prop_assert!(lp[t] >= best + f64::from(min_p).ln() - 1e-5, "min_p {min_p}");
        }
        // top_k: fewer than k tokens are strictly more likely.
        if top_k > 0 {
            prop_assert!(more_likely.len() < top_k as usize, "top_k {top_k}");
        }
    }
}

#[test]
fn tight_filters_leave_only_the_most_likely_token() {
    let logits = [0.1, 2.0, -1.0, 1.9, 0.0];
    for params in [
        SamplingParams {
            top_k: 1,
            ..Default::default()
        },
        SamplingParams {
            min_p: 1.0,
            ..Default::default()
        },
        SamplingParams {
            top_p: 0.01,
            ..Default::default()
        },
    ] {
        for seed in 0..20 {
            let params = SamplingParams {
                seed: Some(seed),
                temperature: 2.0,
                ..params.clone()
            };
            let mut sampler = Sampler::new(params.clone(), 5, &[]).unwrap();
            let t = sampler.sample(&row(&logits)).unwrap().token_id().unwrap();
            assert_eq!(t, 1, "{params:?}");
        }
    }
}

// ------------------------------------------------------- reproducibility

fn sampling_params(seed: Option<u64>) -> SamplingParams {
    SamplingParams {
        temperature: 1.2,
        top_p: 0.95,
        top_k: 40,
        repetition_penalty: 1.1,
        presence_penalty: 0.3,
        frequency_penalty: 0.2,
        seed,
        ..Default::default()
    }
}

#[test]
fn same_seed_gives_the_same_sequence_and_other_seeds_differ() {
    let rows = random_rows(3, 5, 64);
    let run = |seed| {
        let mut sampler = Sampler::new(sampling_params(Some(seed)), 64, &[1, 2, 3]).unwrap();
        tokens(&decode_pipelined(&mut sampler, &rows, 96))
    };
    let first = run(11);
    assert_eq!(first, run(11));
    assert_ne!(first, run(12));
    assert_ne!(first, run(u64::MAX));
    // The draws depend on the step, not only on the logits: identical rows
    // do not repeat one token.
    let same_row = vec![rows[0].clone()];
    let mut sampler = Sampler::new(
        SamplingParams {
            seed: Some(5),
            ..Default::default()
        },
        64,
        &[1],
    )
    .unwrap();
    let repeated = tokens(&decode_pipelined(&mut sampler, &same_row, 32));
    assert!(repeated.iter().any(|&t| t != repeated[0]), "{repeated:?}");
}

#[test]
fn pipelined_and_eager_decoding_agree() {
    let rows = random_rows(4, 3, 50);
    let mut pipelined = Sampler::new(sampling_params(Some(99)), 50, &[7, 7]).unwrap();
    let mut eager = Sampler::new(sampling_params(Some(99)), 50, &[7, 7]).unwrap();
    assert_eq!(
        tokens(&decode_pipelined(&mut pipelined, &rows, 64)),
        tokens(&decode_eager(&mut eager, &rows, 64))
    );
}

#[test]
fn without_a_seed_each_request_draws_its_own() {
    let a = Sampler::new(sampling_params(None), 8, &[]).unwrap();
    let b = Sampler::new(sampling_params(None), 8, &[]).unwrap();
    assert_ne!(a.seed(), b.seed());
    let c = Sampler::new(sampling_params(Some(17)), 8, &[]).unwrap();
    assert_eq!(c.seed(), 17);
}

#[test]
fn greedy_ignores_the_seed_and_picks_the_argmax() {
    let rows = random_rows(5, 4, 32);
    let argmaxes: Vec<u32> = rows
        .iter()
        .map(|r| {
            let v = r.to_vec::<f32>().unwrap();
            (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap() as u32
        })
        .collect();
    for seed in [None, Some(0), Some(1), Some(u64::MAX)] {
        let params = SamplingParams {
            seed,
            ..SamplingParams::greedy()
        };
        let mut sampler = Sampler::new(params, 32, &[]).unwrap();
        let got = tokens(&decode_pipelined(&mut sampler, &rows, 12));
        let want: Vec<u32> = (0..12).map(|i| argmaxes[i % 4]).collect();
        assert_eq!(got, want, "seed {seed:?}");
    }
}

// --------------------------------------------------------------- logprobs

#[test]
fn logprobs_are_the_log_softmax_of_the_processed_logits() {
    let logits = [0.3f32, -1.2, 2.2, 0.0, 1.1, -0.4, 0.9, 2.0];
    let bias = [(4u32, 1.5f32), (2, -0.7)];
    let mut biased = logits;
    for (id, b) in bias {
        biased[id as usize] += b;
    }
    let expected = log_softmax(&biased);
    let mut by_value: Vec<u32> = (0..8).collect();
    by_value.sort_by(|&a, &b| expected[b as usize].total_cmp(&expected[a as usize]));

    for (seed, top_logprobs) in [(1u64, 3u32), (2, 0), (3, 20)] {
        let params = SamplingParams {
            temperature: 0.9,
            logit_bias: bias.to_vec(),
            seed: Some(seed),
            logprobs: true,
            top_logprobs,
            ..Default::default()
        };
        let mut sampler = Sampler::new(params, 8, &[]).unwrap();
        let sampled = sampler.sample(&row(&logits)).unwrap();
        mlx::eval(&sampled.arrays()).unwrap();
        let read = sampled.read().unwrap();
        let lp = read.logprobs.unwrap();
        let t = read.token as usize;
        assert!(
            (f64::from(lp.logprob) - expected[t]).abs() < 1e-5,
            "{} vs {}",
            lp.logprob,
            expected[t]
        );
        // The full row is there too, on the device.
        let full = sampled.logprobs.to_vec::<f32>().unwrap();
        assert_eq!(full[t], lp.logprob);

        // At most top_logprobs (capped at the vocabulary), most likely first.
        let k = (top_logprobs as usize).min(8);
        assert_eq!(lp.top.len(), k);
        let ids: Vec<u32> = lp.top.iter().map(|e| e.0).collect();
        assert_eq!(ids, by_value[..k]);
        for (id, value) in &lp.top {
            assert!((f64::from(*value) - expected[*id as usize]).abs() < 1e-5);
        }
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
    }
}

#[test]
fn logprobs_are_left_out_unless_asked_for() {
    let mut sampler = Sampler::new(
        SamplingParams {
            seed: Some(1),
            ..Default::default()
        },
        4,
        &[],
    )
    .unwrap();
    let sampled = sampler.sample(&row(&[0.0, 1.0, 2.0, 3.0])).unwrap();
    assert_eq!(sampled.arrays().len(), 1);
    assert!(sampled.token_logprob.is_none() && sampled.top.is_none());
    let read = sampled.read().unwrap();
    assert!(read.logprobs.is_none());
    assert_eq!(read.token, sampled.token_id().unwrap());
    assert_eq!(sampled.token.dtype(), Dtype::U32);
    assert_eq!(sampled.token.shape(), [1]);
}

#[test]
fn bf16_logits_are_sampled_in_their_dtype() {
    let logits = row(&[0.5, 3.0, -1.0, 0.0]).astype(Dtype::Bf16).unwrap();
    let params = SamplingParams {
        top_p: 0.9,
        top_k: 2,
        repetition_penalty: 1.3,
        frequency_penalty: 0.5,
        logit_bias: vec![(0, 0.25)],
        seed: Some(3),
        logprobs: true,
        top_logprobs: 2,
        ..Default::default()
    };
    let mut sampler = Sampler::new(params, 4, &[1]).unwrap();
    let sampled = sampler.sample(&logits).unwrap();
    sampler.accept(&sampled.token).unwrap();
    assert_eq!(sampled.logprobs.dtype(), Dtype::Bf16);
    let read = sampled.read().unwrap();
    assert!(read.token < 4);
    assert_eq!(read.logprobs.unwrap().top.len(), 2);
}

// ------------------------------------------------------------- rejections

fn invalid_request<T: std::fmt::Debug>(result: engine::Result<T>, needle: &str) {
    match result {
        Err(EngineError::InvalidRequest(msg)) => {
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}")
        }
        other => panic!("expected an invalid request naming {needle}, got {other:?}"),
    }
}

#[test]
fn bad_parameters_are_rejected_before_sampling() {
    let new = |params: SamplingParams| Sampler::new(params, 10, &[1, 2]).map(|_| ());
    invalid_request(
        new(SamplingParams {
            temperature: -1.0,
            ..Default::default()
        }),
        "temperature",
    );
    invalid_request(
        new(SamplingParams {
            top_p: 0.0,
            ..Default::default()
        }),
        "top_p",
    );
    invalid_request(
        new(SamplingParams {
            min_p: 2.0,
            ..Default::default()
        }),
        "min_p",
    );
    invalid_request(
        new(SamplingParams {
            repetition_penalty: 0.0,
            ..Default::default()
        }),
        "repetition_penalty",
    );
    invalid_request(
        new(SamplingParams {
            presence_penalty: 3.0,
            ..Default::default()
        }),
        "presence_penalty",
    );
    invalid_request(
        new(SamplingParams {
            frequency_penalty: -3.0,
            ..Default::default()
        }),
        "frequency_penalty",
    );
    invalid_request(
        new(SamplingParams {
            logit_bias: vec![(10, 1.0)],
            ..Default::default()
        }),
        "logit_bias",
    );
    // Ids the repetition window would gather must exist.
    invalid_request(
        Sampler::new(
            SamplingParams {
                repetition_penalty: 1.5,
                ..Default::default()
            },
            10,
            &[1, 10],
        )
        .map(|_| ()),
        "prompt token 10",
    );
    invalid_request(
        new(SamplingParams {
            logprobs: true,
            top_logprobs: 21,
            ..Default::default()
        }),
        "top_logprobs",
    );
}

#[test]
fn wrong_logits_and_tokens_are_rejected() {
    let mut sampler = Sampler::new(SamplingParams::greedy(), 4, &[]).unwrap();
    let wrong = [
        Array::from_slice(&[0.0f32; 5], &[1, 5]).unwrap(),
        Array::from_slice(&[0.0f32; 4], &[4]).unwrap(),
        Array::from_slice(&[0.0f32; 8], &[2, 4]).unwrap(),
        Array::from_slice(&[0i32; 4], &[1, 4]).unwrap(),
    ];
    for logits in &wrong {
        invalid_request(sampler.sample(logits).map(|_| ()), "logits");
    }
    invalid_request(
        sampler.accept(&Array::from_slice(&[1u32, 2], &[2]).unwrap()),
        "token",
    );
    invalid_request(
        sampler.accept(&Array::from_slice(&[1.0f32], &[1]).unwrap()),
        "token",
    );
}
