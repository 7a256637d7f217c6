//! Affine quantization: the quantized matmul against a plain matmul with
//! the dequantized weight, and the dequantized weight against the original.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use mlx::{Array, quantize};

const CONFIGS: [(i32, i32); 6] = [(32, 4), (64, 4), (128, 4), (32, 8), (64, 8), (128, 8)];

#[test]
fn quantized_matmul_equals_matmul_with_the_dequantized_weight() {
    for (i, (group, bits)) in CONFIGS.into_iter().enumerate() {
        let (w, _) = random_array(&[48, 256], 100 + i as u64);
        let (x, xv) = random_array(&[3, 256], 200 + i as u64);
        let q = quantize(&w, group, bits).unwrap();
        let deq = q.dequantize().unwrap();
        let got = f32s(&q.matmul(&x, true).unwrap());
        let want = f32s(&x.matmul(&deq.t().unwrap()).unwrap());
        let want: Vec<f64> = want.iter().map(|v| *v as f64).collect();
        let err = rel_error(&got, &want);
        assert!(
            err < 1e-5,
            "group {group}, {bits} bits: relative error {err:e}"
        );
        // And the plain product with the dequantized weight, in f64.
        let dv = f32s(&deq.t().unwrap().contiguous().unwrap());
        assert_close(&got, &matmul_ref(&xv, &dv, 3, 256, 48), 1e-5);
    }
}

#[test]
fn quantized_matmul_without_transpose_multiplies_by_w_itself() {
    let (w, _) = random_array(&[64, 128], 7);
    let (x, _) = random_array(&[2, 64], 8);
    let q = quantize(&w, 64, 4).unwrap();
    let got = f32s(&q.matmul(&x, false).unwrap());
    let want = f32s(&x.matmul(&q.dequantize().unwrap()).unwrap());
    let want: Vec<f64> = want.iter().map(|v| *v as f64).collect();
    assert_close(&got, &want, 1e-5);
}

#[test]
fn dequantized_weights_are_within_one_quantization_step() {
    for (i, (group, bits)) in CONFIGS.into_iter().enumerate() {
        let (w, wv) = random_array(&[16, 256], 300 + i as u64);
        let q = quantize(&w, group, bits).unwrap();
        assert_eq!(q.weight.shape(), vec![16, 256 * bits / 32]);
        assert_eq!(q.scales.shape(), vec![16, 256 / group]);
        assert_eq!(q.biases.as_ref().unwrap().shape(), vec![16, 256 / group]);
        let deq = f32s(&q.dequantize().unwrap());
        let scales = f32s(&q.scales);
        for (j, (orig, back)) in wv.iter().zip(&deq).enumerate() {
            let step = scales[j / group as usize].abs();
            assert!(
                (orig - back).abs() <= step * 1.0001,
                "group {group}, {bits} bits, element {j}: {orig} vs {back}, step {step}"
            );
        }
        // The step itself is what the bit width promises for values in [-1, 1).
        let levels = ((1 << bits) - 1) as f32;
        assert!(scales.iter().all(|s| s.abs() <= 2.0 / levels * 1.0001));
    }
}

#[test]
fn take_rows_dequantizes_only_the_rows_asked_for() {
    let (w, _) = random_array(&[10, 64], 9);
    let q = quantize(&w, 32, 8).unwrap();
    let idx = Array::from_slice(&[7u32, 2, 7], &[3]).unwrap();
    let rows = q.take_rows(&idx).unwrap();
    assert_eq!(rows.shape(), vec![3, 64]);
    let all = q.dequantize().unwrap();
    assert_eq!(f32s(&rows), f32s(&all.take(&idx, 0).unwrap()));
}

#[test]
fn quantizing_a_ragged_row_is_an_error() {
    let (w, _) = random_array(&[4, 48], 10);
    assert!(quantize(&w, 64, 4).is_err());
}

#[test]
fn microscaling_modes_multiply_and_gather_as_their_dequantized_weight() {
    use mlx::{Gather, QuantMode, quantize_mode};
    for (i, (mode, group, bits)) in [
        (QuantMode::Mxfp4, 32, 4),
        (QuantMode::Nvfp4, 16, 4),
        (QuantMode::Mxfp8, 32, 8),
    ]
    .into_iter()
    .enumerate()
    {
        let (w, wv) = random_array(&[48, 256], 300 + i as u64);
        let (x, _) = random_array(&[3, 256], 400 + i as u64);
        let q = quantize_mode(&w, group, bits, mode).unwrap();
        assert!(q.biases.is_none(), "{mode:?} has no biases");
        assert_eq!(q.scales.shape(), vec![48, 256 / group], "{mode:?}");
        // Floating-point codes carry no dtype: MLX dequantizes to bfloat16.
        let deq = q.dequantize().unwrap().astype(mlx::Dtype::F32).unwrap();
        // Close to the original: 4-bit floats hold about one significant
        // digit, 8-bit ones two.
        let dv = f32s(&deq);
        let err = rel_error(&dv, &wv.iter().map(|v| *v as f64).collect::<Vec<_>>());
        assert!(err < if bits == 4 { 0.2 } else { 0.05 }, "{mode:?}: {err}");
        let got = f32s(&q.matmul(&x, true).unwrap());
        let want = f32s(&x.matmul(&deq.t().unwrap()).unwrap());
        let want: Vec<f64> = want.iter().map(|v| *v as f64).collect();
        assert!(rel_error(&got, &want) < 1e-5, "{mode:?}");
        // The product with a stack of two, rows routed to either.
        let stacked =
            mlx::stack(&[&w, &w.multiply(&w.scalar_like(2.0).unwrap()).unwrap()], 0).unwrap();
        let qs = quantize_mode(&stacked, group, bits, mode).unwrap();
        let rhs = Array::from_slice(&[0u32, 1, 0], &[3]).unwrap();
        let x3 = x.reshape(&[3, 1, 256]).unwrap();
        let gather = Gather {
            lhs: None,
            rhs: Some(&rhs),
            sorted: false,
        };
        let gathered = qs
            .gather_matmul(&x3, gather, true)
            .unwrap()
            .reshape(&[3, 48])
            .unwrap();
        let second = qs
            .dequantize()
            .unwrap()
            .astype(mlx::Dtype::F32)
            .unwrap()
            .slice_axis(0, 1, 2)
            .unwrap()
            .reshape(&[48, 256])
            .unwrap();
        let row1 = x
            .slice_axis(0, 1, 2)
            .unwrap()
            .matmul(&second.t().unwrap())
            .unwrap();
        let got1 = f32s(&gathered.slice_axis(0, 1, 2).unwrap());
        let want1: Vec<f64> = f32s(&row1).iter().map(|v| *v as f64).collect();
        assert!(rel_error(&got1, &want1) < 1e-5, "{mode:?}: gathered");
    }
}
