//! Helpers shared by the binding's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use mlx::Array;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `n` values uniform in [-1, 1), reproducible from `seed`.
pub fn random_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// An f32 array of `shape` filled by `random_vec`.
pub fn random_array(shape: &[i32], seed: u64) -> (Array, Vec<f32>) {
    let n = shape.iter().product::<i32>() as usize;
    let data = random_vec(n, seed);
    (Array::from_slice(&data, shape).unwrap(), data)
}

pub fn f32s(a: &Array) -> Vec<f32> {
    a.to_vec::<f32>().unwrap()
}

/// Largest absolute difference relative to the largest expected magnitude.
pub fn rel_error(actual: &[f32], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    let scale = expected
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-12);
    let diff = actual
        .iter()
        .zip(expected)
        .fold(0.0f64, |m, (a, e)| m.max((*a as f64 - e).abs()));
    diff / scale
}

pub fn assert_close(actual: &[f32], expected: &[f64], tol: f64) {
    let err = rel_error(actual, expected);
    assert!(err < tol, "relative error {err:e} exceeds {tol:e}");
}

pub fn assert_f32_eq(actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let ok = (a - e).abs() <= 1e-6 * e.abs().max(1.0);
        assert!(ok, "element {i}: {a} != {e} (all: {actual:?})");
    }
}

/// Row-major matrix product of `[m, k]` and `[k, n]`, in f64.
pub fn matmul_ref(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k)
                .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                .sum();
        }
    }
    out
}
