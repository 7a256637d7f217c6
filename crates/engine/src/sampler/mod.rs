//! Token sampling on the device, following mlx-lm 0.32.2
//! (`mlx_lm/sample_utils.py`, and how `generate.py::generate_step` calls
//! it): logit processors on the last position's logits, then
//! `logprobs = logits - logsumexp(logits)`, then either the argmax or the
//! filters top_p → min_p → top_k (the order `make_sampler` chains them) and
//! a draw from `logprobs * (1 / temperature)` by the Gumbel-max trick (see
//! *Differences from mlx-lm*).
//!
//! Everything runs in MLX: the vocabulary never leaves the device. Only the
//! chosen token, its log-probability and at most [`MAX_TOP_LOGPROBS`]
//! alternatives are copied to the host, by [`Sampled::read`].
//!
//! # Pipelining
//! [`Sampler::sample`] and [`Sampler::accept`] only build graph: the engine
//! can feed step N's lazy token into step N+1 (the model input and
//! `accept`), `async_eval` step N+1, and only then read step N's token, as
//! mlx-lm's `generate_step` does. The penalty state (a window of recent
//! tokens, a per-token count) lives in MLX arrays derived from those lazy
//! tokens.
//!
//! # Randomness
//! Each sequence owns a key, `random::key(seed)`. Every sampling step
//! splits it in two, keeps the first half as the next key and draws with
//! the second, so the draws are a pure function of (seed, step): the key
//! sequence of MLX's global generator after `mx.random.seed(seed)`.
//! Greedy decoding draws nothing.
//!
//! A sequence resumed at token index `k` (its first `k` generated tokens
//! at the end of its prompt, [`SamplingParams::generated`]) starts from the
//! key of step `k`, the seed's key split `k` times, so it draws what the
//! uninterrupted sequence would have drawn from there on. Prefilling those
//! `k` tokens gives their keys and values to rounding (about 1e-5), not bit
//! for bit, so a draw in a near-tie may still differ; a sampler that
//! [replays](Sampler::replaying) them instead picks them at its first `k`
//! steps, through the same decode steps as the uninterrupted sequence, and
//! continues exactly.
//!
//! # Differences from mlx-lm
//! - The draw is `argmax(scaled + gumbel(key))` over the vocabulary, where
//!   mlx-lm calls `mx.random.categorical`, which in MLX 0.32 inverts the
//!   cumulative distribution at one uniform. Both follow the same
//!   distribution, but the inverse CDF is fragile: the cumulative sum over
//!   the vocabulary moves by about 1e-6 when the logits do (and they do, by
//!   rounding, when a sequence shares its batch with others), and a draw
//!   landing in the long tail, where tokens hold 1e-6 each, then picks a
//!   neighbouring token. The Gumbel-max pick changes only when the two best
//!   perturbed logits are that close, so a seeded request gives the same
//!   text alone, in any batch, and resumed after its worker crashed.
//! - Presence and frequency penalties follow OpenAI: they count the tokens
//!   generated so far, without a window and without the prompt (mlx-lm
//!   counts the last 20 tokens, prompt included).
//! - A `top_k` of at least the vocabulary size is "off" rather than an error.
//!
//! # Batching
//! A [`Sampler`] is one sequence's state and takes `[1, vocab]` logits: row
//! 0 is its sequence. Every op works along the last axis with kept
//! dimensions, so a batched sampler stacks the per-sequence state (keys
//! `[B, 2]`, windows, counts `[B, vocab]`) and maps row `b` of `[B, vocab]`
//! logits to sequence `b`.

mod filters;
mod mask;
mod params;
mod penalties;

use std::hash::BuildHasher;

use mlx::{Array, Dtype};

use crate::error::{EngineError, Result};

pub use filters::{apply_min_p, apply_top_k, apply_top_p};
pub use mask::mask_logits;
pub use params::{MAX_LOGIT_BIAS, MAX_OCCURRENCE_PENALTY, MAX_TOP_LOGPROBS, SamplingParams};
use penalties::{LogitBias, OccurrencePenalty, RepetitionPenalty};

