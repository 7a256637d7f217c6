//! The gated delta rule of Gated DeltaNet layers, as mlx-lm's
//! `mlx_lm/models/gated_delta.py` defines it. Per value head, a state
//! `S` (`[Dv, Dk]`) is updated for each token by
//!
//! ```text
//! S ← g·S;  S ← S + k (β (v − S k))ᵀ … (as rows: S += (β (v − S k)) kᵀ);  y = S q
//! ```
//!
//! with a decay `g = exp(−exp(A_log)·softplus(a + dt_bias))` and a write
//! strength `β = sigmoid(b)` per token and head. A decode step applies it
//! once ([`step`], mlx-lm's `_gated_delta_step_ops`). A prompt goes
//! through [`chunked`], a parallel form built from matrix products: within
//! a chunk of [`CHUNK`] tokens the updates are solved together (the
//! "WY" form of the delta rule: a unit lower-triangular system inverted by
//! block doubling), and only the chunks run in sequence, so a prompt of
//! `T` tokens costs `T / CHUNK` dependent steps rather than `T`. Both give
//! the per-token recurrence's values up to float summation order.
//!
//! A token marked as padding leaves the state as it was (`β = 0`, `g = 1`).

use mlx::{Array, Dtype};

use crate::error::Result;

/// Tokens solved together in [`chunked`].
pub const CHUNK: i32 = 64;

/// The decay's logarithm `−exp(A_log)·softplus(a + dt_bias)` (f32,
/// `[B, T, Hv]`) and `β = sigmoid(b)`; padding (`valid` false, `[B, T]`)
/// gets `log g = 0` and `β = 0`.
pub fn gates(
    a: &Array,
    b: &Array,
    a_log: &Array,
    dt_bias: &Array,
    valid: Option<&Array>,
) -> Result<(Array, Array)> {
    let x = a.add(dt_bias)?;
    // softplus(x) = max(x, 0) + log1p(exp(-|x|)), mlx's `logaddexp(x, 0)`.
    let zero = Array::scalar(0.0f32)?;
    let softplus = x
        .maximum(&zero)?
        .add(&x.abs()?.negative()?.exp()?.log1p()?)?;
    let log_g = a_log
        .astype(Dtype::F32)?
        .exp()?
        .negative()?
        .multiply(&softplus)?
        .astype(Dtype::F32)?;
    let beta = b.sigmoid()?.astype(Dtype::F32)?;
    Ok(match valid {
        Some(valid) => {
            let valid = valid.expand_dims(-1)?;
            (
                mlx::where_(&valid, &log_g, &zero)?,
                mlx::where_(&valid, &beta, &zero)?,
            )
        }
        None => (log_g, beta),
    })
}

/// One token: `q`, `k` `[B, Hv, Dk]`, `v` `[B, Hv, Dv]`, `log_g`, `beta`
/// `[B, Hv]` (f32), `state` `[B, Hv, Dv, Dk]`; returns `y` `[B, Hv, Dv]`
/// (f32) and the new state.
pub fn step(
    q: &Array,
    k: &Array,
    v: &Array,
    log_g: &Array,
    beta: &Array,
    state: &Array,
) -> Result<(Array, Array)> {
    let decay = log_g.exp()?.expand_dims(-1)?.expand_dims(-1)?;
    let state = state.multiply(&decay)?;
    let k_row = k.expand_dims(-2)?;
    let kv_mem = state.multiply(&k_row)?.sum(&[-1], false)?;
    let delta = v.subtract(&kv_mem)?.multiply(&beta.expand_dims(-1)?)?;
    let state = state.add(&k_row.multiply(&delta.expand_dims(-1)?)?)?;
    let y = state.multiply(&q.expand_dims(-2)?)?.sum(&[-1], false)?;
    Ok((y, state))
}

