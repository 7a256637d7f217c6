//! Truncation filters over log-probabilities, op for op as mlx-lm's
//! `apply_top_p`, `apply_min_p` and `apply_top_k` (`sample_utils.py`):
//! excluded entries become `-inf`, kept ones keep their value. They work on
//! the last axis, so a `[batch, vocab]` input filters every row on its own.

use mlx::{Array, Dtype};

use crate::error::Result;

/// `-inf` in the dtype of `x`, for masking without promoting it.
fn neg_inf_like(x: &Array) -> Result<Array> {
    Ok(x.scalar_like(f32::NEG_INFINITY)?)
}

/// Nucleus filter: keeps the most likely entries whose probability mass
/// reaches `top_p` of the row's total (ties with the last kept value stay).
/// As mlx-lm: sort ascending, count the entries whose exclusive mass above
/// is at least `top_p * total`, and keep everything at or above the first
/// entry not counted.
pub fn apply_top_p(logprobs: &Array, top_p: f32) -> Result<Array> {
    let sorted = logprobs.sort(-1)?;
    let sorted_probs = sorted.astype(Dtype::F32)?.exp()?;
    let mass_above = sorted_probs.cumsum(-1, true, false)?;
    let total = mass_above
        .slice_axis(-1, 0, 1)?
        .add(&sorted_probs.slice_axis(-1, 0, 1)?)?;
    let cut = total.multiply(&Array::scalar(top_p)?)?;
    let num_dropped = mass_above.greater_equal(&cut)?.sum(&[-1], true)?;
    let threshold = sorted.take_along_axis(&num_dropped, -1)?;
    Ok(mlx::where_(
        &logprobs.less(&threshold)?,
        &neg_inf_like(logprobs)?,
        logprobs,
    )?)
}

/// Min-p filter: drops entries whose probability is below `min_p` times the
/// row's largest (mlx-lm with `min_tokens_to_keep = 1`, which the most
/// likely entry always satisfies). `min_p` must be in `(0, 1]`.
pub fn apply_min_p(logprobs: &Array, min_p: f32) -> Result<Array> {
    let top = logprobs.max(&[-1], true)?;
    // mlx-lm adds `math.log(min_p)` (a double) to the array, which rounds
    // it to the array's dtype.
    let log_min_p = f64::from(min_p).ln() as f32;
    let scaled = top.add(&logprobs.scalar_like(log_min_p)?)?;
    Ok(mlx::where_(
        &logprobs.less(&scaled)?,
        &neg_inf_like(logprobs)?,
        logprobs,
    )?)
}

/// Top-k filter: keeps the `top_k` largest entries of each row (which of
/// several tied entries survive is up to MLX's `argpartition`, as in
/// mlx-lm). `0`, or a `top_k` at least the row's length, keeps everything
/// (mlx-lm rejects those values; the sampler treats them as "off").
pub fn apply_top_k(logprobs: &Array, top_k: usize) -> Result<Array> {
    let vocab = logprobs.dim(-1)?;
    let k = match i32::try_from(top_k) {
        Ok(k) if k > 0 && k < vocab => k,
        _ => return Ok(logprobs.clone()),
    };
    let masked = logprobs
        .negative()?
        .argpartition(k - 1, -1)?
        .slice_axis(-1, k, vocab)?;
    let fill = neg_inf_like(logprobs)?.broadcast_to(&masked.shape())?;
    Ok(logprobs.put_along_axis(&masked, &fill, -1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[f32]) -> Array {
        Array::from_slice(values, &[1, values.len() as i32]).unwrap()
    }

    fn kept(out: &Array) -> Vec<bool> {
        out.to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.is_finite())
            .collect()
    }

    fn log_probs(probs: &[f32]) -> Array {
        row(&probs.iter().map(|p| p.ln()).collect::<Vec<_>>())
    }

    #[test]
    fn top_p_keeps_the_smallest_prefix_reaching_the_mass() {
        let lp = log_probs(&[0.1, 0.5, 0.15, 0.25]);
        // 0.5 alone < 0.6; 0.5 + 0.25 reaches it.
        let out = apply_top_p(&lp, 0.6).unwrap();
        assert_eq!(kept(&out), [false, true, false, true]);
        // Kept entries keep their value.
        let (a, b) = (lp.to_vec::<f32>().unwrap(), out.to_vec::<f32>().unwrap());
        assert_eq!((a[1], a[3]), (b[1], b[3]));
        assert_eq!(
            kept(&apply_top_p(&lp, 0.4).unwrap()),
            [false, true, false, false]
        );
        assert_eq!(kept(&apply_top_p(&lp, 1.0).unwrap()), [true; 4]);
    }

    #[test]
    fn min_p_drops_entries_below_the_scaled_maximum() {
        let lp = log_probs(&[0.1, 0.5, 0.15, 0.25]);
        // Threshold 0.5 * 0.4 = 0.2.
        assert_eq!(
            kept(&apply_min_p(&lp, 0.4).unwrap()),
            [false, true, false, true]
        );
        assert_eq!(
            kept(&apply_min_p(&lp, 1.0).unwrap()),
            [false, true, false, false]
        );
    }

    #[test]
    fn top_k_keeps_the_k_largest_and_treats_out_of_range_k_as_off() {
        let lp = row(&[0.3, -1.0, 2.0, 1.5, -3.0]);
        assert_eq!(
            kept(&apply_top_k(&lp, 2).unwrap()),
            [false, false, true, true, false]
        );
        assert_eq!(
            kept(&apply_top_k(&lp, 1).unwrap()),
            [false, false, true, false, false]
        );
        for k in [0, 5, 6, usize::MAX] {
            assert_eq!(kept(&apply_top_k(&lp, k).unwrap()), [true; 5], "k = {k}");
        }
    }

    #[test]
    fn filters_work_row_by_row() {
        let lp = Array::from_slice(&[0.0f32, -1.0, -2.0, -5.0, -0.5, 0.0], &[2, 3]).unwrap();
        assert_eq!(
            kept(&apply_top_k(&lp, 1).unwrap()),
            [true, false, false, false, false, true]
        );
        assert_eq!(
            kept(&apply_min_p(&lp, 0.5).unwrap()),
            [true, false, false, false, true, true]
        );
    }
}
