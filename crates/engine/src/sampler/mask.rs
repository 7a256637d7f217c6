//! Token masks on the device: a grammar's allowed set applied to a row's
//! logits before the sampler sees them, as llama.cpp and mistral.rs apply
//! llguidance's mask (a disallowed token's logit becomes `-inf`, so no
//! filter, penalty or draw can pick it and its probability is 0).

use mlx::Array;

use crate::error::{EngineError, Result};

/// `logits` (`[1, vocab]`) with every entry whose flag in `allowed` is
/// false set to `-inf`. Lazy; the flags travel to the device as one byte
/// per token.
pub fn mask_logits(logits: &Array, allowed: &[bool]) -> Result<Array> {
    let vocab = logits.shape().last().copied().unwrap_or(0);
    if usize::try_from(vocab).ok() != Some(allowed.len()) {
        return Err(EngineError::InvalidRequest(format!(
            "a mask of {} tokens for logits of shape {:?}",
            allowed.len(),
            logits.shape()
        )));
    }
    let mask = Array::from_slice(allowed, &[1, vocab])?;
    let blocked = logits.scalar_like(f32::NEG_INFINITY)?;
    Ok(mlx::where_(&mask, logits, &blocked)?)
}
