//! The decode loop of one sequence, as mlx-lm's `generate_step`
//! (`mlx_lm/generate.py`): the prompt is prefilled in chunks (all but its
//! last token, evaluating only the KV cache), then each step runs the model
//! on the previous token and samples the next on the device. The graph of
//! step N+1 is built from step N's still-lazy token and scheduled with
//! `async_eval` *before* step N's token is read, so building a step on the
//! host overlaps the device computing the previous one.

use std::time::{Duration, Instant};

use mlx::Array;

use crate::error::{EngineError, Result};
use crate::model::{Cache, Model};
use crate::sampler::{Sampled, SampledToken, Sampler};

/// How a generation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Tokens to generate at most.
    pub max_tokens: usize,
    /// Prompt tokens per prefill chunk; bounds the attention scores of a
    /// long prompt to `prefill_step × prompt` instead of `prompt²`.
    pub prefill_step: usize,
    /// Return MLX's buffer cache to the system every this many tokens.
    pub clear_cache_every: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            prefill_step: 2048,
            clear_cache_every: 256,
        }
    }
}

/// Counts and timings of a generation so far.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// From the start of prefill until the first token was read.
    pub prefill: Duration,
    /// From the first token until the last one was read.
    pub decode: Duration,
    /// Where the host spent decode: building the steps' graphs...
    pub host_build: Duration,
    /// ...handing them to MLX (`async_eval`: encoding and launching the
    /// kernels)...
    pub host_dispatch: Duration,
    /// ...and waiting for the device to finish the token being read. Wait
    /// near zero means the host, not the device, sets the pace.
    pub host_wait: Duration,
    /// Decode steps those times cover: every step after the first token's
    /// (each built and dispatched, then waited for).
    pub host_steps: usize,
}

impl GenerationStats {
    /// Prompt tokens processed per second (time to first token included).
    pub fn prefill_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill.as_secs_f64().max(1e-9)
    }

    /// Tokens generated per second after the first.
    pub fn decode_tps(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode.as_secs_f64().max(1e-9)
    }
}

/// A running generation; yields tokens until `max_tokens` (the caller stops
/// earlier on EOS or a stop sequence by dropping it).
pub struct Generator<'m> {
    model: &'m Model,
    cache: Vec<Cache>,
    sampler: Sampler,
    pending: Option<Sampled>,
    options: GenerateOptions,
    stats: GenerationStats,
    started: Instant,
    first_token_at: Option<Instant>,
    failed: bool,
}

impl<'m> Generator<'m> {
    /// Prefills `prompt` and schedules the first step.
    pub fn new(
        model: &'m Model,
        prompt: &[u32],
        sampler: Sampler,
        options: GenerateOptions,
    ) -> Result<Generator<'m>> {
        let Some((&last, head)) = prompt.split_last() else {
            return Err(EngineError::InvalidRequest("the prompt is empty".into()));
        };
        if options.prefill_step == 0 {
            return Err(EngineError::InvalidRequest(
                "prefill_step must be positive".into(),
            ));
        }
        let mut generator = Generator {
            model,
            cache: model.new_cache(),
            sampler,
            pending: None,
            options,
            stats: GenerationStats {
                prompt_tokens: prompt.len(),
                ..GenerationStats::default()
            },
            started: Instant::now(),
            first_token_at: None,
            failed: false,
        };
        for chunk in head.chunks(options.prefill_step) {
            model.fill_cache(&row(chunk)?, &mut generator.cache)?;
            let state: Vec<&Array> = generator.cache.iter().flat_map(Cache::state).collect();
            mlx::eval(&state)?;
            mlx::memory::clear_cache();
        }
        if options.max_tokens > 0 {
            let first = generator.step(&row(&[last])?)?;
            mlx::async_eval(&first.arrays())?;
            generator.pending = Some(first);
        }
        Ok(generator)
    }

    /// Runs the model on `input` (`[1, L]`) and samples from its last position.
    fn step(&mut self, input: &Array) -> Result<Sampled> {
        let logits = self.model.forward(input, &mut self.cache)?;
        let len = logits.dim(1)?;
        let last = if len == 1 {
            logits.squeeze(1)?
        } else {
            logits.slice_axis(1, len - 1, len)?.squeeze(1)?
        };
        self.sampler.sample(&last)
    }

    /// Reads the pending token after scheduling the step that follows it.
    fn advance(&mut self) -> Result<Option<SampledToken>> {
        let Some(current) = self.pending.take() else {
            return Ok(None);
        };
        let begin = Instant::now();
        let mut dispatched = begin;
        if self.stats.generated_tokens + 1 < self.options.max_tokens {
            self.sampler.accept(&current.token)?;
            let next = self.step(&current.token.reshape(&[1, 1])?)?;
            let built = Instant::now();
            mlx::async_eval(&next.arrays())?;
            dispatched = Instant::now();
            self.pending = Some(next);
            self.stats.host_build += built - begin;
            self.stats.host_dispatch += dispatched - built;
            self.stats.host_steps += 1;
        }
        let read = current.read()?;
        let now = Instant::now();
        if self.first_token_at.is_some() {
            self.stats.host_wait += now - dispatched;
        }
        let first = *self.first_token_at.get_or_insert(now);
        self.stats.prefill = first - self.started;
        self.stats.decode = now - first;
        self.stats.generated_tokens += 1;
        if self.stats.generated_tokens % self.options.clear_cache_every.max(1) == 0 {
            mlx::memory::clear_cache();
        }
        Ok(Some(read))
    }

    /// Counts and timings so far.
    pub fn stats(&self) -> GenerationStats {
        self.stats
    }

    /// Positions in the KV cache (prompt plus tokens fed back).
    pub fn cached_positions(&self) -> i32 {
        self.cache.first().map_or(0, Cache::offset)
    }
}

impl Iterator for Generator<'_> {
    type Item = Result<SampledToken>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.advance() {
            Ok(token) => token.map(Ok),
            Err(e) => {
                self.failed = true;
                self.pending = None;
                Some(Err(e))
            }
        }
    }
}

/// Token ids as a `[1, len]` batch of one.
fn row(ids: &[u32]) -> Result<Array> {
    Ok(Array::from_slice(ids, &[1, ids.len() as i32])?)
}
