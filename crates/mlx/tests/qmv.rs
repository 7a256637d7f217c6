//! The project's CUDA kernel for 4-bit `x @ W.T` with a few rows of `x`
//! (`shim/qmv.cpp`) against MLX's own quantized product, on the same
//! inputs. Where MLX has no CUDA backend, the product must be MLX's.
//!
//! One test function: the kernel switch is process-wide.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use mlx::{Array, Dtype, Epilogue, QuantizedWeight, graph_census, quantize};

/// `q.matmul(x)` with the project's kernel allowed or not (unevaluated),
/// and whether the graph runs it.
fn product(q: &QuantizedWeight, x: &Array, custom: bool) -> (Array, bool) {
    mlx::set_custom_qmv(custom).unwrap();
    let out = q.matmul(x, true).unwrap();
    let census = graph_census(&[&out]).unwrap();
    let ran_custom = census.iter().any(|(name, _)| name == "CustomKernel");
    let ran_mlx = census.iter().any(|(name, _)| name == "QuantizedMatmul");
    assert!(ran_custom != ran_mlx, "census {census:?}");
    (out, ran_custom)
}

/// `x @ W.T` with `W` dequantized in f32 from the same packed values,
/// scales and biases: the reference.
fn dense_reference(q: &QuantizedWeight, x: &Array) -> Vec<f64> {
    let exact = QuantizedWeight {
        scales: q.scales.astype(Dtype::F32).unwrap(),
        biases: q.biases.as_ref().map(|b| b.astype(Dtype::F32).unwrap()),
        ..q.clone()
    };
    let w = exact.dequantize().unwrap();
    let (n, k) = (w.shape()[0] as usize, w.shape()[1] as usize);
    let wt = f32s(&w.t().unwrap().contiguous().unwrap());
    let xs = f32s(&x.astype(Dtype::F32).unwrap());
    // In f64 on the host: a GPU's f32 matmul may round through TF32.
    matmul_ref(&xs, &wt, xs.len() / k, k, n)
}

/// `q.matmul(x)` with the project's kernel against the reference, where
/// the kernel runs; whether it does.
fn assert_product_matches(q: &QuantizedWeight, x: &Array, what: &str, tol: f64) -> bool {
    let (mine, ran_custom) = product(q, x, true);
    let (_, ran_custom_when_off) = product(q, x, false);
    assert!(
        !ran_custom_when_off,
        "{what}: the switch did not turn the kernel off"
    );
    if !ran_custom {
        // MLX's product, tested in quantized.rs.
        return false;
    }
    let mine = f32s(&mine.astype(Dtype::F32).unwrap());
    let err = rel_error(&mine, &dense_reference(q, x));
    assert!(err < tol, "{what}: relative error {err:e}");
    ran_custom
}

/// Rows of activations the kernel takes at most by default (it has
/// variants up to 8; `set_custom_qmv_max_rows` moves the limit).
const MAX_ROWS: i32 = 7;

struct Case {
    k: i32,
    n: i32,
    group: i32,
    rows: &'static [i32],
}

/// Shapes that reach every branch of the kernel: one thread per 32 inputs
/// or several, one warp or many, 1, 2 or 4 outputs per block, an odd
/// number of outputs, and 1 to 8 rows (more: MLX's product).
const CASES: [Case; 6] = [
    Case {
        k: 896,
        n: 1152,
        group: 64,
        rows: &[1, 3, 8, 9],
    },
    Case {
        k: 2048,
        n: 4096,
        group: 64,
        rows: &[1, 2],
    },
    Case {
        k: 9728,
        n: 2048,
        group: 128,
        rows: &[1, 4],
    },
    Case {
        k: 512,
        n: 1001,
        group: 32,
        rows: &[1, 5],
    },
    Case {
        k: 3584,
        n: 3584,
        group: 64,
        rows: &[1],
    },
    Case {
        k: 64,
        n: 96,
        group: 64,
        rows: &[2],
    },
];

#[test]
fn the_custom_4bit_product_matches_mlx_and_runs_only_on_cuda() {
    let cuda = mlx::custom_qmv_available().unwrap();
    assert_eq!(cuda, mlx::backend() == mlx::Backend::Cuda);
    // Off the GPU the weights stay small: only the choice is checked there.
    let cases: &[Case] = if cuda { &CASES } else { &CASES[3..] };
    for (i, case) in cases.iter().enumerate() {
        let (w, _) = random_array(&[case.n, case.k], 10 + i as u64);
        for (dtype, tol) in [(Dtype::F32, 1e-5), (Dtype::Bf16, 2e-2), (Dtype::F16, 2e-3)] {
            let q = quantize(&w.astype(dtype).unwrap(), case.group, 4).unwrap();
            mlx::eval(&q.arrays()).unwrap();
            for &rows in case.rows {
                let (x, _) = random_array(&[rows, 1, case.k], 50 + rows as u64);
                let x = x.astype(dtype).unwrap();
                let what = format!(
                    "k {} n {} group {} rows {rows} {dtype:?}",
                    case.k, case.n, case.group
                );
                let ran_custom = assert_product_matches(&q, &x, &what, tol);
                assert_eq!(
                    ran_custom,
                    cuda && rows <= MAX_ROWS,
                    "{what}: kernel choice"
                );
            }
        }
    }
    // An activation row that starts off the 16-byte grid (a view one element
    // into a wider row) takes the kernel's unaligned loads, or a copy.
    let (w, _) = random_array(&[256, 512], 3);
    let q = quantize(&w.astype(Dtype::Bf16).unwrap(), 64, 4).unwrap();
    mlx::eval(&q.arrays()).unwrap();
    let (wide, _) = random_array(&[1, 513], 4);
    let x = wide
        .astype(Dtype::Bf16)
        .unwrap()
        .slice(&[0, 1], &[1, 513], &[1, 1])
        .unwrap();
    mlx::eval(&[&x]).unwrap();
    assert_product_matches(&q, &x, "unaligned row", 2e-2);
    the_row_limit_moves(cuda);
    mlx::set_custom_qmv(true).unwrap();
    epilogues_match_the_composed_operations(cuda);
}

