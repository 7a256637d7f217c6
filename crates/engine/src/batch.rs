//! Continuous batching: many sequences decoded together, one token each per
//! step, joining and leaving between steps.
//!
//! Each [`Scheduler::step`] does, in order:
//! 1. **Build** the next decode step for every running sequence as one
//!    batch (`[rows, 1]` tokens through the model, each row rotated to its
//!    own position and masked to its own columns, see
//!    [`crate::model::BatchKvCache`]),
//!    sample each row with its own sampler, and schedule it with
//!    `async_eval`. A row's input is its previous, still lazy, token.
//! 2. **Read** the tokens of the step built last time (the device computes
//!    the new step meanwhile, as in [`crate::generate`]), and end the rows
//!    that hit a stop token, their `max_tokens`, or a cancellation. A row
//!    under a grammar ([`crate::constraint`]) commits its token to its
//!    matcher and ends when the grammar is complete.
//! 3. **Mask** the grammar rows: their logits were computed in step 1 with
//!    the others', but which tokens they may take depends on the token
//!    just read, so their allowed sets are computed on the CPU now, while
//!    the device still runs the step, then applied to their logits (a
//!    disallowed token's logit becomes `-inf`) and sampled; their tokens
//!    join the step in flight. Rows without a grammar are sampled in step 1
//!    as before, so a batch mixing both gives a free row the tokens it
//!    would have alone.
//! 4. **Remove** ended rows from the batch at once (their token of the step
//!    in flight is dropped) and keep their caches in the [`PrefixCache`]
//!    (for a model with recurrent layers, the prompts are kept too, when
//!    their prefill ends: see [`PrefixCache`]).
//! 5. **Prefill** waiting sequences, first come first served, up to a token
//!    budget per step. Short prompts arriving together (none in the prompt
//!    cache) are prefilled together in one pass, left-padded to the longest
//!    and masked, and join the batch as a block; any other prompt goes
//!    alone into a cache of its own, a long one cut into chunks between
//!    decode steps instead of stalling them. A sequence whose prompt is in
//!    (all but its last token) joins the batch, and its last prompt token
//!    is its input to the next step.
//!
//! With speculation on ([`Scheduler::with_speculation`]), a batch of few
//! enough rows replaces steps 1-3 by a speculative step (`speculative`):
//! drafts verified in one pass, several tokens per row.
//!
//! Admission is FIFO: the oldest waiting sequence is admitted first, and no
//! later one overtakes it, so a waiting sequence waits at most for the
//! sequences ahead of it to make room (each bounded by its `max_tokens`).
//! It is admitted when the batch has a free row, the cache memory of the
//! batch with it (KV per position of the attention layers, and the fixed
//! recurrent state of linear-attention layers per row) stays within the
//! budget, that memory of the new row on what MLX holds now stays under
//! nine tenths of MLX's memory limit, and it leaves the operating system
//! [`SYSTEM_RESERVE`](crate::memory::SYSTEM_RESERVE) of what it reports
//! free ([`BatchConfig::free_memory`]); an empty batch admits anything the
//! context length allows. A burst then waits for rows to end instead of
//! pushing the process out of memory.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mlx::{Array, Dtype};

mod masking;
mod row;
mod speculative;

use crate::constraint::Constraint;
use crate::error::{EngineError, Result};
use crate::memory::FreeMemory;
use crate::model::{BatchCache, Cache, LayerSnapshot, Model, Positions};
use crate::prefix_cache::{DiskTier, PrefixCache};
use crate::sampler::{Sampled, SampledToken, Sampler};
use crate::speculative::SpecCounts;
use masking::{Built, step_tokens};
use row::unstarted;
use speculative::{RowSpec, SpecState};

/// Limits of a [`Scheduler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Sequences decoded together at most.
    pub max_batch: usize,
    /// Bytes the batch's KV cache may take.
    pub kv_budget: usize,
    /// Prompt tokens prefilled per step while other sequences decode.
    pub prefill_chunk: usize,
    /// Prompt tokens prefilled per step when nothing decodes.
    pub prefill_step: usize,
    /// Bytes of KV the prompt cache keeps (0: no prompt cache).
    pub prefix_cache: usize,
    /// Where admission reads the memory free on the machine.
    pub free_memory: FreeMemory,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: 32,
            kv_budget: 4 << 30,
            prefill_chunk: 512,
            prefill_step: 2048,
            prefix_cache: 1 << 30,
            free_memory: FreeMemory::System,
        }
    }
}

