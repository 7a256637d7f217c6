//! Logit processors with their device-side state: logit bias, mlx-lm's
//! repetition penalty over a window of recent tokens, and OpenAI's presence
//! and frequency penalties over a per-token count of generated tokens.
//!
//! Each works on `[rows, vocab]` logits along the last axis. The state is
//! kept as MLX arrays updated from the lazily sampled token, so recording a
//! token never waits for the device.

use mlx::{Array, Dtype};

use crate::error::{EngineError, Result};

/// A token as a `[1, 1]` index array (the layout `take_along_axis` and
/// `put_along_axis` want for one row).
fn as_index(token: &Array) -> Result<Array> {
    Ok(token.reshape(&[1, 1])?)
}

/// Additive per-token biases (mlx-lm's `logit_bias` processor), gathered
/// and scattered back rather than added as a dense vocabulary-wide row.
#[derive(Clone)]
pub(crate) struct LogitBias {
    /// `[1, n]` distinct token ids.
    ids: Array,
    /// `[1, n]` biases, f32.
    values: Array,
}

impl LogitBias {
    /// `None` when there is nothing to add. Repeated ids have their biases
    /// summed, as mlx-lm's scatter-add accumulates them.
    pub(crate) fn new(bias: &[(u32, f32)]) -> Result<Option<LogitBias>> {
        let mut merged: Vec<(u32, f32)> = Vec::with_capacity(bias.len());
        for &(id, value) in bias {
            match merged.iter_mut().find(|(seen, _)| *seen == id) {
                Some(entry) => entry.1 += value,
                None => merged.push((id, value)),
            }
        }
        if merged.is_empty() {
            return Ok(None);
        }
        let n = i32::try_from(merged.len())
            .map_err(|_| EngineError::InvalidRequest("logit_bias has too many entries".into()))?;
        let ids: Vec<u32> = merged.iter().map(|b| b.0).collect();
        let values: Vec<f32> = merged.iter().map(|b| b.1).collect();
        Ok(Some(LogitBias {
            ids: Array::from_slice(&ids, &[1, n])?,
            values: Array::from_slice(&values, &[1, n])?,
        }))
    }

    pub(crate) fn apply(&self, logits: &Array) -> Result<Array> {
        let selected = logits.take_along_axis(&self.ids, -1)?;
        let biased = selected.add(&self.values.astype(logits.dtype())?)?;
        Ok(logits.put_along_axis(&self.ids, &biased, -1)?)
    }
}

/// mlx-lm's `make_repetition_penalty`: for each distinct token among the
/// last `context` tokens (prompt included), a negative logit is multiplied
/// by the penalty and a positive one divided by it.
#[derive(Clone)]
pub(crate) struct RepetitionPenalty {
    penalty: f32,
    context: usize,
    /// The last `len` (at most `context`) tokens, `[len]` u32, lazy.
    window: Option<Array>,
    len: usize,
}

impl RepetitionPenalty {
    /// Starts the window with the last `context` tokens of the prompt.
    pub(crate) fn new(
        penalty: f32,
        context: usize,
        prompt: &[u32],
        vocab: i32,
    ) -> Result<RepetitionPenalty> {
        let tail = &prompt[prompt.len().saturating_sub(context)..];
        if let Some(&bad) = tail.iter().find(|&&t| i64::from(t) >= i64::from(vocab)) {
            return Err(EngineError::InvalidRequest(format!(
                "prompt token {bad} is outside the vocabulary of {vocab} tokens"
            )));
        }
        let window = if tail.is_empty() {
            None
        } else {
            let n = i32::try_from(tail.len()).expect("the window is at most i32::MAX (validated)");
            Some(Array::from_slice(tail, &[n])?)
        };
        Ok(RepetitionPenalty {
            penalty,
            context,
            window,
            len: tail.len(),
        })
    }

    /// Appends a (lazy, `[1]` u32) token and drops the oldest beyond the
    /// window.
    pub(crate) fn push(&mut self, token: &Array) -> Result<()> {
        let joined = match &self.window {
            Some(window) => mlx::concatenate(&[window, token], 0)?,
            None => token.clone(),
        };
        self.len += 1;
        self.window = Some(if self.len > self.context {
            self.len = self.context;
            let stop = i32::try_from(self.context + 1).expect("validated window size");
            joined.slice_axis(0, 1, stop)?
        } else {
            joined
        });
        Ok(())
    }

    pub(crate) fn apply(&self, logits: &Array) -> Result<Array> {
        let Some(window) = &self.window else {
            return Ok(logits.clone());
        };
        let ids = window.reshape(&[1, -1])?;
        let selected = logits.take_along_axis(&ids, -1)?;
        let penalty = logits.scalar_like(self.penalty)?;
        let penalized = mlx::where_(
            &selected.less(&logits.scalar_like(0.0)?)?,
            &selected.multiply(&penalty)?,
            &selected.divide(&penalty)?,
        )?;
        Ok(logits.put_along_axis(&ids, &penalized, -1)?)
    }
}

/// OpenAI's presence and frequency penalties: each logit loses
/// `presence * (n > 0) + frequency * n`, where `n` counts the token among
/// the tokens generated so far (not the prompt, and without a window).
#[derive(Clone)]
pub(crate) struct OccurrencePenalty {
    presence: f32,
    frequency: f32,
    /// `[1, vocab]` f32 counts.
    counts: Array,
}

impl OccurrencePenalty {
    /// Starts the counts with `generated`, the tokens the sequence
    /// generated before it was resumed (empty for a new one).
    pub(crate) fn new(
        presence: f32,
        frequency: f32,
        generated: &[u32],
        vocab: i32,
    ) -> Result<OccurrencePenalty> {
        let counts = if generated.is_empty() {
            mlx::zeros(&[1, vocab], Dtype::F32)?
        } else {
            let width = usize::try_from(vocab).map_err(|_| {
                EngineError::InvalidRequest(format!("a vocabulary of {vocab} tokens"))
            })?;
            let mut counts = vec![0.0f32; width];
            for &t in generated {
                let slot = counts.get_mut(t as usize).ok_or_else(|| {
                    EngineError::InvalidRequest(format!(
                        "generated token {t} is outside the vocabulary of {vocab} tokens"
                    ))
                })?;
                *slot += 1.0;
            }
            Array::from_slice(&counts, &[1, vocab])?
        };
        Ok(OccurrencePenalty {
            presence,
            frequency,
            counts,
        })
    }

    /// Counts one more occurrence of a (lazy, `[1]` u32) token.
    pub(crate) fn push(&mut self, token: &Array) -> Result<()> {
        let idx = as_index(token)?;
        let one = Array::scalar(1.0f32)?;
        let bumped = self.counts.take_along_axis(&idx, -1)?.add(&one)?;
        self.counts = self.counts.put_along_axis(&idx, &bumped, -1)?;
        Ok(())
    }

    pub(crate) fn apply(&self, logits: &Array) -> Result<Array> {
        let zero = Array::scalar(0.0f32)?;
        let penalty = mlx::where_(
            &self.counts.greater(&zero)?,
            &self
                .counts
                .multiply(&Array::scalar(self.frequency)?)?
                .add(&Array::scalar(self.presence)?)?,
            &zero,
        )?;
        Ok(logits.subtract(&penalty.astype(logits.dtype())?)?)
    }
}
