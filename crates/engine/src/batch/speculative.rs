//! The scheduler's speculative step (the rule is in [`crate::speculative`]).
//!
//! While the batch has at most [`Speculation::max_batch`] rows, none under
//! a grammar or replaying earlier output, a step drafts tokens for every
//! row and verifies them in one forward pass of `[rows, 1 + longest draft]`
//! tokens: each row's last token and its draft, a shorter draft padded
//! with tokens whose results nothing reads. Each row samples its positions
//! in order on a clone of its sampler (the penalties see the draft tokens
//! before them, the key advances once per position), keeps its draft up to
//! the first position whose draw differs, and emits that draw (or, after a
//! fully accepted draft, the last position's draw). The cache then gives
//! back each row's rejected positions ([`BatchCache::trim_rows`]) and the
//! sampler kept is the clone as it stood at the row's last emitted token,
//! so the key of token `i` is always the key normal decoding uses for it.
//!
//! A speculative step needs the tokens so far on the host (to draft), so
//! it reads the step in flight first and is not overlapped with the next:
//! a step whose rows found nothing to draft decodes normally, pipelined,
//! and so do the next [`IDLE_BACKOFF`] steps.
//! A larger batch decodes normally (see [`Speculation::max_batch`]).
//!
//! [`BatchCache::trim_rows`]: crate::model::BatchCache::trim_rows

use std::time::Instant;

use mlx::{Array, Dtype};

use super::{Scheduler, SeqEvent};
use crate::error::{EngineError, Result};
use crate::model::{Cache, Model};
use crate::sampler::{Sampled, Sampler};
use crate::speculative::{Drafter, SpecCounts, Speculation, next_draft_len, prompt_lookup};

/// Prompt tokens a draft model catches up on per pass.
const DRAFT_PREFILL_CHUNK: usize = 2048;

/// Normal steps after a speculative attempt that found nothing to draft,
/// before the next attempt: an attempt reads the step in flight before
/// building the next, so while drafts are rare (prompt lookup on text that
/// does not repeat) most steps keep their overlap.
const IDLE_BACKOFF: u32 = 3;

/// A scheduler's speculation: how, and the normal steps left before the
/// next attempt.
#[derive(Clone, Copy)]
pub(super) struct SpecState<'m> {
    spec: Speculation<'m>,
    backoff: u32,
}

/// A row's speculative state.
#[derive(Default)]
pub(super) struct RowSpec {
    /// The next draft length (0: the configured one).
    k: usize,
    /// The draft model's caches of this sequence: its tokens so far, cut
    /// back after each verification (empty until its first draft).
    draft: Vec<Cache>,
    pub(super) counts: SpecCounts,
}