/// A sequence to generate.
pub struct SeqRequest {
    pub id: u64,
    pub prompt: Vec<u32>,
    pub sampler: Sampler,
    /// Tokens to generate at most (at least 1).
    pub max_tokens: usize,
    /// Token ids that end the sequence (after being emitted).
    pub stop_ids: Vec<u32>,
    /// The grammar its output must follow, if any; the sequence ends with
    /// [`SeqEnd::Stop`] when the grammar is complete.
    pub constraint: Option<Constraint>,
}

/// Why a sequence ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqEnd {
    /// A stop token.
    Stop,
    /// `max_tokens`.
    Length,
    Cancelled,
    Failed(String),
}

/// The account of a sequence that ended.
#[derive(Debug, Clone)]
pub struct SeqReport {
    pub id: u64,
    pub end: SeqEnd,
    pub prompt_tokens: usize,
    /// Prompt tokens taken from the prompt cache.
    pub cached_tokens: usize,
    pub generated: usize,
    /// When its prefill began (never, if it ended waiting).
    pub admitted_at: Option<Instant>,
    pub first_token_at: Option<Instant>,
    pub last_token_at: Option<Instant>,
    /// Draft tokens verified and accepted (zero without speculation).
    pub speculative: SpecCounts,
}

/// What a step produced.
#[derive(Debug, Clone)]
pub enum SeqEvent {
    Token { id: u64, token: SampledToken },
    Done(SeqReport),
}

/// Where the host spent the decode steps so far, as
/// [`crate::generate::GenerationStats`] splits a single sequence's.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostTimes {
    /// Decode steps built and dispatched.
    pub steps: u64,
    /// Building the steps' graphs...
    pub build: Duration,
    /// ...handing them to MLX (`async_eval`)...
    pub dispatch: Duration,
    /// ...and waiting for the tokens of the step before.
    pub wait: Duration,
    /// Computing grammar masks and sampling the rows under a grammar
    /// (while the device runs the step).
    pub mask: Duration,
}

/// A sequence whose prompt is being prefilled.
struct Prefill {
    req: SeqRequest,
    caches: Vec<Cache>,
    /// Prompt tokens in `caches`.
    done: usize,
    cached: usize,
    admitted_at: Instant,
}

/// A sequence in the batch (row `i` of the cache is `rows[i]`).
struct Row {
    req: SeqRequest,
    /// Prompt and generated tokens so far.
    ids: Vec<u32>,
    /// `[1]` u32: the token the next step feeds (lazy).
    input: Array,
    /// Whether `input` is a generated token (the sampler must accept it).
    input_generated: bool,
    generated: usize,
    cached: usize,
    admitted_at: Instant,
    first_token_at: Option<Instant>,
    last_token_at: Option<Instant>,
    ended: Option<SeqEnd>,
    spec: RowSpec,
}

/// A step scheduled and not yet read.
struct InFlight {
    ids: Vec<u64>,
    /// `[rows]` u32.
    tokens: Array,
    sampled: Vec<Sampled>,
}

/// Runs many sequences on one model by continuous batching.
pub struct Scheduler<'m> {
    model: &'m Model,
    config: BatchConfig,
    waiting: VecDeque<SeqRequest>,
    prefilling: Option<Prefill>,
    rows: Vec<Row>,
    cache: BatchCache,
    in_flight: Option<InFlight>,
    prefix: PrefixCache,
    /// Sequences that ended outside the batch, reported at the next step.
    cancelled: Vec<SeqReport>,
    steps: u64,
    host: HostTimes,
    prefill_passes: u64,
    spec: Option<SpecState<'m>>,
}