/// With the limit at 8 the kernel serves 8 rows, and matches; at 0 it
/// serves none.
fn the_row_limit_moves(cuda: bool) {
    let (w, _) = random_array(&[1152, 896], 7);
    let q = quantize(&w.astype(Dtype::Bf16).unwrap(), 64, 4).unwrap();
    mlx::eval(&q.arrays()).unwrap();
    let x = random_array(&[8, 896], 8).0.astype(Dtype::Bf16).unwrap();
    assert!(!assert_product_matches(
        &q,
        &x,
        "8 rows, default limit",
        2e-2
    ));
    mlx::set_custom_qmv_max_rows(8).unwrap();
    assert_eq!(
        assert_product_matches(&q, &x, "8 rows, limit 8", 2e-2),
        cuda
    );
    mlx::set_custom_qmv_max_rows(0).unwrap();
    let x = x.slice_axis(0, 0, 1).unwrap();
    assert!(!assert_product_matches(&q, &x, "1 row, limit 0", 2e-2));
    mlx::set_custom_qmv_max_rows(MAX_ROWS).unwrap();
}

fn assert_matches(what: &str, mine: &Array, theirs: &Array, tol: f64) {
    assert_eq!(mine.shape(), theirs.shape(), "{what}: shape");
    let mine = f32s(&mine.astype(Dtype::F32).unwrap());
    let theirs: Vec<f64> = f32s(&theirs.astype(Dtype::F32).unwrap())
        .iter()
        .map(|v| *v as f64)
        .collect();
    let err = rel_error(&mine, &theirs);
    assert!(err < tol, "{what}: relative error {err:e}");
}

/// The bias, residual and SwiGLU fused after the product against MLX's
/// product followed by the same operations; no fusion off CUDA.
fn epilogues_match_the_composed_operations(cuda: bool) {
    let (k, n) = (1024, 1536);
    for (dtype, tol) in [(Dtype::F32, 1e-5), (Dtype::Bf16, 2e-2)] {
        let (w, _) = random_array(&[n, k], 21);
        let q = quantize(&w.astype(dtype).unwrap(), 64, 4).unwrap();
        mlx::eval(&q.arrays()).unwrap();
        for rows in [1, 3, MAX_ROWS + 1] {
            let what = |e: &str| format!("{e}, rows {rows}, {dtype:?}");
            let x = random_array(&[rows, 1, k], 22).0.astype(dtype).unwrap();
            let bias = random_array(&[n], 23).0.astype(dtype).unwrap();
            let residual = random_array(&[rows, 1, n], 24).0.astype(dtype).unwrap();
            // Each epilogue on x and on the RMS norm of x (the norm skips
            // one rounding to the activation type: a looser bound).
            let (g, eps) = (random_array(&[k], 28).0.astype(dtype).unwrap(), 1e-6);
            for norm in [None, Some((&g, eps))] {
                let input = match norm {
                    Some((g, eps)) => mlx::fast::rms_norm(&x, Some(g), eps).unwrap(),
                    None => x.clone(),
                };
                let plain = q.matmul(&input, true).unwrap();
                let swiglu = mlx::fast::swiglu(
                    &plain.slice_axis(2, 0, n / 2).unwrap(),
                    &plain.slice_axis(2, n / 2, n).unwrap(),
                )
                .unwrap();
                let cases = [
                    (Epilogue::None, plain.clone(), "plain"),
                    (Epilogue::AddRow(&bias), plain.add(&bias).unwrap(), "bias"),
                    (
                        Epilogue::Add(&residual),
                        residual.add(&plain).unwrap(),
                        "residual",
                    ),
                    (Epilogue::Swiglu, swiglu, "swiglu"),
                ];
                for (epilogue, theirs, name) in cases {
                    let name = what(&format!("{name}, norm {}", norm.is_some()));
                    let tol = if norm.is_some() { tol * 10.0 } else { tol };
                    match q.normed_matmul_then(&x, norm, epilogue).unwrap() {
                        Some(mine) => {
                            assert!(cuda && rows <= MAX_ROWS, "{name}: fused");
                            assert_matches(&name, &mine, &theirs, tol);
                        }
                        None => assert!(!cuda || rows > MAX_ROWS, "{name}: not fused"),
                    }
                }
            }
        }
    }
    // A bias of another dtype than the activations is left to MLX.
    let (w, _) = random_array(&[64, 64], 25);
    let q = quantize(&w, 64, 4).unwrap();
    mlx::eval(&q.arrays()).unwrap();
    let x = random_array(&[1, 64], 26).0;
    let bias = random_array(&[64], 27).0.astype(Dtype::Bf16).unwrap();
    assert!(
        q.matmul_then(&x, Epilogue::AddRow(&bias))
            .unwrap()
            .is_none()
    );
}
