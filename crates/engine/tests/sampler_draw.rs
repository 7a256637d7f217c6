//! The sampler's draw: a seeded sequence's picks follow the softmax of its
//! scaled logits, and stay the same when the logits move by rounding (as
//! they do when the sequence shares its batch with others), where a draw
//! by inverse CDF lands on a neighbouring token of a long tail.

#![allow(clippy::unwrap_used)]

use engine::sampler::{Sampler, SamplingParams};
use mlx::Array;

fn row(values: &[f32]) -> Array {
    Array::from_slice(values, &[1, values.len() as i32]).unwrap()
}

fn token(id: u32) -> Array {
    Array::from_slice(&[id], &[1]).unwrap()
}

/// Draws `n` tokens from one seeded sampler over the same logits.
fn draws(logits: &[f32], temperature: f32, seed: u64, n: usize) -> Vec<u32> {
    let params = SamplingParams {
        temperature,
        seed: Some(seed),
        ..Default::default()
    };
    let mut sampler = Sampler::new(params, logits.len(), &[]).unwrap();
    let logits = row(logits);
    (0..n)
        .map(|_| {
            let t = sampler.sample(&logits).unwrap().token_id().unwrap();
            sampler.accept(&token(t)).unwrap();
            t
        })
        .collect()
}

#[test]
fn draws_follow_the_softmax_of_the_scaled_logits() {
    let logits = [1.0f32, 0.0, -0.5, -2.0];
    let temperature = 0.7;
    let n = 4000;
    let got = draws(&logits, temperature, 5, n);
    let scaled: Vec<f64> = logits
        .iter()
        .map(|&l| f64::from(l) / f64::from(temperature))
        .collect();
    let z: f64 = scaled.iter().map(|s| s.exp()).sum();
    for (id, s) in scaled.iter().enumerate() {
        let want = s.exp() / z;
        let share = got.iter().filter(|&&t| t as usize == id).count() as f64 / n as f64;
        // Four standard deviations of a share of 4000 draws.
        let tol = 4.0 * (want * (1.0 - want) / n as f64).sqrt();
        assert!(
            (share - want).abs() <= tol,
            "token {id}: drawn {share:.4}, softmax {want:.4}"
        );
    }
}

#[test]
fn a_draw_in_the_long_tail_survives_rounding_noise() {
    // A real model's step: a few likely tokens and a long tail holding most
    // of the mass, 1e-5 or less per token, where an inverse-CDF draw lands
    // on a neighbour when the logits move by rounding (as they do when the
    // sequence shares its batch with others).
    let vocab = 49_152;
    let mut logits: Vec<f32> = (0..vocab)
        .map(|i| -10.0 + ((i * 7919) % 1000) as f32 / 500.0)
        .collect();
    logits[..4].copy_from_slice(&[-1.5, -2.0, -2.5, -3.0]);
    let nudged: Vec<f32> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| l * (1.0 + 2e-7 * (((i * 31) % 7) as f32 - 3.0)))
        .collect();
    let mut tail = 0;
    for seed in 0..40 {
        let a = draws(&logits, 0.8, seed, 4);
        let b = draws(&nudged, 0.8, seed, 4);
        assert_eq!(a, b, "seed {seed}");
        tail += a.iter().filter(|&&t| t >= 4).count();
    }
    assert!(tail > 40, "only {tail} of 160 draws reached the tail");
}