/// One sequence's sampler: its parameters, random key and penalty state.
/// A clone is a snapshot (its arrays are shared, never written): the
/// speculative step samples draft positions on a clone and keeps the one
/// at the position where the sequence goes on.
#[derive(Clone)]
pub struct Sampler {
    params: SamplingParams,
    vocab: i32,
    seed: u64,
    /// The next step's key; `None` when greedy.
    key: Option<Array>,
    bias: Option<LogitBias>,
    repetition: Option<RepetitionPenalty>,
    occurrences: Option<OccurrencePenalty>,
    /// Tokens the next steps pick whatever they draw (a replay).
    forced: std::collections::VecDeque<u32>,
}

/// The lazy result of one sampling step. Evaluate [`Sampled::arrays`]
/// (with `mlx::async_eval` to overlap the next step) before [`Sampled::read`].
#[derive(Debug, Clone)]
pub struct Sampled {
    /// `[1]` u32: the chosen token.
    pub token: Array,
    /// `[1, vocab]`: log-softmax of the processed logits (before the
    /// filters and the temperature), in the logits' dtype.
    pub logprobs: Array,
    /// `[1]` f32: the chosen token's entry of `logprobs`, when the request
    /// asked for logprobs.
    pub token_logprob: Option<Array>,
    /// `([1, k] u32 ids, [1, k] f32 logprobs)`, most likely first, when
    /// the request asked for `k = top_logprobs > 0` alternatives (`k` is
    /// capped at the vocabulary size).
    pub top: Option<(Array, Array)>,
}

/// A sampled token as read on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    pub token: u32,
    /// Present when the request asked for logprobs.
    pub logprobs: Option<TokenLogprobs>,
}

