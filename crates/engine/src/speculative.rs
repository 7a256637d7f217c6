//! Speculative decoding: a cheap drafter proposes the next few tokens of a
//! sequence, the model checks them all in one forward pass, and every
//! proposed token it agrees with is a token gained for that pass.
//!
//! Two drafters ([`Drafter`]):
//! - **Prompt lookup**: the last 3, else 2, else 1 tokens of the sequence
//!   (prompt and output) are looked up earlier in it, and the tokens that
//!   followed their latest earlier occurrence are proposed. Free, and good
//!   where output repeats its input (code edits, quoting, extraction).
//! - **Draft model**: a small model with the same vocabulary, run greedily
//!   for `k` steps on a cache of its own per sequence, cut back to the
//!   tokens kept after each verification.
//!
//! Both propose deterministically (the proposal is a function of the
//! sequence so far), so the proposal distribution `q` is one-hot on the
//! drafted token `x`, and the speculative sampling rule (Leviathan et al.,
//! Chen et al. 2023: accept with probability `min(1, p(x)/q(x))`, on
//! rejection draw from `norm(max(0, p - q))`) becomes: accept `x` with
//! probability `p(x)`, on rejection draw from `p` without `x`. The
//! verification realizes it with the draw normal decoding makes: at each
//! position the sequence's sampler draws `y` from `p` exactly as it would
//! without speculation (same processors, same per-token-index key), `x` is
//! accepted when `y == x` (probability `p(x)`), and otherwise `y` is the
//! token emitted, which is a draw from `p` conditioned on not being `x`.
//! After a fully accepted draft the last position's draw is the bonus
//! token. So the output has the distribution of normal decoding, greedy
//! output is the same tokens, and a seeded request gives the text it gives
//! without speculation (up to the rounding of a many-token forward pass,
//! which can flip a near tie, as batching can).
//!
//! The verification pass needs the positions of rejected tokens taken out
//! of the cache again: attention caches can be cut back, a linear-attention
//! layer's recurrent state cannot, so a model with recurrent layers (target
//! or draft) does not speculate ([`Speculation::check`]).

use crate::error::{EngineError, Result};
use crate::model::Model;

/// Where draft tokens come from.
#[derive(Clone, Copy)]
pub enum Drafter<'m> {
    /// n-gram lookup in the sequence itself.
    PromptLookup,
    /// A small model sharing the target's vocabulary, decoded greedily.
    Model(&'m Model),
}

/// How a scheduler speculates.
#[derive(Clone, Copy)]
pub struct Speculation<'m> {
    pub drafter: Drafter<'m>,
    /// Draft tokens per step at most (the adaptive length starts here).
    pub num_draft_tokens: usize,
    /// Speculate only while the batch has at most this many rows; a larger
    /// batch decodes normally, since it already keeps the device busy and
    /// verifying drafts of many rows would cost more than it saves.
    pub max_batch: usize,
}

/// The default of [`Speculation::max_batch`]: on a GPU a decode step of
/// up to a few rows costs about what one row costs (reading the weights
/// dominates), so verifying drafts there is nearly free; beyond that the
/// extra positions start to cost compute.
pub const DEFAULT_MAX_BATCH: usize = 4;

/// The default of [`Speculation::num_draft_tokens`].
pub const DEFAULT_DRAFT_TOKENS: usize = 4;

/// Draft tokens per step at most.
pub const MAX_DRAFT_TOKENS: usize = 32;

impl<'m> Speculation<'m> {
    /// Checks that `target` can speculate this way: both models cut back
    /// their caches (attention layers only), the draft model has the
    /// target's vocabulary, and the lengths are in range.
    pub fn check(&self, target: &Model) -> Result<()> {
        if !(1..=MAX_DRAFT_TOKENS).contains(&self.num_draft_tokens) {
            return Err(EngineError::Config(format!(
                "num_draft_tokens must be 1 to {MAX_DRAFT_TOKENS}, got {}",
                self.num_draft_tokens
            )));
        }
        if self.max_batch == 0 {
            return Err(EngineError::Config(
                "the speculative batch limit must be positive".into(),
            ));
        }
        if !target.trimmable() {
            return Err(EngineError::Config(format!(
                "{} has recurrent (linear-attention) layers, whose state cannot be rolled back \
                 past rejected draft tokens: speculative decoding is not supported for it",
                target.config.model_type
            )));
        }
        if let Drafter::Model(draft) = self.drafter {
            if !draft.trimmable() {
                return Err(EngineError::Config(format!(
                    "the draft model ({}) has recurrent layers: it cannot be rolled back",
                    draft.config.model_type
                )));
            }
            if draft.config.vocab_size != target.config.vocab_size {
                return Err(EngineError::Config(format!(
                    "the draft model's vocabulary ({} tokens) differs from the model's ({})",
                    draft.config.vocab_size, target.config.vocab_size
                )));
            }
        }
        Ok(())
    }
}

/// Draft tokens of a sequence: proposed and verified, and of those the
/// ones the model accepted (the tokens speculation gained).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecCounts {
    pub drafted: usize,
    pub accepted: usize,
}

/// Up to `k` tokens that followed the latest earlier occurrence of the
/// last `n` tokens of `ids`, for `n` = 3, 2, 1 (the first that matches).
/// Empty when nothing matches.
pub fn prompt_lookup(ids: &[u32], k: usize) -> Vec<u32> {
    if k == 0 {
        return Vec::new();
    }
    for n in (1..=3usize).rev() {
        if ids.len() <= n {
            continue;
        }
        let tail = &ids[ids.len() - n..];
        // The latest start before the tail's own that has a token after it.
        let found = (0..ids.len() - n).rev().find(|&i| &ids[i..i + n] == tail);
        if let Some(i) = found {
            let from = i + n;
            let to = (from + k).min(ids.len());
            return ids[from..to].to_vec();
        }
    }
    Vec::new()
}

/// The next draft length of a sequence after a verification of `drafted`
/// tokens of which `accepted` were kept: longer (by 2) while every token
/// is accepted, shorter (by 1) on a rejection, within `1..=max`.
pub fn next_draft_len(current: usize, drafted: usize, accepted: usize, max: usize) -> usize {
    if drafted == 0 {
        return current.clamp(1, max);
    }
    let next = if accepted == drafted {
        current + 2
    } else {
        current.saturating_sub(1)
    };
    next.clamp(1, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_lookup_proposes_what_followed_the_longest_recent_match() {
        // "1 2 3" occurred at 0 and 4: the later one's continuation.
        let ids = [1, 2, 3, 7, 1, 2, 3, 8, 9, 5, 1, 2, 3];
        assert_eq!(prompt_lookup(&ids, 2), [8, 9]);
        // Only the last token matches earlier.
        assert_eq!(prompt_lookup(&[4, 6, 9, 4], 3), [6, 9, 4]);
        // The continuation is cut at the sequence's end.
        assert_eq!(prompt_lookup(&[5, 6, 5], 4), [6, 5]);
        assert!(prompt_lookup(&[1, 2, 3], 4).is_empty());
        assert!(prompt_lookup(&[1, 1], 0).is_empty());
    }

    #[test]
    fn the_draft_length_follows_acceptance() {
        assert_eq!(next_draft_len(4, 4, 4, 8), 6);
        assert_eq!(next_draft_len(7, 7, 7, 8), 8);
        assert_eq!(next_draft_len(4, 4, 1, 8), 3);
        assert_eq!(next_draft_len(1, 1, 0, 8), 1);
        assert_eq!(next_draft_len(3, 0, 0, 8), 3);
    }
}
