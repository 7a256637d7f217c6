//! Gathered products (`gather_mm`, `gather_qmm`), the Mixture-of-Experts
//! primitives: each output row against the plain product of that row with
//! the matrix its index picks, computed on the host in f64 from the
//! (dequantized) weights.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use mlx::{Array, Gather, gather_mm, quantize};

/// `x[t] @ w[idx[t]]` for rows `x` `[T, K]` and a stack `w` `[E, K, N]`
/// given row-major, in f64.
fn gathered_ref(x: &[f32], w: &[f32], idx: &[u32], k: usize, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(idx.len() * n);
    for (t, &e) in idx.iter().enumerate() {
        let row = &x[t * k..(t + 1) * k];
        let mat = &w[e as usize * k * n..(e as usize + 1) * k * n];
        out.extend(matmul_ref(row, mat, 1, k, n));
    }
    out
}

fn indices(values: &[u32]) -> Array {
    Array::from_slice(values, &[values.len() as i32]).unwrap()
}

/// A stack `[E, rows, cols]` transposed to `[E, cols, rows]`, on the host.
fn transposed_stack(w: &[f32], e: usize, rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for m in 0..e {
        for r in 0..rows {
            for c in 0..cols {
                out[m * rows * cols + c * rows + r] = w[m * rows * cols + r * cols + c];
            }
        }
    }
    out
}

#[test]
fn gather_mm_multiplies_each_row_by_the_matrix_its_index_picks() {
    // Five experts (not a power of two), rows picking some twice, one never.
    let (e, k, n) = (5, 24, 10);
    let (w, wv) = random_array(&[e, k, n], 1);
    let idx = [3u32, 0, 4, 3, 1, 0, 3];
    let t = idx.len() as i32;
    let (x, xv) = random_array(&[t, 1, k], 2);
    let rhs = indices(&idx);
    let gather = Gather {
        rhs: Some(&rhs),
        ..Gather::default()
    };
    let got = gather_mm(&x, &w, gather).unwrap();
    assert_eq!(got.shape(), vec![t, 1, n]);
    let want = gathered_ref(&xv, &wv, &idx, k as usize, n as usize);
    assert_close(&f32s(&got), &want, 1e-5);
}

#[test]
fn gather_mm_broadcasts_tokens_against_their_top_k_experts() {
    // The layout of mlx-lm's SwitchGLU: x `[B, L, 1, 1, K]` against indices
    // `[B, L, k]` gives `[B, L, k, 1, N]`, every token times each of its
    // experts.
    let (e, k, n, b, l, top) = (6, 16, 8, 2, 3, 3);
    let (w, wv) = random_array(&[e, k, n], 3);
    let (x, xv) = random_array(&[b, l, 1, 1, k], 4);
    let idx: Vec<u32> = [5, 0, 2, 1, 1, 4, 3, 0, 5, 2, 4, 1, 0, 3, 5, 2, 2, 0].to_vec();
    let rhs = Array::from_slice(&idx, &[b, l, top]).unwrap();
    let got = gather_mm(
        &x,
        &w,
        Gather {
            rhs: Some(&rhs),
            ..Gather::default()
        },
    )
    .unwrap();
    assert_eq!(got.shape(), vec![b, l, top, 1, n]);
    // Each token's row repeated for each of its experts.
    let (k, n) = (k as usize, n as usize);
    let rows: Vec<f32> = (0..idx.len())
        .flat_map(|i| xv[(i / top as usize) * k..(i / top as usize + 1) * k].to_vec())
        .collect();
    assert_close(&f32s(&got), &gathered_ref(&rows, &wv, &idx, k, n), 1e-5);
}

#[test]
fn gather_mm_with_lhs_indices_picks_the_rows_too() {
    let (e, k, n) = (3, 8, 4);
    let (w, wv) = random_array(&[e, k, n], 5);
    let (x, xv) = random_array(&[4, 1, k], 6);
    let lhs_idx = [2u32, 2, 0, 3, 1];
    let rhs_idx = [0u32, 1, 2, 2, 0];
    let (lhs, rhs) = (indices(&lhs_idx), indices(&rhs_idx));
    let got = gather_mm(
        &x,
        &w,
        Gather {
            lhs: Some(&lhs),
            rhs: Some(&rhs),
            sorted: false,
        },
    )
    .unwrap();
    assert_eq!(got.shape(), vec![5, 1, n]);
    let k = k as usize;
    let rows: Vec<f32> = lhs_idx
        .iter()
        .flat_map(|&r| xv[r as usize * k..(r as usize + 1) * k].to_vec())
        .collect();
    assert_close(
        &f32s(&got),
        &gathered_ref(&rows, &wv, &rhs_idx, k, n as usize),
        1e-5,
    );
}