/// `(I + A)⁻¹` of strictly lower-triangular `a` (`[N, C, C]`, `C` a power
/// of two), by block doubling: the inverse of `[[P, 0], [R, Q]]` is
/// `[[P⁻¹, 0], [−Q⁻¹ R P⁻¹, Q⁻¹]]`, from the inverses of the diagonal
/// blocks, so `log2 C` rounds of batched products.
fn unit_lower_inverse(a: &Array, c: i32) -> Result<Array> {
    let n = a.dim(0)?;
    // The inverses of the diagonal blocks of size s: [N, C / s, s, s].
    let mut inv = mlx::ones(&[n, c, 1, 1], Dtype::F32)?;
    let mut s = 1;
    while s < c {
        let blocks = c / (2 * s);
        let pairs = inv.reshape(&[n, blocks, 2, s, s])?;
        let first = pairs.slice_axis(2, 0, 1)?.squeeze(2)?;
        let second = pairs.slice_axis(2, 1, 2)?.squeeze(2)?;
        // R of each pair: rows s..2s, columns 0..s of the 2s-block.
        let rows = a.reshape(&[n, blocks, 2 * s, c])?.slice_axis(2, s, 2 * s)?;
        let starts = mlx::arange(0.0, f64::from(c), f64::from(2 * s), Dtype::I32)?;
        let columns = starts
            .reshape(&[1, blocks, 1, 1])?
            .add(&mlx::arange(0.0, f64::from(s), 1.0, Dtype::I32)?.reshape(&[1, 1, 1, s])?)?
            .broadcast_to(&[n, blocks, s, s])?;
        let r = rows.take_along_axis(&columns, 3)?;
        let lower = second.matmul(&r)?.matmul(&first)?.negative()?;
        let zeros = mlx::zeros(&[n, blocks, s, s], Dtype::F32)?;
        let top = mlx::concatenate(&[&first, &zeros], 3)?;
        let bottom = mlx::concatenate(&[&lower, &second], 3)?;
        inv = mlx::concatenate(&[&top, &bottom], 2)?;
        s *= 2;
    }
    Ok(inv.reshape(&[n, c, c])?)
}

/// `[B, T, H, D]` as `[B, H, chunks, CHUNK, D]`, zero-padded at the end.
fn chunks(x: &Array, padded: i32) -> Result<Array> {
    let shape = x.shape();
    let (b, t, h) = (shape[0], shape[1], shape[2]);
    let x = x.transpose(&[0, 2, 1, 3])?;
    let x = if padded > t {
        let mut zeros_shape = x.shape();
        zeros_shape[2] = padded - t;
        let zeros = mlx::zeros(&zeros_shape, x.dtype())?;
        mlx::concatenate(&[&x, &zeros], 2)?
    } else {
        x
    };
    Ok(x.reshape(&[b, h, padded / CHUNK, CHUNK, -1])?)
}