impl<'m> Scheduler<'m> {
    /// Speculates as `spec` says from now on (see [`crate::speculative`]);
    /// an error for a model that cannot (recurrent layers, a draft model
    /// of another vocabulary).
    pub fn with_speculation(mut self, spec: Speculation<'m>) -> Result<Scheduler<'m>> {
        spec.check(self.model)?;
        self.spec = Some(SpecState { spec, backoff: 0 });
        Ok(self)
    }

    /// Whether the batch as it is speculates.
    fn speculates(&self) -> bool {
        let Some(state) = &self.spec else {
            return false;
        };
        !self.rows.is_empty()
            && self.rows.len() <= state.spec.max_batch
            && self.rows.iter().all(|r| {
                r.ended.is_none() && r.req.constraint.is_none() && r.req.sampler.replay_left() == 0
            })
    }

    /// Runs this step as a speculative one when the batch speculates and
    /// some row has a draft; false when the step is to be a normal one.
    pub(super) fn speculate(&mut self, events: &mut Vec<SeqEvent>) -> Result<bool> {
        let Some(SpecState { spec, backoff }) = self.spec else {
            return Ok(false);
        };
        if !self.speculates() {
            return Ok(false);
        }
        if backoff > 0 {
            self.spec = Some(SpecState {
                spec,
                backoff: backoff - 1,
            });
            return Ok(false);
        }
        if let Some(flight) = self.in_flight.take() {
            self.read(flight, events)?;
            self.remove_ended(events)?;
            if !self.speculates() {
                return Ok(false);
            }
        }
        let begin = Instant::now();
        let mut drafts = Vec::with_capacity(self.rows.len());
        for row in &mut self.rows {
            // The draw after the draft is a token too: room for both.
            let left = row.req.max_tokens.saturating_sub(row.generated);
            let k = match row.spec.k {
                0 => spec.num_draft_tokens,
                k => k,
            }
            .min(left.saturating_sub(1));
            let draft = match spec.drafter {
                _ if k == 0 => Vec::new(),
                Drafter::PromptLookup => prompt_lookup(&row.ids, k),
                Drafter::Model(model) => draft_greedy(model, &mut row.spec.draft, &row.ids, k)?,
            };
            drafts.push(draft);
        }
        if drafts.iter().all(Vec::is_empty) {
            self.spec = Some(SpecState {
                spec,
                backoff: IDLE_BACKOFF,
            });
            return Ok(false);
        }
        self.verify(spec, &drafts, begin, events)?;
        Ok(true)
    }

    /// Verifies `drafts` (one per row) in one pass and emits each row's
    /// accepted tokens and its next draw.
    fn verify(
        &mut self,
        spec: Speculation<'m>,
        drafts: &[Vec<u32>],
        begin: Instant,
        events: &mut Vec<SeqEvent>,
    ) -> Result<()> {
        let rows = self.rows.len();
        let width = 1 + drafts.iter().map(Vec::len).max().unwrap_or(0);
        let mut tokens = Vec::with_capacity(rows * width);
        for (row, draft) in self.rows.iter().zip(drafts) {
            let last = *row.ids.last().ok_or_else(|| {
                EngineError::InvalidRequest("a row without tokens cannot speculate".into())
            })?;
            tokens.push(last);
            tokens.extend_from_slice(draft);
            tokens.resize(tokens.len() + width - 1 - draft.len(), 0);
        }
        let tokens = Array::from_slice(&tokens, &[rows as i32, width as i32])?;
        let logits = self.cache.step_many(self.model, &tokens)?;
        let mut plans: Vec<Vec<(Sampled, Sampler)>> = Vec::with_capacity(rows);
        for (b, (row, draft)) in self.rows.iter_mut().zip(drafts).enumerate() {
            if row.input_generated {
                row.req.sampler.accept(&row.input)?;
                row.input_generated = false;
            }
            let b = b as i32;
            let row_logits = logits.slice_axis(0, b, b + 1)?;
            let mut sampler = row.req.sampler.clone();
            let mut plan = Vec::with_capacity(draft.len() + 1);
            for j in 0..=draft.len() {
                let j = j as i32;
                let at = row_logits.slice_axis(1, j, j + 1)?.squeeze(1)?;
                let sampled = sampler.sample(&at)?;
                plan.push((sampled, sampler.clone()));
                if let Some(&x) = draft.get(j as usize) {
                    sampler.accept(&Array::from_slice(&[x], &[1])?)?;
                }
            }
            plans.push(plan);
        }
        let arrays: Vec<&Array> = plans
            .iter()
            .flatten()
            .flat_map(|(s, _)| s.arrays())
            .collect();
        let built = Instant::now();
        mlx::eval(&arrays)?;
        let now = Instant::now();
        let mut drop = Vec::with_capacity(rows);
        for ((row, draft), plan) in self.rows.iter_mut().zip(drafts).zip(plans) {
            let before = row.ids.len();
            let mut emitted = Vec::with_capacity(plan.len());
            let mut kept = None;
            for (j, (sampled, sampler)) in plan.into_iter().enumerate() {
                let token = sampled.read()?;
                let agrees = draft.get(j) == Some(&token.token);
                emitted.push(token);
                kept = Some(sampler);
                if !agrees {
                    break;
                }
            }
            let (Some(sampler), Some(last)) = (kept, emitted.last().map(|t| t.token)) else {
                return Err(EngineError::InvalidRequest(
                    "a verification emitted no token".into(),
                ));
            };
            let accepted = emitted.len() - 1;
            if !draft.is_empty() {
                row.spec.counts.drafted += draft.len();
                row.spec.counts.accepted += accepted;
                let current = match row.spec.k {
                    0 => spec.num_draft_tokens,
                    k => k,
                };
                row.spec.k = next_draft_len(current, draft.len(), accepted, spec.num_draft_tokens);
            }
            row.req.sampler = sampler;
            // Kept in the cache: the row's last token and the accepted drafts.
            drop.push((width - 1 - accepted) as i32);
            for cache in &mut row.spec.draft {
                let len = cache.offset().min((before + accepted) as i32);
                cache.truncate(len)?;
            }
            for token in emitted {
                if row.ended.is_some() {
                    break;
                }
                row.take(&token, now);
                events.push(SeqEvent::Token {
                    id: row.req.id,
                    token,
                });
            }
            row.input = Array::from_slice(&[last], &[1])?;
            row.input_generated = true;
        }
        self.cache.trim_rows(&drop)?;
        self.host.steps += 1;
        self.host.build += built - begin;
        self.host.wait += now - built;
        Ok(())
    }
}

/// `k` tokens of `model`'s greedy continuation of `ids`, on `caches` (its
/// cache of this sequence, holding a prefix of `ids`): catches up on the
/// tokens it lacks, then decodes `k` steps. The caches then hold `ids` and
/// the first `k - 1` draft tokens.
fn draft_greedy(model: &Model, caches: &mut Vec<Cache>, ids: &[u32], k: usize) -> Result<Vec<u32>> {
    if caches.is_empty() {
        *caches = model.new_cache();
    }
    let have = caches.first().map_or(0, Cache::offset).max(0) as usize;
    // Never all of `ids`: the last token must go through a step with logits.
    let have = have.min(ids.len().saturating_sub(1));
    for cache in caches.iter_mut() {
        cache.truncate(have as i32)?;
    }
    let Some((&last, head)) = ids[have..].split_last() else {
        return Ok(Vec::new());
    };
    for chunk in head.chunks(DRAFT_PREFILL_CHUNK) {
        let chunk = Array::from_slice(chunk, &[1, chunk.len() as i32])?;
        model.fill_cache(&chunk, caches)?;
        let state: Vec<&Array> = caches.iter().flat_map(Cache::state).collect();
        mlx::eval(&state)?;
    }
    let mut input = Array::from_slice(&[last], &[1, 1])?;
    let mut out = Vec::with_capacity(k);
    for _ in 0..k {
        let logits = model.forward(&input, caches)?;
        let token = logits.argmax(-1, false)?;
        input = if token.dtype() == Dtype::U32 {
            token
        } else {
            token.astype(Dtype::U32)?
        };
        out.push(input.clone());
    }
    let refs: Vec<&Array> = out.iter().collect();
    let drafted = mlx::concatenate(&refs, 1)?;
    let mut eval = vec![&drafted];
    eval.extend(caches.iter().flat_map(Cache::state));
    mlx::eval(&eval)?;
    Ok(drafted.to_vec::<u32>()?)
}