#[test]
fn sorted_indices_give_the_same_rows_as_unsorted() {
    // Many rows grouped by expert, as a prefill's sorted routing hands them.
    let (e, k, n) = (7, 32, 16);
    let (w, _) = random_array(&[e, k, n], 7);
    let mut idx: Vec<u32> = (0..96u32).map(|i| (i * 5 + i / 7) % e as u32).collect();
    idx.sort_unstable();
    let (x, _) = random_array(&[idx.len() as i32, 1, k], 8);
    let rhs = indices(&idx);
    let run = |sorted| {
        f32s(
            &gather_mm(
                &x,
                &w,
                Gather {
                    rhs: Some(&rhs),
                    lhs: None,
                    sorted,
                },
            )
            .unwrap(),
        )
    };
    let want: Vec<f64> = run(false).iter().map(|v| *v as f64).collect();
    assert_close(&run(true), &want, 1e-6);
}

#[test]
fn gather_qmm_equals_gather_mm_with_the_dequantized_experts() {
    // Experts stored as a linear layer's weights, `[E, out, in]`, and
    // multiplied transposed, at the group sizes and widths mlx-lm writes.
    for (i, (group, bits)) in [(32, 4), (64, 4), (64, 8), (128, 8), (64, 2), (32, 6)]
        .into_iter()
        .enumerate()
    {
        let (e, out, inp) = (5, 12, 128);
        let (w, _) = random_array(&[e, out, inp], 10 + i as u64);
        let q = quantize(&w, group, bits).unwrap();
        assert_eq!(q.weight.shape(), vec![e, out, inp * bits / 32]);
        let deq = q.dequantize().unwrap();
        assert_eq!(deq.shape(), vec![e, out, inp]);
        let idx = [4u32, 1, 1, 0, 3, 4];
        let (x, xv) = random_array(&[idx.len() as i32, 1, inp], 20 + i as u64);
        let rhs = indices(&idx);
        let gather = Gather {
            rhs: Some(&rhs),
            ..Gather::default()
        };
        let got = f32s(&q.gather_matmul(&x, gather, true).unwrap());
        let wt = deq.swapaxes(-1, -2).unwrap();
        let want = f32s(&gather_mm(&x, &wt, gather).unwrap());
        let want: Vec<f64> = want.iter().map(|v| *v as f64).collect();
        let err = rel_error(&got, &want);
        assert!(
            err < 1e-5,
            "group {group}, {bits} bits: relative error {err:e}"
        );
        // And the host's product with the dequantized, transposed experts.
        let dv = transposed_stack(&f32s(&deq), e as usize, out as usize, inp as usize);
        let host = gathered_ref(&xv, &dv, &idx, inp as usize, out as usize);
        assert_close(&got, &host, 1e-5);
    }
}

#[test]
fn gather_qmm_sorted_and_without_transpose() {
    let (e, k, n) = (3, 64, 64);
    let (w, _) = random_array(&[e, k, n], 30);
    let q = quantize(&w, 64, 4).unwrap();
    let deq = q.dequantize().unwrap();
    let idx = [0u32, 0, 0, 1, 2, 2, 2, 2];
    let (x, _) = random_array(&[idx.len() as i32, 1, k], 31);
    let rhs = indices(&idx);
    for (sorted, transpose) in [(true, true), (false, false), (true, false)] {
        let gather = Gather {
            rhs: Some(&rhs),
            lhs: None,
            sorted,
        };
        let got = f32s(&q.gather_matmul(&x, gather, transpose).unwrap());
        let wd = if transpose {
            deq.swapaxes(-1, -2).unwrap()
        } else {
            deq.clone()
        };
        let want = f32s(&gather_mm(&x, &wd, gather).unwrap());
        let want: Vec<f64> = want.iter().map(|v| *v as f64).collect();
        assert_close(&got, &want, 1e-5);
    }
}

#[test]
fn mismatched_gathered_products_are_errors() {
    let (w, _) = random_array(&[3, 8, 4], 40);
    let (x, _) = random_array(&[2, 1, 6], 41);
    let rhs = indices(&[0, 1]);
    let gather = Gather {
        rhs: Some(&rhs),
        ..Gather::default()
    };
    // Inner dimensions 6 and 8.
    assert!(gather_mm(&x, &w, gather).is_err());
    // Float indices.
    let bad = Array::from_slice(&[0.0f32, 1.0], &[2]).unwrap();
    let (x, _) = random_array(&[2, 1, 8], 42);
    let floats = Gather {
        rhs: Some(&bad),
        ..Gather::default()
    };
    assert!(gather_mm(&x, &w, floats).is_err());
    // A quantized stack against rows of the wrong width.
    let (wq, _) = random_array(&[3, 16, 64], 43);
    let q = quantize(&wq, 32, 4).unwrap();
    assert!(q.gather_matmul(&x, gather, true).is_err());
}