/// The log-probabilities reported with a token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// The chosen token's log-probability.
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, most likely
    /// first (empty unless `top_logprobs > 0`).
    pub top: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler for one request over logits of width `vocab_size`. The
    /// repetition window starts with the prompt's last
    /// `repetition_context_size` tokens, as mlx-lm passes prompt and
    /// generated tokens to its processors. Without a seed one is drawn from
    /// the operating system's randomness (see [`Sampler::seed`]).
    ///
    /// A resumed sequence (`params.generated > 0`) starts at that token
    /// index: its key is the seed's after that many steps, and its
    /// presence/frequency counts hold the prompt's last `generated` tokens.
    pub fn new(params: SamplingParams, vocab_size: usize, prompt: &[u32]) -> Result<Sampler> {
        params.validate(vocab_size)?;
        let vocab = i32::try_from(vocab_size).map_err(|_| {
            EngineError::InvalidRequest(format!("a vocabulary of {vocab_size} is too large"))
        })?;
        if params.generated > 0 && params.generated >= prompt.len() {
            return Err(EngineError::InvalidRequest(format!(
                "a resumed sequence's prompt of {} tokens must hold more than its {} generated tokens",
                prompt.len(),
                params.generated
            )));
        }
        let seed = params.seed.unwrap_or_else(os_seed);
        let key = if params.is_greedy() {
            None
        } else {
            Some(key_at(seed, params.generated)?)
        };
        let bias = LogitBias::new(&params.logit_bias)?;
        let repetition = if params.repetition_penalty != 1.0 {
            Some(RepetitionPenalty::new(
                params.repetition_penalty,
                params.repetition_context_size,
                prompt,
                vocab,
            )?)
        } else {
            None
        };
        let occurrences = if params.presence_penalty != 0.0 || params.frequency_penalty != 0.0 {
            Some(OccurrencePenalty::new(
                params.presence_penalty,
                params.frequency_penalty,
                &prompt[prompt.len() - params.generated..],
                vocab,
            )?)
        } else {
            None
        };
        Ok(Sampler {
            params,
            vocab,
            seed,
            key,
            bias,
            repetition,
            occurrences,
            forced: std::collections::VecDeque::new(),
        })
    }

    /// Makes the next `tokens.len()` steps pick `tokens`, in order, each
    /// step otherwise as usual (the key advances, the penalties count the
    /// token once accepted): a sequence resumed by decoding its earlier
    /// output again. Needs a sampler at token index 0
    /// (`SamplingParams::generated == 0`).
    pub fn replaying(mut self, tokens: &[u32]) -> Result<Sampler> {
        if self.params.generated > 0 {
            return Err(EngineError::InvalidRequest(
                "a replaying sampler starts at token index 0".into(),
            ));
        }
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| i64::from(t) >= i64::from(self.vocab))
        {
            return Err(EngineError::InvalidRequest(format!(
                "replayed token {bad} is outside the vocabulary of {} tokens",
                self.vocab
            )));
        }
        self.forced.extend(tokens);
        Ok(self)
    }

    /// Replayed tokens still to pick.
    pub fn replay_left(&self) -> usize {
        self.forced.len()
    }

    /// The request's parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The seed of this sequence's draws (the request's, or the one drawn
    /// for it); unused when greedy.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The logits after the bias and penalties, in mlx-lm's order: logit
    /// bias, repetition penalty, presence/frequency penalties. Lazy.
    pub fn process_logits(&self, logits: &Array) -> Result<Array> {
        self.check_logits(logits)?;
        let mut out = logits.clone();
        if let Some(bias) = &self.bias {
            out = bias.apply(&out)?;
        }
        if let Some(repetition) = &self.repetition {
            out = repetition.apply(&out)?;
        }
        if let Some(occurrences) = &self.occurrences {
            out = occurrences.apply(&out)?;
        }
        Ok(out)
    }

    /// Picks the next token from `logits` (`[1, vocab]`, the last position)
    /// without evaluating anything; advances the random key. Call
    /// [`Sampler::accept`] with the token before the next step.
    pub fn sample(&mut self, logits: &Array) -> Result<Sampled> {
        let processed = self.process_logits(logits)?;
        let logprobs = processed.subtract(&processed.logsumexp(&[-1], true)?)?;
        let (token, next_key) = match &self.key {
            None => (logprobs.argmax(-1, false)?, None),
            Some(key) => {
                let keys = mlx::random::split(key, 2)?;
                let next_key = keys.slice_axis(0, 0, 1)?.reshape(&[2])?;
                let draw_key = keys.slice_axis(0, 1, 2)?.reshape(&[2])?;
                let filtered = self.filter(&logprobs)?;
                // mlx-lm multiplies by `1.0 / temp` computed in double.
                let inv_temp = (1.0 / f64::from(self.params.temperature)) as f32;
                let scaled = filtered.multiply(&filtered.scalar_like(inv_temp)?)?;
                let noise = mlx::random::gumbel(&scaled.shape(), Dtype::F32, Some(&draw_key))?;
                let token = scaled.add(&noise)?.argmax(-1, false)?;
                (token, Some(next_key))
            }
        };
        if next_key.is_some() {
            self.key = next_key;
        }
        let token = match self.forced.pop_front() {
            Some(forced) => Array::from_slice(&[forced], &[1])?,
            None => token,
        };
        let token = if token.dtype() == Dtype::U32 {
            token
        } else {
            token.astype(Dtype::U32)?
        };
        let token_logprob = if self.params.logprobs {
            let idx = token.reshape(&[1, 1])?;
            Some(
                logprobs
                    .take_along_axis(&idx, -1)?
                    .reshape(&[1])?
                    .astype(Dtype::F32)?,
            )
        } else {
            None
        };
        let top = self.top_logprobs(&logprobs)?;
        Ok(Sampled {
            token,
            logprobs,
            token_logprob,
            top,
        })
    }

    /// Records a token of the sequence (lazy, one element, any integer
    /// dtype; normally `Sampled::token`) in the penalty state. Every
    /// generated token must be accepted, in order, before the next
    /// [`Sampler::sample`].
    pub fn accept(&mut self, token: &Array) -> Result<()> {
        if token.size() != 1 || token.dtype().is_float() || token.dtype() == Dtype::Bool {
            return Err(EngineError::InvalidRequest(format!(
                "accept takes one integer token, got shape {:?} of {:?}",
                token.shape(),
                token.dtype()
            )));
        }
        if self.repetition.is_none() && self.occurrences.is_none() {
            return Ok(());
        }
        let token = token.reshape(&[1])?;
        let token = if token.dtype() == Dtype::U32 {
            token
        } else {
            token.astype(Dtype::U32)?
        };
        if let Some(repetition) = &mut self.repetition {
            repetition.push(&token)?;
        }
        if let Some(occurrences) = &mut self.occurrences {
            occurrences.push(&token)?;
        }
        Ok(())
    }

    /// mlx-lm's `make_sampler` chain: top_p (when `< 1`), min_p (when
    /// `> 0`), top_k (when `> 0`).
    fn filter(&self, logprobs: &Array) -> Result<Array> {
        let p = &self.params;
        let mut out = logprobs.clone();
        if p.top_p < 1.0 {
            out = apply_top_p(&out, p.top_p)?;
        }
        if p.min_p > 0.0 {
            out = apply_min_p(&out, p.min_p)?;
        }
        if p.top_k > 0 {
            out = apply_top_k(&out, p.top_k as usize)?;
        }
        Ok(out)
    }

    /// The `top_logprobs` largest entries, sorted on the device (only `k`
    /// values are ever sorted).
    fn top_logprobs(&self, logprobs: &Array) -> Result<Option<(Array, Array)>> {
        let k = i32::try_from(self.params.top_logprobs)
            .expect("top_logprobs is at most 20 (validated)")
            .min(self.vocab);
        if !self.params.logprobs || k == 0 {
            return Ok(None);
        }
        let negated = logprobs.negative()?;
        let ids = if k < self.vocab {
            negated.argpartition(k - 1, -1)?.slice_axis(-1, 0, k)?
        } else {
            negated.argsort(-1)?
        };
        let values = negated.take_along_axis(&ids, -1)?;
        let order = values.argsort(-1)?;
        let ids = ids.take_along_axis(&order, -1)?.astype(Dtype::U32)?;
        let values = logprobs.take_along_axis(&ids, -1)?.astype(Dtype::F32)?;
        Ok(Some((ids, values)))
    }

    fn check_logits(&self, logits: &Array) -> Result<()> {
        let shape = logits.shape();
        if shape != [1, self.vocab] || !logits.dtype().is_float() {
            return Err(EngineError::InvalidRequest(format!(
                "the sampler takes [1, {}] float logits, got {shape:?} of {:?}",
                self.vocab,
                logits.dtype()
            )));
        }
        Ok(())
    }
}