impl<'m> Scheduler<'m> {
    pub fn new(model: &'m Model, config: BatchConfig) -> Scheduler<'m> {
        Scheduler {
            model,
            config,
            waiting: VecDeque::new(),
            prefilling: None,
            rows: Vec::new(),
            cache: BatchCache::for_model(model, Vec::new(), 0),
            in_flight: None,
            prefix: PrefixCache::new(config.prefix_cache, model.trimmable()),
            cancelled: Vec::new(),
            steps: 0,
            host: HostTimes::default(),
            prefill_passes: 0,
            spec: None,
        }
    }

    /// Queues a sequence (FIFO).
    pub fn submit(&mut self, req: SeqRequest) -> Result<()> {
        if req.prompt.is_empty() {
            return Err(EngineError::InvalidRequest("the prompt is empty".into()));
        }
        if req.max_tokens == 0 {
            return Err(EngineError::InvalidRequest(
                "max_tokens must be positive".into(),
            ));
        }
        self.waiting.push_back(req);
        Ok(())
    }

    /// Ends sequence `id` at the next step (its `Done` says `Cancelled`);
    /// false if it is not here.
    pub fn cancel(&mut self, id: u64) -> bool {
        if let Some(row) = self.rows.iter_mut().find(|r| r.req.id == id) {
            if row.ended.is_none() {
                row.ended = Some(SeqEnd::Cancelled);
            }
            return true;
        }
        if self.prefilling.as_ref().is_some_and(|p| p.req.id == id) {
            let p = self.prefilling.take().expect("checked above");
            self.cancelled.push(unstarted(
                &p.req,
                SeqEnd::Cancelled,
                p.cached,
                Some(p.admitted_at),
            ));
            return true;
        }
        if let Some(pos) = self.waiting.iter().position(|r| r.id == id) {
            let req = self.waiting.remove(pos).expect("position is in range");
            self.cancelled
                .push(unstarted(&req, SeqEnd::Cancelled, 0, None));
            return true;
        }
        false
    }

    /// One scheduling step (see the module's description); the tokens
    /// read and the sequences that ended.
    pub fn step(&mut self) -> Result<Vec<SeqEvent>> {
        let mut events: Vec<SeqEvent> = self.cancelled.drain(..).map(SeqEvent::Done).collect();
        // Cancelled since the last step: out before computing for them.
        self.remove_ended(&mut events)?;
        if self.speculate(&mut events)? {
            // A speculative step reads its tokens before it returns.
            self.prefix.pump_disk(false);
        } else {
            let next = self.build()?;
            if let Some(flight) = self.in_flight.take() {
                self.read(flight, &mut events)?;
                self.prefix.pump_disk(false);
            }
            self.in_flight = match next {
                Some(built) => Some(self.sample_constrained(built)?),
                None => None,
            };
        }
        self.remove_ended(&mut events)?;
        self.prefill()?;
        self.steps += 1;
        if !self.is_busy() {
            self.prefix.pump_disk(true);
        }
        if self.steps % 256 == 0 || !self.is_busy() {
            mlx::memory::clear_cache();
        }
        Ok(events)
    }

    /// Ends every admitted sequence with `why` after an engine failure and
    /// empties the batch; waiting sequences stay queued.
    pub fn fail_active(&mut self, why: &str) -> Vec<SeqReport> {
        let mut out: Vec<SeqReport> = self.cancelled.drain(..).collect();
        let failed = SeqEnd::Failed(why.to_owned());
        if let Some(p) = self.prefilling.take() {
            out.push(unstarted(
                &p.req,
                failed.clone(),
                p.cached,
                Some(p.admitted_at),
            ));
        }
        for row in self.rows.drain(..) {
            out.push(row.report(failed.clone()));
        }
        self.in_flight = None;
        self.cache = BatchCache::for_model(self.model, Vec::new(), 0);
        self.prefix.clear();
        mlx::memory::clear_cache();
        out
    }

    /// Ends every sequence, waiting ones included, with `why`.
    pub fn fail_all(&mut self, why: &str) -> Vec<SeqReport> {
        let mut out = self.fail_active(why);
        let failed = SeqEnd::Failed(why.to_owned());
        out.extend(
            self.waiting
                .drain(..)
                .map(|r| unstarted(&r, failed.clone(), 0, None)),
        );
        out
    }

    /// Schedules the next decode step of every row.
    ///
    /// A batch of one row feeds and samples its arrays as they are, without
    /// the concatenations and the slice a batch needs: its step is then the
    /// single-sequence generator's graph (see [`BatchCache::step`]).
    ///
    /// No step is built when every row's token in flight is its last (its
    /// `max_tokens`): nothing would read it, and building and dispatching a
    /// step costs as much host time as any other, before that last token is
    /// read. (A stop token is only known once read, so a row may still
    /// compute one token too many, as the generator does.)
    fn build(&mut self) -> Result<Option<Built>> {
        let in_flight = self.in_flight.as_ref().map_or(&[][..], |f| &f.ids[..]);
        let needs_step = |r: &Row| {
            let pending = usize::from(in_flight.contains(&r.req.id));
            r.generated + pending < r.req.max_tokens
        };
        if !self.rows.iter().any(needs_step) {
            return Ok(None);
        }
        let begin = Instant::now();
        for row in &mut self.rows {
            if row.input_generated {
                row.req.sampler.accept(&row.input)?;
            }
        }
        let single = self.rows.len() == 1;
        let tokens = if single {
            self.rows[0].input.clone()
        } else {
            let inputs: Vec<&Array> = self.rows.iter().map(|r| &r.input).collect();
            mlx::concatenate(&inputs, 0)?
        };
        let logits = self.cache.step(self.model, &tokens)?;
        let mut sampled = Vec::with_capacity(self.rows.len());
        let mut constrained = Vec::new();
        for (i, row) in self.rows.iter_mut().enumerate() {
            let row_logits = if single {
                logits.clone()
            } else {
                let i = i as i32;
                logits.slice_axis(0, i, i + 1)?
            };
            if row.req.constraint.is_some() {
                constrained.push((i, row_logits));
                sampled.push(None);
                continue;
            }
            let s = row.req.sampler.sample(&row_logits)?;
            row.input = s.token.clone();
            row.input_generated = true;
            sampled.push(Some(s));
        }
        let tokens = if constrained.is_empty() {
            Some(step_tokens(sampled.iter().flatten())?)
        } else {
            None
        };
        let mut eval: Vec<&Array> = tokens.iter().collect();
        for s in sampled.iter().flatten() {
            let skip = usize::from(tokens.is_some());
            eval.extend(s.arrays().into_iter().skip(skip));
        }
        eval.extend(constrained.iter().map(|(_, l)| l));
        let built = Instant::now();
        mlx::async_eval(&eval)?;
        self.host.steps += 1;
        self.host.build += built - begin;
        self.host.dispatch += built.elapsed();
        Ok(Some(Built {
            ids: self.rows.iter().map(|r| r.req.id).collect(),
            sampled,
            constrained,
            tokens,
        }))
    }

    /// Reads a step's tokens and ends the rows they finish.
    fn read(&mut self, flight: InFlight, events: &mut Vec<SeqEvent>) -> Result<()> {
        let begin = Instant::now();
        let tokens = flight.tokens.to_vec::<u32>()?;
        let now = Instant::now();
        self.host.wait += now - begin;
        for ((id, &token), sampled) in flight.ids.iter().zip(&tokens).zip(&flight.sampled) {
            let Some(row) = self.rows.iter_mut().find(|r| r.req.id == *id) else {
                continue;
            };
            if row.ended.is_some() {
                continue;
            }
            let token = if sampled.token_logprob.is_some() {
                sampled.read()?
            } else {
                SampledToken {
                    token,
                    logprobs: None,
                }
            };
            row.take(&token, now);
            events.push(SeqEvent::Token { id: *id, token });
        }
        Ok(())
    }

    /// Takes ended rows out of the batch, keeping their KV for reuse.
    fn remove_ended(&mut self, events: &mut Vec<SeqEvent>) -> Result<()> {
        if self.rows.iter().all(|r| r.ended.is_none()) {
            return Ok(());
        }
        let mut keep = Vec::with_capacity(self.rows.len());
        let mut saved = Vec::new();
        for (i, row) in self.rows.iter().enumerate() {
            let Some(end) = &row.ended else {
                keep.push(i);
                continue;
            };
            if !matches!(end, SeqEnd::Failed(_)) && self.config.prefix_cache > 0 {
                // The positions cached: a token read but never fed back (a
                // row cancelled before its next step) has none.
                let len = (self.cache.row_len(i).max(0) as usize).min(row.ids.len());
                if let Some(layers) = self.cache.copy_row(i, len as i32)? {
                    saved.push((row.ids[..len].to_vec(), layers));
                }
            }
        }
        let arrays: Vec<&Array> = saved
            .iter()
            .flat_map(|(_, layers)| layers.iter().flat_map(|l| l.arrays()))
            .collect();
        if !arrays.is_empty() {
            mlx::async_eval(&arrays)?;
        }
        for (ids, layers) in saved {
            self.prefix.insert(ids, layers);
        }
        self.cache.retain(&keep)?;
        let rows = std::mem::take(&mut self.rows);
        for row in rows {
            match row.ended.clone() {
                Some(end) => events.push(SeqEvent::Done(row.report(end))),
                None => self.rows.push(row),
            }
        }
        Ok(())
    }

    /// Whether `req` fits next to the running rows and `group` (sequences
    /// admitted to be prefilled together before it).
    fn fits(&self, group: &[Prefill], req: &SeqRequest) -> bool {
        let rows = self.rows.len() + group.len();
        if rows == 0 {
            return true;
        }
        if rows + 1 > self.config.max_batch {
            return false;
        }
        let remaining = |r: &Row| r.req.max_tokens.saturating_sub(r.generated);
        let longest_left = self
            .rows
            .iter()
            .map(remaining)
            .chain(group.iter().map(|p| p.req.max_tokens))
            .chain([req.max_tokens])
            .max()
            .unwrap_or(0);
        let longest_prompt = group
            .iter()
            .map(|p| p.req.prompt.len())
            .chain([req.prompt.len()])
            .max()
            .unwrap_or(0);
        let width = (self.cache.idx() as usize).max(longest_prompt) + longest_left;
        let per_row = width * self.model.kv_bytes_per_position() + self.model.state_bytes_per_row();
        let need = (rows + 1) * per_row;
        // Live memory too: the cache of the new row and of the rows admitted
        // with it, on what MLX holds now, must stay under nine tenths of its
        // memory limit (the rest for a step's activations), so a burst
        // waits rather than runs out of memory.
        let adding = (group.len() + 1) * per_row;
        need <= self.config.kv_budget
            && mlx::memory::stats().active + adding <= mlx::memory::memory_limit() / 10 * 9
            && self.config.free_memory.has_room_for(adding as u64)
    }

    /// Prefills waiting sequences in FIFO order, up to the step's budget.
    ///
    /// A prompt is cut into pieces of exactly the chunk size (the last one
    /// shorter), never into what a step's budget happens to leave: prompts
    /// of one length then go through the same shapes, which the GPU
    /// backends plan once per shape (attention graphs, kernels). A piece
    /// that does not fit what is left of the budget waits for the next step.
    fn prefill(&mut self) -> Result<()> {
        let chunk = if self.rows.is_empty() {
            self.config.prefill_step
        } else {
            self.config.prefill_chunk
        }
        .max(1);
        let mut spent = 0;
        loop {
            if self.prefilling.is_none() {
                let mut group = self.admit_next(chunk - spent)?;
                if group.len() > 1 {
                    spent += self.prefill_together(group)?;
                    if spent >= chunk {
                        return Ok(());
                    }
                    continue;
                }
                let Some(one) = group.pop() else {
                    return Ok(());
                };
                self.prefilling = Some(one);
            }
            let p = self.prefilling.as_mut().expect("set above");
            let head = &p.req.prompt[..p.req.prompt.len() - 1];
            let take = (head.len() - p.done).min(chunk);
            if take > 0 {
                if spent > 0 && spent + take > chunk {
                    return Ok(());
                }
                let piece = &head[p.done..p.done + take];
                let ids = Array::from_slice(piece, &[1, piece.len() as i32])?;
                self.model.fill_cache(&ids, &mut p.caches)?;
                let state: Vec<&Array> = p.caches.iter().flat_map(Cache::state).collect();
                mlx::eval(&state)?;
                p.done += take;
                spent += take;
            }
            if p.done < head.len() {
                return Ok(());
            }
            let p = self.prefilling.take().expect("set above");
            self.join(p)?;
            if spent >= chunk {
                return Ok(());
            }
        }
    }

    /// Admits waiting sequences from the head of the queue, each only if it
    /// fits: the head alone, or with those behind it when they can all be
    /// prefilled together (each prompt in no prompt-cache entry, and the
    /// group padded to its longest prompt within `budget` tokens). Stops at
    /// the first that cannot join; empty when the head does not fit.
    fn admit_next(&mut self, budget: usize) -> Result<Vec<Prefill>> {
        let mut group: Vec<Prefill> = Vec::new();
        let mut longest = 0;
        while let Some(head) = self.waiting.front() {
            if !self.fits(&group, head) {
                break;
            }
            let len = head.prompt.len() - 1;
            let together = len > 0
                && longest.max(len) * (group.len() + 1) <= budget
                && !self.prefix.covers(&head.prompt[..len]);
            if !together && !group.is_empty() {
                break;
            }
            let req = self.waiting.pop_front().expect("checked above");
            group.push(self.admit(req)?);
            if !together {
                break;
            }
            longest = longest.max(len);
        }
        Ok(group)
    }

    /// Prefills `group` (admitted by `admit_next`) in one pass, its
    /// prompts left-padded to the longest, and moves it into the batch.
    /// Returns the tokens the pass computed (padding included).
    fn prefill_together(&mut self, group: Vec<Prefill>) -> Result<usize> {
        let rows = group.len() as i32;
        let heads: Vec<&[u32]> = group
            .iter()
            .map(|p| &p.req.prompt[..p.req.prompt.len() - 1])
            .collect();
        let len = heads.iter().map(|h| h.len()).max().unwrap_or(0) as i32;
        let pads: Vec<i32> = heads.iter().map(|h| len - h.len() as i32).collect();
        let mut ids = Vec::with_capacity((rows * len) as usize);
        for (head, &pad) in heads.iter().zip(&pads) {
            ids.extend(std::iter::repeat_n(0, pad as usize));
            ids.extend_from_slice(head);
        }
        let ids = Array::from_slice(&ids, &[rows, len])?;
        // Row b's first column is position -pad_b, so its prompt starts at
        // 0. Query i attends to the columns up to i that are not padding; a
        // padding query to itself only (a query with nothing to attend to
        // would be NaN, and its NaN keys would reach the other queries).
        let starts: Vec<i32> = pads.iter().map(|p| -p).collect();
        let offsets = Array::from_slice(&starts, &[rows])?;
        let columns = mlx::arange(0.0, f64::from(len), 1.0, Dtype::I32)?;
        let (key, query) = (
            columns.reshape(&[1, 1, 1, len])?,
            columns.reshape(&[1, 1, len, 1])?,
        );
        let pad = Array::from_slice(&pads, &[rows, 1, 1, 1])?;
        let mask = key
            .less_equal(&query)?
            .logical_and(&key.greater_equal(&pad)?.logical_or(&key.equal(&query)?)?)?;
        // The tokens that are not padding, for recurrent layers to fold in.
        let valid = columns
            .reshape(&[1, len])?
            .greater_equal(&pad.reshape(&[rows, 1])?)?;
        let mut cache = BatchCache::for_model(self.model, pads, len);
        self.model.fill_rows(
            &ids,
            cache.layers_mut(),
            Positions::Rows {
                offsets: &offsets,
                mask: Some(&mask),
                valid: Some(&valid),
            },
        )?;
        mlx::eval(&cache.state())?;
        self.prefill_passes += 1;
        if self.keeps_prompts() {
            for (i, head) in heads.iter().enumerate() {
                if let Some(layers) = cache.copy_row(i, head.len() as i32)? {
                    self.keep_prompt(head, layers)?;
                }
            }
        }
        self.cache.extend(cache)?;
        for p in group {
            self.add_row(p)?;
        }
        Ok((rows * len) as usize)
    }

    /// Starts a sequence: its caches, from the prompt cache when it holds a
    /// prefix of the prompt.
    fn admit(&mut self, req: SeqRequest) -> Result<Prefill> {
        let head = &req.prompt[..req.prompt.len() - 1];
        let admitted_at = Instant::now();
        let (caches, cached) = match self.prefix.lookup(head)? {
            Some(hit) => (hit.caches, hit.tokens),
            None => (self.model.new_cache(), 0),
        };
        Ok(Prefill {
            req,
            caches,
            done: cached,
            cached,
            admitted_at,
        })
    }

    /// Whether prompts are kept in the prompt cache when their prefill
    /// ends, beside the sequences when they end: for a model with recurrent
    /// layers, whose state at a prompt's end no sequence entry can give
    /// back (a resent prompt, a regenerated answer).
    fn keeps_prompts(&self) -> bool {
        self.config.prefix_cache > 0 && !self.model.trimmable()
    }

    /// Keeps the caches of the prompt head `ids` in the prompt cache.
    fn keep_prompt(&mut self, ids: &[u32], layers: Vec<LayerSnapshot>) -> Result<()> {
        let arrays: Vec<&Array> = layers.iter().flat_map(LayerSnapshot::arrays).collect();
        mlx::async_eval(&arrays)?;
        self.prefix.insert(ids.to_vec(), layers);
        Ok(())
    }

    /// Moves a prefilled sequence into the batch.
    fn join(&mut self, mut p: Prefill) -> Result<()> {
        if self.keeps_prompts() && p.done > p.cached {
            let layers: Option<Vec<LayerSnapshot>> = p
                .caches
                .iter()
                .map(Cache::snapshot)
                .collect::<Result<_>>()?;
            if let Some(layers) = layers {
                let head = p.req.prompt[..p.done].to_vec();
                self.keep_prompt(&head, layers)?;
            }
        }
        self.cache.push(std::mem::take(&mut p.caches))?;
        self.prefill_passes += u64::from(p.done > p.cached);
        self.add_row(p)
    }

    /// A row for `p`, whose KV the batch cache holds.
    fn add_row(&mut self, p: Prefill) -> Result<()> {
        let last = *p.req.prompt.last().expect("prompts are not empty");
        self.rows.push(Row {
            ids: p.req.prompt.clone(),
            input: Array::from_slice(&[last], &[1])?,
            input_generated: false,
            generated: 0,
            cached: p.cached,
            admitted_at: p.admitted_at,
            first_token_at: None,
            last_token_at: None,
            ended: None,
            spec: RowSpec::default(),
            req: p.req,
        });
        Ok(())
    }

    /// Sequences waiting for admission.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Sequences admitted (prefilling or decoding).
    pub fn active(&self) -> usize {
        self.rows.len() + usize::from(self.prefilling.is_some())
    }

    /// Whether a step has anything to do.
    pub fn is_busy(&self) -> bool {
        !self.waiting.is_empty()
            || self.prefilling.is_some()
            || !self.rows.is_empty()
            || self.in_flight.is_some()
            || !self.cancelled.is_empty()
    }

    /// Where the host spent the decode steps so far.
    pub fn host_times(&self) -> HostTimes {
        self.host
    }

    /// Prefills run so far that computed any prompt token (a group
    /// prefilled together is one, a long prompt's chunks one in all).
    pub fn prefill_passes(&self) -> u64 {
        self.prefill_passes
    }

    /// Gives the prompt cache a tier on disk ([`PrefixCache::attach_disk`]).
    pub fn attach_disk_cache(&mut self, tier: DiskTier) {
        self.prefix.attach_disk(tier);
    }

    /// Bytes of the batch's KV and of the prompt cache.
    pub fn kv_bytes(&self) -> (usize, usize) {
        (self.cache.nbytes(), self.prefix.bytes())
    }
}
