//! Random numbers from explicit keys (MLX's counter-based threefry
//! generator), so a seed reproduces the same draws on every run.

use crate::array::call_array;
use crate::error::Result;
use crate::{Array, Dtype};

fn opt(key: Option<&Array>) -> crate::ffi::Handle {
    key.map_or(std::ptr::null(), Array::as_ptr)
}

/// A key (shape `[2]`, `u32`) for `seed`.
pub fn key(seed: u64) -> Result<Array> {
    call_array!(mlxs_random_key(seed))
}

/// `num` independent keys derived from `key` (shape `[num, 2]`).
pub fn split(key: &Array, num: i32) -> Result<Array> {
    call_array!(mlxs_random_split(key.as_ptr(), num))
}

/// Samples indices from the unnormalized log-probabilities `logits` along
/// `axis`. Without a key, MLX's global generator is used.
pub fn categorical(logits: &Array, axis: i32, key: Option<&Array>) -> Result<Array> {
    call_array!(mlxs_random_categorical(logits.as_ptr(), axis, opt(key)))
}

/// Uniform samples in `[0, 1)`.
pub fn uniform(shape: &[i32], dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    call_array!(mlxs_random_uniform(
        shape.as_ptr(),
        shape.len(),
        dtype as i32,
        opt(key)
    ))
}

/// Standard normal samples.
pub fn normal(shape: &[i32], dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    call_array!(mlxs_random_normal(
        shape.as_ptr(),
        shape.len(),
        dtype as i32,
        opt(key)
    ))
}

/// Standard Gumbel samples.
pub fn gumbel(shape: &[i32], dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    call_array!(mlxs_random_gumbel(
        shape.as_ptr(),
        shape.len(),
        dtype as i32,
        opt(key)
    ))
}
