//! The fused kernels against straightforward Rust implementations.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use mlx::fast::{
    AttentionMask, DynamicNtk, Rope, attention_composed, layer_norm, rms_norm,
    scaled_dot_product_attention,
};
use mlx::{Array, Dtype};

#[test]
fn rms_norm_matches_the_formula() {
    let d = 64;
    let (x, xv) = random_array(&[3, 5, d as i32], 11);
    let (w, wv) = random_array(&[d as i32], 12);
    let eps = 1e-5f64;
    let got = f32s(&rms_norm(&x, Some(&w), eps as f32).unwrap());
    let mut want = Vec::new();
    for row in xv.chunks(d) {
        let ms: f64 = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / d as f64;
        let r = 1.0 / (ms + eps).sqrt();
        want.extend(row.iter().zip(&wv).map(|(v, w)| *v as f64 * r * *w as f64));
    }
    assert_close(&got, &want, 1e-5);
    let plain = f32s(&rms_norm(&x, None, eps as f32).unwrap());
    assert_eq!(plain.len(), xv.len());
}

#[test]
fn layer_norm_matches_the_formula() {
    let d = 32;
    let (x, xv) = random_array(&[4, d as i32], 13);
    let (w, wv) = random_array(&[d as i32], 14);
    let (b, bv) = random_array(&[d as i32], 15);
    let got = f32s(&layer_norm(&x, Some(&w), Some(&b), 1e-5).unwrap());
    let mut want = Vec::new();
    for row in xv.chunks(d) {
        let mean = row.iter().map(|v| *v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let r = 1.0 / (var + 1e-5).sqrt();
        for i in 0..d {
            want.push((row[i] as f64 - mean) * r * wv[i] as f64 + bv[i] as f64);
        }
    }
    assert_close(&got, &want, 1e-5);
}

/// RoPE over `[heads, seq, head_dim]` data, rotating the first `dims`
/// features, in f64.
fn rope_ref(
    x: &[f32],
    seq: usize,
    hd: usize,
    rope: (usize, bool, f64, f64),
    offset: usize,
    periods: Option<&[f64]>,
) -> Vec<f64> {
    let (dims, traditional, base, scale) = rope;
    let half = dims / 2;
    let mut out: Vec<f64> = x.iter().map(|v| *v as f64).collect();
    for (row_idx, row) in out.chunks_mut(hd).enumerate() {
        let pos = ((row_idx % seq) + offset) as f64 * scale;
        for i in 0..half {
            let period = periods.map_or_else(|| base.powf(2.0 * i as f64 / dims as f64), |p| p[i]);
            let theta = pos / period;
            let (s, c) = theta.sin_cos();
            let (a, b) = if traditional {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + half)
            };
            let (xa, xb) = (row[a], row[b]);
            row[a] = xa * c - xb * s;
            row[b] = xa * s + xb * c;
        }
    }
    out
}

#[test]
fn rope_matches_the_rotation_in_both_layouts() {
    let (heads, seq, hd) = (2usize, 7usize, 16usize);
    let (x, xv) = random_array(&[1, heads as i32, seq as i32, hd as i32], 16);
    for traditional in [false, true] {
        for (dims, scale, offset) in [(16, 1.0, 0), (16, 0.5, 5), (8, 1.0, 3)] {
            let rope = Rope {
                dims: dims as i32,
                traditional,
                base: 10000.0,
                scale: scale as f32,
                freqs: None,
                mscale: 1.0,
                dynamic: None,
            };
            let got = f32s(&rope.apply(&x, offset as i32).unwrap());
            let want = rope_ref(
                &xv,
                seq,
                hd,
                (dims, traditional, 10000.0, scale),
                offset,
                None,
            );
            let err = rel_error(&got, &want);
            assert!(
                err < 1e-5,
                "traditional={traditional} dims={dims} scale={scale} offset={offset}: {err:e}"
            );
        }
    }
}

#[test]
fn rope_with_per_row_offsets_rotates_each_row_as_alone() {
    let (heads, seq, hd) = (2, 3, 16);
    let (x, _) = random_array(&[3, heads, seq, hd], 16);
    let rope = Rope {
        dims: hd,
        traditional: false,
        base: 10000.0,
        scale: 1.0,
        freqs: None,
        mscale: 1.0,
        dynamic: None,
    };
    assert_rows_rotate_as_alone(&rope, &x, &[0, 7, 300], 1e-6);
}

