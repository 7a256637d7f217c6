//! Per-request sampling parameters, their defaults and their checks.
//!
//! Defaults are OpenAI's (temperature 1, top_p 1, no penalties), not
//! mlx-lm's `make_sampler` defaults (temperature 0): a request that says
//! nothing samples from the model's distribution, as with OpenAI's API.

use crate::error::{EngineError, Result};

/// The most alternatives a request may ask for per token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// The largest presence or frequency penalty in either direction (OpenAI's
/// range is `[-2, 2]`).
pub const MAX_OCCURRENCE_PENALTY: f32 = 2.0;

/// The largest logit bias in either direction (OpenAI's range is
/// `[-100, 100]`).
pub const MAX_LOGIT_BIAS: f32 = 100.0;

/// How one request picks its tokens.
///
/// Order of application, as mlx-lm's `generate_step` does it: logit bias,
/// repetition penalty, presence/frequency penalties on the last position's
/// logits; then `logprobs = logits - logsumexp(logits)`; then either the
/// argmax (temperature 0) or the filters top_p → min_p → top_k and a
/// Gumbel-max draw from `logprobs / temperature` (a categorical draw).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; `0` picks the most likely token (greedy) and
    /// ignores the filters and the seed. Default `1`.
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens whose mass reaches
    /// `top_p`, in `(0, 1]`; `1` is off (the default).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens; `0` (the default), or a value
    /// at least the vocabulary size, is off.
    pub top_k: u32,
    /// Drop tokens less likely than `min_p` times the most likely one, in
    /// `[0, 1]`; `0` is off (the default).
    pub min_p: f32,
    /// Sign-aware multiplicative penalty on recently seen tokens (mlx-lm's
    /// `make_repetition_penalty`): positive logits are divided by it,
    /// negative ones multiplied. `1` is off (the default); must be `> 0`.
    pub repetition_penalty: f32,
    /// How many of the latest tokens (prompt included) the repetition
    /// penalty looks at; at least 1. Default 20, as in mlx-lm.
    pub repetition_context_size: usize,
    /// OpenAI presence penalty in `[-2, 2]`: subtracted once from the logit
    /// of every token generated so far (prompt tokens do not count).
    pub presence_penalty: f32,
    /// OpenAI frequency penalty in `[-2, 2]`: subtracted from a token's
    /// logit once per time it was generated so far.
    pub frequency_penalty: f32,
    /// `(token id, bias)` pairs added to the logits, each bias in
    /// `[-100, 100]`; biases of a repeated id add up.
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of the request's random draws; `None` draws one from the
    /// operating system's randomness.
    pub seed: Option<u64>,
    /// Report the chosen token's log-probability.
    pub logprobs: bool,
    /// Also report this many most likely alternatives (at most
    /// [`MAX_TOP_LOGPROBS`]; needs `logprobs`).
    pub top_logprobs: u32,
    /// How many of the prompt's last tokens this sequence generated itself
    /// (`0` for a new request): a request resumed after an interruption
    /// carries its earlier tokens as the end of its prompt. The sampler
    /// starts at that token index (the random key of draw `i` depends only
    /// on the seed and `i`), and the presence and frequency penalties
    /// count those tokens as generated. Must be less than the prompt's
    /// length.
    pub generated: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repetition_context_size: 20,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            logprobs: false,
            top_logprobs: 0,
            generated: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: the most likely token every step.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        }
    }

    /// Whether tokens are picked by argmax rather than drawn.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks every field against its range and the token ids against a
    /// vocabulary of `vocab_size` entries (the width of the model's logits).
    pub fn validate(&self, vocab_size: usize) -> Result<()> {
        if vocab_size == 0 {
            return invalid("the vocabulary is empty".to_owned());
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return invalid(format!(
                "temperature must be a finite number >= 0 (0 for greedy), got {}",
                self.temperature
            ));
        }
        if self.temperature > 0.0 && !((1.0 / f64::from(self.temperature)) as f32).is_finite() {
            return invalid(format!(
                "temperature {} is too small to divide by; use 0 for greedy decoding",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return invalid(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return invalid(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return invalid(format!(
                "repetition_penalty must be a finite number > 0 (1 is off), got {}",
                self.repetition_penalty
            ));
        }
        if self.repetition_context_size == 0 || i32::try_from(self.repetition_context_size).is_err()
        {
            return invalid(format!(
                "repetition_context_size must be in [1, {}], got {}",
                i32::MAX,
                self.repetition_context_size
            ));
        }
        for (name, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if value.is_nan() || value.abs() > MAX_OCCURRENCE_PENALTY {
                return invalid(format!(
                    "{name} must be in [-{MAX_OCCURRENCE_PENALTY}, {MAX_OCCURRENCE_PENALTY}], got {value}"
                ));
            }
        }
        for &(token, bias) in &self.logit_bias {
            if usize::try_from(token).map_or(true, |t| t >= vocab_size) {
                return invalid(format!(
                    "logit_bias names token {token}, but the vocabulary has {vocab_size} tokens"
                ));
            }
            if bias.is_nan() || bias.abs() > MAX_LOGIT_BIAS {
                return invalid(format!(
                    "logit_bias for token {token} must be in [-{MAX_LOGIT_BIAS}, {MAX_LOGIT_BIAS}], got {bias}"
                ));
            }
        }
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return invalid(format!(
                "top_logprobs must be at most {MAX_TOP_LOGPROBS}, got {}",
                self.top_logprobs
            ));
        }
        if self.top_logprobs > 0 && !self.logprobs {
            return invalid("top_logprobs needs logprobs to be true".to_owned());
        }
        Ok(())
    }
}

fn invalid(message: String) -> Result<()> {
    Err(EngineError::InvalidRequest(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOCAB: usize = 100;

    fn rejected(params: SamplingParams, needle: &str) {
        match params.validate(VOCAB) {
            Err(EngineError::InvalidRequest(msg)) => {
                assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}")
            }
            other => panic!("{params:?} gave {other:?}, expected a rejection naming {needle}"),
        }
    }

    #[test]
    fn defaults_are_openai_defaults_and_valid() {
        let p = SamplingParams::default();
        assert_eq!(
            (p.temperature, p.top_p, p.top_k, p.min_p),
            (1.0, 1.0, 0, 0.0)
        );
        assert_eq!(p.repetition_penalty, 1.0);
        assert_eq!(p.repetition_context_size, 20);
        assert!(!p.is_greedy());
        assert!(SamplingParams::greedy().is_greedy());
        p.validate(VOCAB).unwrap();
        SamplingParams::greedy().validate(VOCAB).unwrap();
    }

    #[test]
    fn boundary_values_are_accepted() {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 1_000_000,
            min_p: 1.0,
            repetition_penalty: 0.01,
            repetition_context_size: 1,
            presence_penalty: -2.0,
            frequency_penalty: 2.0,
            logit_bias: vec![(0, -100.0), (99, 100.0), (99, 1.0)],
            seed: Some(u64::MAX),
            logprobs: true,
            top_logprobs: 20,
            generated: 4096,
        }
        .validate(VOCAB)
        .unwrap();
    }

    #[test]
    fn out_of_range_values_are_rejected_with_the_field_name() {
        let d = SamplingParams::default;
        rejected(
            SamplingParams {
                temperature: -0.1,
                ..d()
            },
            "temperature",
        );
        rejected(
            SamplingParams {
                temperature: f32::NAN,
                ..d()
            },
            "temperature",
        );
        rejected(
            SamplingParams {
                temperature: f32::INFINITY,
                ..d()
            },
            "temperature",
        );
        rejected(
            SamplingParams {
                temperature: 1e-45,
                ..d()
            },
            "temperature",
        );
        rejected(SamplingParams { top_p: 0.0, ..d() }, "top_p");
        rejected(SamplingParams { top_p: 1.5, ..d() }, "top_p");
        rejected(
            SamplingParams {
                top_p: f32::NAN,
                ..d()
            },
            "top_p",
        );
        rejected(
            SamplingParams {
                min_p: -0.01,
                ..d()
            },
            "min_p",
        );
        rejected(SamplingParams { min_p: 1.01, ..d() }, "min_p");
        rejected(
            SamplingParams {
                min_p: f32::NAN,
                ..d()
            },
            "min_p",
        );
        rejected(
            SamplingParams {
                repetition_penalty: 0.0,
                ..d()
            },
            "repetition_penalty",
        );
        rejected(
            SamplingParams {
                repetition_penalty: -1.0,
                ..d()
            },
            "repetition_penalty",
        );
        rejected(
            SamplingParams {
                repetition_penalty: f32::INFINITY,
                ..d()
            },
            "repetition_penalty",
        );
        rejected(
            SamplingParams {
                repetition_context_size: 0,
                ..d()
            },
            "repetition_context_size",
        );
        rejected(
            SamplingParams {
                presence_penalty: 2.5,
                ..d()
            },
            "presence_penalty",
        );
        rejected(
            SamplingParams {
                presence_penalty: f32::NAN,
                ..d()
            },
            "presence_penalty",
        );
        rejected(
            SamplingParams {
                frequency_penalty: -2.01,
                ..d()
            },
            "frequency_penalty",
        );
        rejected(
            SamplingParams {
                logit_bias: vec![(100, 1.0)],
                ..d()
            },
            "logit_bias",
        );
        rejected(
            SamplingParams {
                logit_bias: vec![(1, 100.5)],
                ..d()
            },
            "logit_bias",
        );
        rejected(
            SamplingParams {
                logit_bias: vec![(1, f32::NAN)],
                ..d()
            },
            "logit_bias",
        );
        rejected(
            SamplingParams {
                logprobs: true,
                top_logprobs: 21,
                ..d()
            },
            "top_logprobs",
        );
        rejected(
            SamplingParams {
                top_logprobs: 3,
                ..d()
            },
            "top_logprobs",
        );
        match d().validate(0) {
            Err(EngineError::InvalidRequest(msg)) => assert!(msg.contains("vocabulary")),
            other => panic!("an empty vocabulary gave {other:?}"),
        }
    }
}