/// A whole sequence: `q`, `k` `[B, T, Hv, Dk]`, `v` `[B, T, Hv, Dv]`,
/// `log_g`, `beta` `[B, T, Hv]` (all f32), `state` `[B, Hv, Dv, Dk]`;
/// returns `y` `[B, T, Hv, Dv]` and the state after the last token.
///
/// Within a chunk, with `Γ` the cumulative sum of `log g` and the state
/// written `M = Sᵀ` (`[Dk, Dv]`) at the chunk's start, the values each
/// token writes, `U = β (V − decayed predictions)`, solve
/// `(I + A) U = diag(β) V − diag(β e^Γ) K M` with
/// `A[t, j] = β_t e^(Γ_t − Γ_j) k_t·k_j` (`j < t`); the outputs are
/// `Y = diag(e^Γ) Q M + (e^(Γ_t − Γ_j) q_t·k_j)_(j ≤ t) U` and the state
/// after the chunk `e^(Γ_C) M + Σ_j e^(Γ_C − Γ_j) k_j u_jᵀ`.
pub fn chunked(
    q: &Array,
    k: &Array,
    v: &Array,
    log_g: &Array,
    beta: &Array,
    state: &Array,
) -> Result<(Array, Array)> {
    let shape = v.shape();
    let (b, t, h, dv) = (shape[0], shape[1], shape[2], shape[3]);
    let dk = k.dim(3)?;
    let padded = (t + CHUNK - 1) / CHUNK * CHUNK;
    let n_chunks = padded / CHUNK;
    let (q, k, v) = (chunks(q, padded)?, chunks(k, padded)?, chunks(v, padded)?);
    // [B, H, n, C]; padding writes nothing and keeps the state.
    let per_token =
        |x: &Array| -> Result<Array> { Ok(chunks(&x.expand_dims(-1)?, padded)?.squeeze(4)?) };
    let (log_g, beta) = (per_token(log_g)?, per_token(beta)?);
    let cum = log_g.cumsum(3, false, true)?;
    let steps = mlx::arange(0.0, f64::from(CHUNK), 1.0, Dtype::I32)?;
    let (row, col) = (steps.reshape(&[CHUNK, 1])?, steps.reshape(&[1, CHUNK])?);
    let (inclusive, strict) = (col.less_equal(&row)?, col.less(&row)?);
    // e^(Γ_t − Γ_j) where j ≤ t, else 0 (masked before the exponential).
    let diff = cum.expand_dims(-1)?.subtract(&cum.expand_dims(-2)?)?;
    let neg_inf = Array::scalar(f32::NEG_INFINITY)?;
    let decay = mlx::where_(&inclusive, &diff, &neg_inf)?.exp()?;
    let zero = Array::scalar(0.0f32)?;
    let kt = k.swapaxes(-1, -2)?;
    let a = mlx::where_(&strict, &decay, &zero)?
        .multiply(&k.matmul(&kt)?)?
        .multiply(&beta.expand_dims(-1)?)?;
    let inv = unit_lower_inverse(&a.reshape(&[-1, CHUNK, CHUNK])?, CHUNK)?
        .reshape(&[b, h, n_chunks, CHUNK, CHUNK])?;
    let growth = cum.exp()?;
    let w_v = inv.matmul(&v.multiply(&beta.expand_dims(-1)?)?)?;
    let w_k = inv.matmul(&k.multiply(&beta.multiply(&growth)?.expand_dims(-1)?)?)?;
    let p = decay.multiply(&q.matmul(&kt)?)?;
    let q_growth = q.multiply(&growth.expand_dims(-1)?)?;
    let last = cum.slice_axis(3, CHUNK - 1, CHUNK)?;
    let to_end = last.subtract(&cum)?.exp()?.expand_dims(-1)?;
    let k_end_t = k.multiply(&to_end)?.swapaxes(-1, -2)?;
    let chunk_decay = last.exp()?.expand_dims(-1)?;
    let at = |x: &Array, i: i32| -> Result<Array> { Ok(x.slice_axis(2, i, i + 1)?.squeeze(2)?) };
    let mut m = state.swapaxes(-1, -2)?;
    let mut ys = Vec::with_capacity(n_chunks as usize);
    for i in 0..n_chunks {
        let u = at(&w_v, i)?.subtract(&at(&w_k, i)?.matmul(&m)?)?;
        ys.push(at(&q_growth, i)?.matmul(&m)?.add(&at(&p, i)?.matmul(&u)?)?);
        m = m
            .multiply(&at(&chunk_decay, i)?)?
            .add(&at(&k_end_t, i)?.matmul(&u)?)?;
    }
    let ys: Vec<&Array> = ys.iter().collect();
    let y = mlx::concatenate(&ys, 2)?
        .slice_axis(2, 0, t)?
        .transpose(&[0, 2, 1, 3])?;
    debug_assert_eq!(y.shape(), [b, t, h, dv]);
    debug_assert_eq!(m.shape(), [b, h, dk, dv]);
    Ok((y, m.swapaxes(-1, -2)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(shape: &[i32], seed: u64) -> Array {
        let key = mlx::random::key(seed).unwrap();
        mlx::random::normal(shape, Dtype::F32, Some(&key)).unwrap()
    }

    fn unit_rows(x: Array) -> Array {
        let norm = x
            .square()
            .unwrap()
            .sum(&[-1], true)
            .unwrap()
            .sqrt()
            .unwrap();
        x.divide(&norm).unwrap()
    }

    /// The token-by-token recurrence.
    fn sequential(
        q: &Array,
        k: &Array,
        v: &Array,
        log_g: &Array,
        beta: &Array,
        mut state: Array,
    ) -> (Array, Array) {
        let mut ys = Vec::new();
        for i in 0..q.dim(1).unwrap() {
            let at = |x: &Array| x.slice_axis(1, i, i + 1).unwrap().squeeze(1).unwrap();
            let (y, s) = step(&at(q), &at(k), &at(v), &at(log_g), &at(beta), &state).unwrap();
            ys.push(y);
            state = s;
        }
        let ys: Vec<&Array> = ys.iter().collect();
        (mlx::stack(&ys, 1).unwrap(), state)
    }

    fn worst(a: &Array, b: &Array) -> f32 {
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn the_chunked_form_equals_the_recurrence() {
        // Lengths shorter than, equal to and across chunks; a state to start.
        for (t, seed) in [(5, 1), (64, 2), (150, 3)] {
            let (b, h, dk, dv) = (2, 3, 16, 8);
            let q = unit_rows(normal(&[b, t, h, dk], seed));
            let k = unit_rows(normal(&[b, t, h, dk], seed + 10));
            let v = normal(&[b, t, h, dv], seed + 20);
            let a = normal(&[b, t, h], seed + 30);
            let bb = normal(&[b, t, h], seed + 40);
            let a_log = normal(&[h], seed + 50)
                .multiply(&Array::scalar(0.5f32).unwrap())
                .unwrap();
            let dt = normal(&[h], seed + 60);
            let (log_g, beta) = gates(&a, &bb, &a_log, &dt, None).unwrap();
            let state = normal(&[b, h, dv, dk], seed + 70);
            let (y1, s1) = sequential(&q, &k, &v, &log_g, &beta, state.clone());
            let (y2, s2) = chunked(&q, &k, &v, &log_g, &beta, &state).unwrap();
            assert_eq!(y2.shape(), [b, t, h, dv]);
            assert!(
                worst(&y1, &y2) < 1e-4,
                "t={t}: outputs differ by {}",
                worst(&y1, &y2)
            );
            assert!(
                worst(&s1, &s2) < 1e-4,
                "t={t}: states differ by {}",
                worst(&s1, &s2)
            );
        }
    }

    #[test]
    fn padding_leaves_the_state_untouched() {
        let (b, t, h, dk, dv) = (1, 6, 2, 8, 4);
        let q = unit_rows(normal(&[b, t, h, dk], 1));
        let k = unit_rows(normal(&[b, t, h, dk], 2));
        let v = normal(&[b, t, h, dv], 3);
        let ones = mlx::ones(&[h], Dtype::F32).unwrap();
        let valid = Array::from_slice(&[false, false, false, true, true, true], &[1, t]).unwrap();
        let ab = normal(&[b, t, h], 4);
        let (log_g, beta) = gates(&ab, &ab, &ones, &ones, Some(&valid)).unwrap();
        let zero_state = mlx::zeros(&[b, h, dv, dk], Dtype::F32).unwrap();
        let (_, padded) = chunked(&q, &k, &v, &log_g, &beta, &zero_state).unwrap();
        // The last three tokens alone.
        let tail = |x: &Array| x.slice_axis(1, 3, 6).unwrap();
        let (_, alone) = chunked(
            &tail(&q),
            &tail(&k),
            &tail(&v),
            &tail(&log_g),
            &tail(&beta),
            &zero_state,
        )
        .unwrap();
        assert!(worst(&padded, &alone) < 1e-6);
    }
}