/// `rope.apply_rows` of `x` at `offsets` rotates each row as `rope.apply`
/// rotates it alone at its offset (within `tol`, relative).
fn assert_rows_rotate_as_alone(rope: &Rope, x: &Array, offsets: &[i32], tol: f64) {
    let n = offsets.len() as i32;
    let got = rope
        .apply_rows(x, &Array::from_slice(offsets, &[n]).unwrap())
        .unwrap();
    for (b, &offset) in offsets.iter().enumerate() {
        let b = b as i32;
        let row = x.slice_axis(0, b, b + 1).unwrap();
        let want: Vec<f64> = f32s(&rope.apply(&row, offset).unwrap())
            .into_iter()
            .map(f64::from)
            .collect();
        let got = f32s(&got.slice_axis(0, b, b + 1).unwrap());
        assert!(rel_error(&got, &want) < tol, "row {b}");
    }
}

#[test]
fn dynamic_ntk_rope_grows_theta_past_the_trained_length_alone_and_per_row() {
    let (heads, seq, hd) = (2usize, 3usize, 16usize);
    let (x, xv) = random_array(&[3, heads as i32, seq as i32, hd as i32], 18);
    let rope = Rope {
        dims: hd as i32,
        traditional: false,
        base: 10000.0,
        scale: 1.0,
        freqs: None,
        mscale: 1.0,
        dynamic: Some(DynamicNtk {
            max_positions: 8,
            factor: 2.0,
        }),
    };
    // Alone: within the trained length θ is the base; past it, the length
    // reached (offset + 3 new positions) sets θ.
    let row0 = x.slice_axis(0, 0, 1).unwrap();
    let per_row = heads * seq * hd;
    for offset in [0usize, 5, 20] {
        let reached = (offset + seq).max(8) as f64;
        let theta = 10000.0 * (2.0 * reached / 8.0 - 1.0f64).powf(16.0 / 14.0);
        let got = f32s(&rope.apply(&row0, offset as i32).unwrap());
        let want = rope_ref(
            &xv[..per_row],
            seq,
            hd,
            (hd, false, theta as f32 as f64, 1.0),
            offset,
            None,
        );
        assert_close(&got, &want, 1e-5);
    }
    // A batch: each row as alone at its own offset (θ from its own length).
    assert_rows_rotate_as_alone(&rope, &x, &[0, 5, 20], 1e-5);
}

#[test]
fn rope_with_explicit_periods_rotates_by_position_over_period() {
    let (seq, hd) = (5usize, 8usize);
    let (x, xv) = random_array(&[1, 1, seq as i32, hd as i32], 17);
    let periods = [1.0f64, 3.5, 40.0, 900.0];
    let p32: Vec<f32> = periods.iter().map(|p| *p as f32).collect();
    let rope = Rope {
        dims: hd as i32,
        traditional: false,
        base: 0.0,
        scale: 1.0,
        freqs: Some(Array::from_slice(&p32, &[4]).unwrap()),
        mscale: 1.0,
        dynamic: None,
    };
    let got = f32s(&rope.apply(&x, 2).unwrap());
    let want = rope_ref(&xv, seq, hd, (hd, false, 0.0, 1.0), 2, Some(&periods));
    assert_close(&got, &want, 1e-5);
}