impl Sampled {
    /// The arrays to evaluate before [`Sampled::read`]: the token and, when
    /// requested, its logprob and the alternatives.
    pub fn arrays(&self) -> Vec<&Array> {
        let mut out = vec![&self.token];
        out.extend(&self.token_logprob);
        if let Some((ids, values)) = &self.top {
            out.push(ids);
            out.push(values);
        }
        out
    }

    /// The token id alone (waits for it).
    pub fn token_id(&self) -> Result<u32> {
        Ok(self.token.item::<u32>()?)
    }

    /// Copies the token and the requested log-probabilities to the host
    /// (waits for them).
    pub fn read(&self) -> Result<SampledToken> {
        let token = self.token_id()?;
        let logprobs = match &self.token_logprob {
            None => None,
            Some(logprob) => {
                let top = match &self.top {
                    None => Vec::new(),
                    Some((ids, values)) => {
                        let ids = ids.to_vec::<u32>()?;
                        let values = values.to_vec::<f32>()?;
                        ids.into_iter().zip(values).collect()
                    }
                };
                Some(TokenLogprobs {
                    logprob: logprob.item::<f32>()?,
                    top,
                })
            }
        };
        Ok(SampledToken { token, logprobs })
    }
}

/// The key of draw `step` for `seed`: `random::key(seed)` split `step`
/// times, the first half kept each time (what [`Sampler::sample`] does once
/// per step). The chain is evaluated every [`KEY_EVAL_EVERY`] splits so
/// that a long resume never builds one deep graph.
fn key_at(seed: u64, step: usize) -> Result<Array> {
    let mut key = mlx::random::key(seed)?;
    for i in 0..step {
        key = mlx::random::split(&key, 2)?
            .slice_axis(0, 0, 1)?
            .reshape(&[2])?;
        if (i + 1) % KEY_EVAL_EVERY == 0 {
            key.eval()?;
        }
    }
    Ok(key)
}

/// Splits of a resumed key per evaluation.
const KEY_EVAL_EVERY: usize = 256;

/// A seed from the operating system's randomness: std's `RandomState`
/// keys its hasher from the OS generator (then varies them per instance).
fn os_seed() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
}