/// Attention over `q: [hq, l, d]`, `k, v: [hkv, s, d]` with an optional
/// `[l, s]` mask (true = attend), in f64.
fn sdpa_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: (usize, usize, usize, usize, usize),
    scale: f64,
    mask: Option<&[bool]>,
) -> Vec<f64> {
    let (hq, hkv, l, s, d) = dims;
    let mut out = vec![0.0; hq * l * d];
    for h in 0..hq {
        let kh = h / (hq / hkv);
        for i in 0..l {
            let mut scores: Vec<f64> = (0..s)
                .map(|j| {
                    let dot: f64 = (0..d)
                        .map(|c| q[(h * l + i) * d + c] as f64 * k[(kh * s + j) * d + c] as f64)
                        .sum();
                    if mask.is_none_or(|m| m[i * s + j]) {
                        dot * scale
                    } else {
                        f64::NEG_INFINITY
                    }
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            scores.iter_mut().for_each(|x| *x = (*x - m).exp());
            let z: f64 = scores.iter().sum();
            for c in 0..d {
                out[(h * l + i) * d + c] = (0..s)
                    .map(|j| scores[j] / z * v[(kh * s + j) * d + c] as f64)
                    .sum();
            }
        }
    }
    out
}

type Attention = fn(&Array, &Array, &Array, f32, AttentionMask<'_>) -> mlx::Result<Array>;

fn composed(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f32,
    mask: AttentionMask<'_>,
) -> mlx::Result<Array> {
    attention_composed(q, k, v, scale, mask, None)
}

/// Composed in blocks of two queries at most (the tests' 5 queries: 2, 2, 1).
fn composed_in_blocks(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f32,
    mask: AttentionMask<'_>,
) -> mlx::Result<Array> {
    let per_query: i32 = q.shape()[..2].iter().product::<i32>() * k.shape()[2];
    attention_composed(q, k, v, scale, mask, Some(2 * per_query as usize + 1))
}

/// MLX's fused attention (as the backend picks it) and the composed one,
/// whole and in blocks of queries.
const ATTENTIONS: [(&str, Attention); 3] = [
    ("fused", scaled_dot_product_attention),
    ("composed", composed),
    ("composed in blocks", composed_in_blocks),
];

#[test]
fn attention_matches_softmax_qk_v_with_grouped_heads_and_masks() {
    let (hq, hkv, l, s, d) = (4usize, 2usize, 5usize, 9usize, 16usize);
    let (q, qv) = random_array(&[1, hq as i32, l as i32, d as i32], 18);
    let (k, kv) = random_array(&[1, hkv as i32, s as i32, d as i32], 19);
    let (v, vv) = random_array(&[1, hkv as i32, s as i32, d as i32], 20);
    let scale = 1.0 / (d as f64).sqrt();
    let dims = (hq, hkv, l, s, d);
    // Causal, aligned to the end: query i sees keys 0..=i + (s - l).
    let causal: Vec<bool> = (0..l)
        .flat_map(|i| (0..s).map(move |j| j <= i + (s - l)))
        .collect();
    // An explicit boolean mask, and the same as an additive mask.
    let pattern: Vec<bool> = (0..l * s).map(|x| x % 3 != 1).collect();
    let bool_mask = Array::from_slice(&pattern, &[l as i32, s as i32]).unwrap();
    let additive: Vec<f32> = pattern
        .iter()
        .map(|&b| if b { 0.0 } else { f32::NEG_INFINITY })
        .collect();
    let add_mask = Array::from_slice(&additive, &[l as i32, s as i32]).unwrap();

    for (name, attend) in ATTENTIONS {
        let check = |mask: AttentionMask<'_>, want: Option<&[bool]>| {
            let got = attend(&q, &k, &v, scale as f32, mask).unwrap();
            assert_eq!(
                got.shape(),
                vec![1, hq as i32, l as i32, d as i32],
                "{name}"
            );
            let want = sdpa_ref(&qv, &kv, &vv, dims, scale, want);
            assert_close(&f32s(&got), &want, 1e-5);
        };
        check(AttentionMask::None, None);
        check(AttentionMask::Causal, Some(&causal));
        check(AttentionMask::Array(&bool_mask), Some(&pattern));
        check(AttentionMask::Array(&add_mask), Some(&pattern));
    }
}

#[test]
fn composed_attention_takes_values_of_another_width_and_an_additive_per_head_mask() {
    // Latent attention (DeepSeek-V3): keys of 12 features, values of 5, one
    // key head for all query heads, and a float mask of scores per head.
    let (b, hq, l, s) = (1i32, 4i32, 3i32, 6i32);
    let (q, _) = random_array(&[b, hq, l, 12], 24);
    let (k, _) = random_array(&[b, 1, s, 12], 25);
    let (v, _) = random_array(&[b, 1, s, 5], 26);
    let (scores, _) = random_array(&[b, hq, l, s], 27);
    let mask = AttentionMask::Array(&scores);
    let fused = scaled_dot_product_attention(&q, &k, &v, 0.3, mask).unwrap();
    assert_eq!(fused.shape(), vec![b, hq, l, 5]);
    let want: Vec<f64> = f32s(&fused).iter().map(|&x| x as f64).collect();
    for (name, attend) in &ATTENTIONS[1..] {
        let got = attend(&q, &k, &v, 0.3, mask).unwrap();
        assert_eq!(got.shape(), fused.shape(), "{name}");
        assert_close(&f32s(&got), &want, 1e-5);
    }
}

#[test]
fn composed_attention_equals_the_fused_kernel_over_rows_and_per_head_masks() {
    // Two rows of a batch, each with its own [1, L, S] mask (as prompts
    // prefilled together), and a mask per query head.
    let (b, hq, hkv, l, s, d) = (2i32, 6i32, 2i32, 5i32, 7i32, 8i32);
    let (q, _) = random_array(&[b, hq, l, d], 21);
    let (k, _) = random_array(&[b, hkv, s, d], 22);
    let (v, _) = random_array(&[b, hkv, s, d], 23);
    let rows: Vec<bool> = (0..b * l * s).map(|x| x % 5 != 2 && x % 7 != 3).collect();
    let per_row = Array::from_slice(&rows, &[b, 1, l, s]).unwrap();
    let heads: Vec<bool> = (0..hq * l * s).map(|x| x % 4 != 1).collect();
    let per_head = Array::from_slice(&heads, &[1, hq, l, s]).unwrap();
    for mask in [
        AttentionMask::Array(&per_row),
        AttentionMask::Array(&per_head),
        AttentionMask::Causal,
    ] {
        let fused = scaled_dot_product_attention(&q, &k, &v, 0.3, mask).unwrap();
        let want: Vec<f64> = f32s(&fused).iter().map(|&x| x as f64).collect();
        for (name, attend) in &ATTENTIONS[1..] {
            let got = attend(&q, &k, &v, 0.3, mask).unwrap();
            assert_eq!(got.shape(), fused.shape(), "{name}");
            assert_close(&f32s(&got), &want, 1e-5);
        }
    }
}

#[test]
fn attention_rejects_mismatched_head_dims() {
    let q = mlx::zeros(&[1, 2, 3, 8], Dtype::F32).unwrap();
    let k = mlx::zeros(&[1, 2, 3, 4], Dtype::F32).unwrap();
    for (name, attend) in ATTENTIONS {
        assert!(
            attend(&q, &k, &k, 1.0, AttentionMask::None).is_err(),
            "{name}"
        );
    }
    // Query heads that are not a multiple of the key heads.
    let q = mlx::zeros(&[1, 3, 3, 8], Dtype::F32).unwrap();
    let k = mlx::zeros(&[1, 2, 3, 8], Dtype::F32).unwrap();
    for (name, attend) in ATTENTIONS {
        assert!(
            attend(&q, &k, &k, 1.0, AttentionMask::None).is_err(),
            "{name}"
        );
    }
}

#[test]
fn swiglu_equals_silu_of_the_gate_times_up() {
    let (g, gv) = random_array(&[3, 40], 21);
    let (u, uv) = random_array(&[3, 40], 22);
    let want: Vec<f64> = gv
        .iter()
        .zip(&uv)
        .map(|(&g, &u)| g as f64 / (1.0 + (-g as f64).exp()) * u as f64)
        .collect();
    assert_close(&f32s(&mlx::fast::swiglu(&g, &u).unwrap()), &want, 1e-6);
    // Shapeless: another shape reuses the compiled kernel.
    let (g2, _) = random_array(&[2, 5, 7], 23);
    let out = mlx::fast::swiglu(&g2, &g2).unwrap();
    assert_eq!(out.shape(), vec![2, 5, 7]);
    let composed = g2.silu().unwrap().multiply(&g2).unwrap();
    assert_eq!(f32s(&out), f32s(&composed));
}

#[test]
fn sinks_take_part_of_each_softmax_and_nothing_of_the_values() {
    let (h, l, d) = (3, 5, 8);
    let (q, _) = random_array(&[1, h, l, d], 71);
    let (k, _) = random_array(&[1, h, l, d], 72);
    let (v, _) = random_array(&[1, h, l, d], 73);
    let sinks = Array::from_slice(&[0.5f32, -1.0, 2.0], &[h]).unwrap();
    let scale = 0.35;
    let got =
        mlx::fast::attention_with_sinks(&q, &k, &v, scale, AttentionMask::None, &sinks).unwrap();
    // The sink as one more column of scores, dropped after the softmax.
    let scores = q
        .matmul(&k.swapaxes(-1, -2).unwrap())
        .unwrap()
        .multiply(&Array::scalar(scale).unwrap())
        .unwrap();
    let sink_column = sinks
        .reshape(&[1, h, 1, 1])
        .unwrap()
        .broadcast_to(&[1, h, l, 1])
        .unwrap();
    let weights = mlx::concatenate(&[&scores, &sink_column], -1)
        .unwrap()
        .softmax(-1, true)
        .unwrap()
        .slice_axis(-1, 0, l)
        .unwrap();
    let want = weights.matmul(&v).unwrap();
    let want: Vec<f64> = f32s(&want).iter().map(|x| f64::from(*x)).collect();
    let err = rel_error(&f32s(&got), &want);
    assert!(err < 1e-5, "relative error {err:e}");
    // Without sinks the weights sum to one: the results differ.
    let plain = scaled_dot_product_attention(&q, &k, &v, scale, AttentionMask::None).unwrap();
    assert!(rel_error(&f32s(&plain), &want) > 1e-2);
}
