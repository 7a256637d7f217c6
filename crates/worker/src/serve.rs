//! The worker's request loop: requests read off the ring go to the engine's
//! continuous-batching [`Scheduler`]; between its steps the loop reads new
//! frames without waiting (submissions, cancellations, heartbeats), and
//! after each step it writes every token of the step in one `Tokens` frame
//! and a `Done` for each sequence that ended. Idle, it sleeps on the
//! doorbell between heartbeats. A request with a grammar gets a matcher
//! from the model's grammar compiler (built from its tokenizer on the first
//! such request); a grammar that does not compile ends the request with an
//! invalid-request error. Embedding requests run between the steps
//! ([`crate::embed`]).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use engine::batch::{BatchConfig, Scheduler, SeqEvent, SeqReport, SeqRequest};
use engine::constraint::{Constraint, Grammar as EngineGrammar, GrammarCompiler};
use engine::loader::LoadedModel;
use engine::{Sampler, SamplingParams};
use protocol::{
    ErrorCode, Event, FinishReason, FrameMeta, Grammar, GrammarKind, Heartbeat, Request, Stats,
    Submit, SubmitAssembler, TokenEntry,
};
use shm_ring::WorkerEndpoint;
use shm_ring::monotonic_ns;

use crate::embed::EmbedQueue;
use crate::{WorkerError, send_event, stopping};

mod report;
mod speculative;
mod stretch;

use report::{Report, failed, finish, send_tokens};
pub use speculative::SpecOptions;
use stretch::Stretch;

/// How long an idle worker sleeps between heartbeats.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// A token sequence that makes a test build's worker abort when a prompt
/// holds it (the `fault-injection` feature, never in a release binary).
#[cfg(feature = "fault-injection")]
pub const FAULT_TRIGGER: [u32; 8] = [1, 0, 1, 0, 1, 0, 1, 0];

/// The most earlier output tokens a resumed request decodes again rather
/// than prefills (one decode step each before its first new token).
const REDECODE_MAX: usize = 256;

/// How often the worker reports its memory and batch (`Stats`).
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Context length served when neither the model nor the supervisor says.
const FALLBACK_CONTEXT: u32 = 4096;

/// What the loop does after handling a frame.
#[derive(Debug, PartialEq, Eq)]
enum Control {
    Continue,
    /// `Shutdown` asked for an orderly exit.
    Shutdown,
}

/// Limits of the batch, as the supervisor passes them (`None`: derived
/// from the model and the memory).
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchLimits {
    pub max_batch: Option<usize>,
    pub kv_memory: Option<usize>,
    /// Size the KV from the model: room for this many positions, at least
    /// one full context, at most `kv_memory`
    /// ([`engine::memory::batch_kv_bytes`], which admission counts too).
    pub kv_tokens: Option<usize>,
    pub prompt_cache_memory: Option<usize>,
}

/// One loaded model and the requests for it.
pub struct Server {
    loaded: LoadedModel,
    context_length: u32,
    batch: BatchConfig,
    /// Requests run so far.
    served: u64,
    spec: Option<speculative::Speculating>,
}

/// What the loop knows of a request the engine holds.
struct Tracked {
    received_ns: u64,
    first_token_ns: u64,
    /// Replayed tokens still to come out of the scheduler, not sent.
    replaying: usize,
    /// Replayed tokens in all: reported as prompt, not as generated.
    replayed: usize,
}

/// The state of the loop around the scheduler.
struct Session<'a> {
    scheduler: Scheduler<'a>,
    assembler: SubmitAssembler,
    model: &'a engine::Model,
    embeds: EmbedQueue,
    tracked: HashMap<u64, Tracked>,
    vocab: usize,
    eos: &'a [u32],
    tokenizer: &'a engine::Tokenizer,
    /// The model's grammar compiler, built on the first request with a
    /// grammar (its token trie takes a moment for a large vocabulary), or
    /// why it cannot be.
    grammars: Option<Result<GrammarCompiler, String>>,
    context_length: usize,
    /// Since the scheduler last became busy (with debug logging on).
    stretch: Option<Stretch>,
}

impl Server {
    /// A server for `loaded`, limited to `context_length` tokens when given
    /// (never more than the model's own).
    pub fn new(loaded: LoadedModel, context_length: Option<u32>, limits: BatchLimits) -> Server {
        let native = loaded
            .model
            .config
            .context_length()
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(FALLBACK_CONTEXT);
        let context_length = context_length.map_or(native, |c| c.min(native)).max(1);
        // KV (and recurrent state) for at least one full context: room for
        // `kv_tokens` positions (and the recurrent state of the rows they
        // are sized for) when given, else `kv_memory`, by default a quarter
        // of the memory MLX may use; and a quarter of that for the prompt
        // cache.
        let per_position = loaded.model.kv_bytes_per_position();
        let state = loaded.model.state_bytes_per_row();
        let one_context = context_length as usize * per_position + state;
        let cap = limits.kv_memory.unwrap_or(mlx::memory::memory_limit() / 4);
        let kv_budget = match limits.kv_tokens {
            Some(tokens) => usize::try_from(engine::memory::batch_kv_bytes(
                per_position as u64,
                u64::from(context_length),
                tokens as u64,
                cap as u64,
            ))
            .unwrap_or(usize::MAX)
            .saturating_add(
                state * (tokens / engine::memory::KV_TOKENS_PER_SEQUENCE as usize).max(1),
            ),
            None => cap.max(one_context),
        };
        let defaults = BatchConfig::default();
        let batch = BatchConfig {
            max_batch: limits.max_batch.unwrap_or(defaults.max_batch).max(1),
            kv_budget,
            prefix_cache: limits.prompt_cache_memory.unwrap_or(kv_budget / 4),
            // The system's free memory is the model's on the CPU and on
            // Apple's unified memory; a CUDA device's is not in it (MLX's
            // limit on the device bounds that).
            free_memory: if mlx::backend() == mlx::Backend::Cuda {
                engine::memory::FreeMemory::Ignored
            } else {
                engine::memory::FreeMemory::System
            },
            ..defaults
        };
        tracing::info!(
            max_batch = batch.max_batch,
            kv_budget_mb = batch.kv_budget >> 20,
            prompt_cache_mb = batch.prefix_cache >> 20,
            "batch limits"
        );
        Server {
            loaded,
            context_length,
            batch,
            served: 0,
            spec: None,
        }
    }

    /// Runs a few short sequences through the batch path once, so the GPU
    /// kernels requests need are compiled before the first request instead
    /// of stalling it (MLX's CUDA backend compiles kernels on first use:
    /// seconds each without the on-disk cache): a greedy one prefilled
    /// alone, then two sampled ones of different lengths prefilled together
    /// while it decodes. Only on CUDA; calls `alive` between steps.
    pub fn warm_up(&self, alive: &mut dyn FnMut()) -> Result<(), engine::EngineError> {
        if mlx::backend() != mlx::Backend::Cuda {
            return Ok(());
        }
        let started = Instant::now();
        let model = &self.loaded.model;
        let vocab = model.config.vocab_size as usize;
        let config = BatchConfig {
            prefix_cache: 0,
            ..self.batch
        };
        let mut scheduler = Scheduler::new(model, config);
        let sampled = SamplingParams {
            temperature: 0.7,
            top_p: 0.9,
            seed: Some(0),
            ..SamplingParams::default()
        };
        let sequences = [
            (9, SamplingParams::greedy()),
            (5, sampled.clone()),
            (7, sampled),
        ];
        for (id, (len, params)) in sequences.into_iter().enumerate() {
            let prompt: Vec<u32> = (1..=len).map(|t| t % vocab as u32).collect();
            let sampler = Sampler::new(params, vocab, &prompt)?;
            scheduler.submit(SeqRequest {
                id: id as u64,
                prompt,
                sampler,
                max_tokens: 4,
                stop_ids: Vec::new(),
                constraint: None,
            })?;
            if id == 0 {
                scheduler.step()?;
                alive();
            }
        }
        while scheduler.is_busy() {
            scheduler.step()?;
            alive();
        }
        drop(scheduler);
        mlx::memory::clear_cache();
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "kernels warmed up"
        );
        Ok(())
    }

    pub fn context_length(&self) -> u32 {
        self.context_length
    }

    pub fn vocab_size(&self) -> u32 {
        self.loaded.model.config.vocab_size as u32
    }

    pub fn eos_token_ids(&self) -> Vec<u32> {
        let mut ids = self.loaded.tokenizer.eos_token_ids().to_vec();
        ids.truncate(protocol::MAX_EOS_TOKENS);
        ids
    }

    /// Serves requests until the front-end leaves, `Shutdown`, or SIGTERM;
    /// the prompt cache with `disk` as its disk tier.
    pub fn serve(
        mut self,
        endpoint: &mut WorkerEndpoint,
        stop: &AtomicBool,
        disk: Option<engine::prefix_cache::DiskTier>,
    ) -> Result<(), WorkerError> {
        let mut scheduler =
            speculative::scheduler(&self.loaded.model, self.batch, self.spec.as_ref());
        disk.into_iter()
            .for_each(|tier| scheduler.attach_disk_cache(tier));
        let mut session = Session {
            scheduler,
            assembler: SubmitAssembler::new(self.context_length as usize),
            model: &self.loaded.model,
            embeds: EmbedQueue::new(self.context_length as usize),
            tracked: HashMap::new(),
            vocab: self.loaded.model.config.vocab_size as usize,
            eos: self.loaded.tokenizer.eos_token_ids(),
            tokenizer: &self.loaded.tokenizer,
            grammars: None,
            context_length: self.context_length as usize,
            stretch: None,
        };
        let mut buf = Vec::new();
        let mut last_stats = Instant::now();
        loop {
            endpoint.heartbeat();
            if stopping(stop) {
                return session.shut_down(endpoint, self.served, "the worker received SIGTERM");
            }
            // Busy: take what arrived without waiting; idle: sleep on the
            // doorbell until a frame or the next heartbeat.
            let mut wait = !session.scheduler.is_busy() && !session.embeds.is_busy();
            loop {
                let frame = if wait {
                    endpoint.recv_timeout(&mut buf, IDLE_TICK)
                } else {
                    endpoint.try_recv(&mut buf)
                };
                let header = match frame {
                    Ok(Some(header)) => header,
                    Ok(None) => break,
                    Err(shm_ring::RingError::PeerGone) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                wait = false;
                let meta = FrameMeta {
                    kind: header.kind,
                    flags: header.flags,
                    request_id: header.request_id,
                };
                if session.handle(endpoint, meta, &buf, &mut self.served)? == Control::Shutdown {
                    return session.shut_down(
                        endpoint,
                        self.served,
                        "the supervisor shut the worker down",
                    );
                }
            }
            endpoint.check_peer()?;
            if session.scheduler.is_busy() {
                session.step(endpoint)?;
            }
            if session.embeds.is_busy() {
                let decoding = session.scheduler.is_busy();
                session.embeds.run(endpoint, session.model, decoding)?;
            }
            if last_stats.elapsed() >= STATS_EVERY {
                session.send_stats(endpoint)?;
                last_stats = Instant::now();
            }
        }
    }
}

impl Session<'_> {
    /// Handles one request frame.
    fn handle(
        &mut self,
        endpoint: &mut WorkerEndpoint,
        meta: FrameMeta,
        payload: &[u8],
        served: &mut u64,
    ) -> Result<Control, WorkerError> {
        match Request::decode(meta, payload)? {
            Request::Submit(part) => {
                let id = match &part {
                    protocol::SubmitPart::Head { request_id, .. }
                    | protocol::SubmitPart::Continuation { request_id, .. } => *request_id,
                };
                match self.assembler.push(part) {
                    Ok(Some(submit)) => {
                        *served += 1;
                        self.start(endpoint, submit)?;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let report = failed(id, 0, ErrorCode::InvalidRequest, e.to_string());
                        finish(endpoint, &report, &Tracked::now())?;
                    }
                }
            }
            Request::Cancel { request_id } => {
                // The scheduler reports the cancellation at its next step.
                if !self.scheduler.cancel(request_id)
                    && !self.embeds.cancel(endpoint, request_id)?
                    && self.assembler.cancel(request_id)
                {
                    let report = Report::ended(request_id, 0, FinishReason::Cancelled);
                    finish(endpoint, &report, &Tracked::now())?;
                }
            }
            Request::Heartbeat(h) => {
                send_event(
                    endpoint,
                    &Event::Heartbeat(Heartbeat {
                        monotonic_ns: h.monotonic_ns,
                    }),
                )?;
            }
            Request::Embed(part) => {
                self.embeds.push(endpoint, part)?;
            }
            Request::Shutdown => return Ok(Control::Shutdown),
            Request::Hello(_) => {
                tracing::warn!("ignoring a second Hello");
            }
        }
        Ok(Control::Continue)
    }

    /// Hands a complete request to the scheduler, or ends it at once when
    /// it cannot run.
    fn start(&mut self, endpoint: &mut WorkerEndpoint, submit: Submit) -> Result<(), WorkerError> {
        #[cfg(feature = "fault-injection")]
        if submit
            .prompt
            .windows(FAULT_TRIGGER.len())
            .any(|w| w == FAULT_TRIGGER)
        {
            tracing::error!("the prompt holds the fault trigger; aborting");
            std::process::abort();
        }
        let mut tracked = Tracked::now();
        let id = submit.request_id;
        let prompt_len = submit.prompt.len();
        let max_tokens = match budget(&submit, self.context_length) {
            Ok(max) => max,
            Err(message) => {
                let report = failed(id, prompt_len, ErrorCode::ContextOverflow, message);
                return finish(endpoint, &report, &tracked);
            }
        };
        if max_tokens == 0 {
            // Nothing to generate (an echo of the prompt alone).
            let report = Report::ended(id, prompt_len, FinishReason::Length);
            return finish(endpoint, &report, &tracked);
        }
        let p = &submit.params;
        let params = SamplingParams {
            temperature: p.temperature,
            top_p: p.top_p,
            top_k: p.top_k,
            min_p: p.min_p,
            repetition_penalty: p.repetition_penalty,
            repetition_context_size: p.repetition_context_size.max(1) as usize,
            presence_penalty: p.presence_penalty,
            frequency_penalty: p.frequency_penalty,
            logit_bias: p.logit_bias.clone(),
            seed: p.seed,
            logprobs: p.logprobs,
            top_logprobs: u32::from(p.top_logprobs),
            generated: p.generated as usize,
        };
        // A resumed request's earlier output (the end of its prompt) is
        // decoded again, step by step as it was first, when it is short
        // enough: its keys and values, and so its next tokens, are then
        // exactly the uninterrupted request's. A longer one is prefilled
        // (fast, equal to rounding), the sampler starting at its index.
        let mut prompt = submit.prompt;
        let mut replayed = Vec::new();
        let carried = params.generated;
        if carried > 0 && carried <= REDECODE_MAX && carried < prompt.len() {
            replayed = prompt.split_off(prompt.len() - carried);
        }
        let params = SamplingParams {
            generated: if replayed.is_empty() { carried } else { 0 },
            ..params
        };
        let mut constraint = match submit.grammar.as_ref().map(|g| self.constraint(g)) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(message)) => {
                let report = failed(id, prompt_len, ErrorCode::InvalidRequest, message);
                return finish(endpoint, &report, &tracked);
            }
        };
        // A resumed request's grammar has already taken its earlier output:
        // the tokens prefilled here go through it now, those decoded again
        // as they are picked.
        if let Some(c) = constraint.as_mut() {
            let prefilled = prompt.len().saturating_sub(params.generated)..prompt.len();
            if let Some(Err(e)) = prompt[prefilled]
                .iter()
                .map(|&t| c.commit(t))
                .find(Result::is_err)
            {
                let message = format!("the grammar does not take the resumed output: {e}");
                let report = failed(id, prompt_len, ErrorCode::InvalidRequest, message);
                return finish(endpoint, &report, &tracked);
            }
        }
        let stop_ids: Vec<u32> = if p.ignore_eos {
            p.stop_token_ids.clone()
        } else {
            self.eos.iter().chain(&p.stop_token_ids).copied().collect()
        };
        tracked.replaying = replayed.len();
        tracked.replayed = replayed.len();
        let queued = Sampler::new(params, self.vocab, &prompt)
            .and_then(|sampler| {
                // A prefilled continuation's sampler already starts at its
                // index; only one decoded again picks its earlier tokens.
                if replayed.is_empty() {
                    Ok(sampler)
                } else {
                    sampler.replaying(&replayed)
                }
            })
            .and_then(|sampler| {
                self.scheduler.submit(SeqRequest {
                    id,
                    prompt,
                    sampler,
                    max_tokens: max_tokens + replayed.len(),
                    stop_ids,
                    constraint,
                })
            });
        match queued {
            Ok(()) => {
                self.tracked.insert(id, tracked);
                Ok(())
            }
            Err(e) => {
                let code = match e {
                    engine::EngineError::InvalidRequest(_) => ErrorCode::InvalidRequest,
                    _ => ErrorCode::Internal,
                };
                finish(
                    endpoint,
                    &failed(id, prompt_len, code, e.to_string()),
                    &tracked,
                )
            }
        }
    }

    /// A matcher for `grammar`, or why there is none (the grammar does not
    /// compile, or the model's tokenizer cannot carry grammars).
    fn constraint(&mut self, grammar: &Grammar) -> Result<Constraint, String> {
        let (tokenizer, vocab) = (self.tokenizer, self.vocab);
        let compiler = self.grammars.get_or_insert_with(|| {
            let started = Instant::now();
            let built = GrammarCompiler::new(tokenizer, vocab).map_err(|e| e.to_string());
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "grammar compiler built"
            );
            built
        });
        let compiler = compiler.as_ref().map_err(Clone::clone)?;
        let grammar = match grammar.kind {
            GrammarKind::JsonSchema => EngineGrammar::JsonSchema(grammar.text.clone()),
            GrammarKind::Lark => EngineGrammar::Lark(grammar.text.clone()),
            GrammarKind::Regex => EngineGrammar::Regex(grammar.text.clone()),
        };
        compiler
            .constraint(&grammar)
            .map_err(|e| format!("invalid grammar: {e}"))
    }

    /// One scheduler step: its tokens in one frame, then the ends.
    fn step(&mut self, endpoint: &mut WorkerEndpoint) -> Result<(), WorkerError> {
        let started = Instant::now();
        // Only kept when it will be logged.
        if self.stretch.is_none() && tracing::enabled!(tracing::Level::DEBUG) {
            self.stretch = Some(Stretch::new(started, self.scheduler.host_times()));
        }
        let stepped = self.scheduler.step();
        let stepped_at = Instant::now();
        if let Some(stretch) = &mut self.stretch {
            stretch.stepped(started, stepped_at);
        }
        let events = match stepped {
            Ok(events) => events,
            Err(e) => {
                tracing::error!("engine step failed: {e}");
                let why = format!("the engine failed: {e}");
                self.scheduler
                    .fail_active(&why)
                    .into_iter()
                    .map(SeqEvent::Done)
                    .collect()
            }
        };
        let mut entries = Vec::new();
        let mut ends = Vec::new();
        for event in events {
            match event {
                SeqEvent::Token { id, token } => {
                    if let Some(t) = self.tracked.get_mut(&id)
                        && t.replaying > 0
                    {
                        t.replaying -= 1;
                        continue;
                    }
                    let logprobs = token.logprobs;
                    entries.push(TokenEntry {
                        request_id: id,
                        token_id: token.token,
                        logprob: logprobs.as_ref().map(|l| l.logprob),
                        top_logprobs: logprobs.map(|l| l.top).unwrap_or_default(),
                    });
                }
                SeqEvent::Done(report) => ends.push(report),
            }
        }
        if !entries.is_empty() {
            let now = monotonic_ns();
            for entry in &entries {
                if let Some(t) = self.tracked.get_mut(&entry.request_id)
                    && t.first_token_ns == 0
                {
                    t.first_token_ns = now;
                }
            }
            send_tokens(endpoint, entries)?;
        }
        for report in ends {
            let tracked = self.tracked.remove(&report.id).unwrap_or_else(Tracked::now);
            finish(endpoint, &tracked.report(report), &tracked)?;
        }
        endpoint.heartbeat();
        if let Some(stretch) = &mut self.stretch {
            stretch.write += stepped_at.elapsed();
        }
        if !self.scheduler.is_busy()
            && let Some(stretch) = self.stretch.take()
        {
            stretch.log(self.scheduler.host_times());
        }
        Ok(())
    }

    fn send_stats(&self, endpoint: &mut WorkerEndpoint) -> Result<(), WorkerError> {
        let mem = mlx::memory::stats();
        let stats = Stats {
            active_memory: mem.active as u64,
            peak_memory: mem.peak as u64,
            cache_memory: mem.cache as u64,
            active_sequences: self.scheduler.active() as u32,
            queue_depth: (self.scheduler.waiting() + self.embeds.len()) as u32,
        };
        send_event(endpoint, &Event::Stats(stats))?;
        Ok(())
    }

    /// Ends every held request with an error and marks the worker closing.
    fn shut_down(
        mut self,
        endpoint: &mut WorkerEndpoint,
        served: u64,
        why: &str,
    ) -> Result<(), WorkerError> {
        endpoint.set_closing();
        tracing::info!(served, "{why}");
        self.embeds.fail_all(endpoint, why)?;
        for report in self.scheduler.fail_all(why) {
            let tracked = self.tracked.remove(&report.id).unwrap_or_else(Tracked::now);
            finish(endpoint, &tracked.report(report), &tracked)?;
        }
        Ok(())
    }
}

impl Tracked {
    /// The scheduler's account as the request was submitted: its replayed
    /// tokens count as prompt, not as generated.
    fn report(&self, report: SeqReport) -> Report {
        let mut report = Report::from(report);
        let replayed = self.replayed - self.replaying;
        report.generated = report.generated.saturating_sub(replayed);
        report.prompt_tokens += replayed;
        report
    }

    fn now() -> Tracked {
        Tracked {
            received_ns: monotonic_ns(),
            first_token_ns: 0,
            replaying: 0,
            replayed: 0,
        }
    }
}

/// Tokens this request may generate: its `max_tokens`, clipped to the room
/// the context leaves; an error when the prompt alone fills it.
fn budget(submit: &Submit, context: usize) -> Result<usize, String> {
    let prompt = submit.prompt.len();
    if prompt == 0 {
        return Err("the prompt is empty".into());
    }
    if prompt >= context {
        return Err(format!(
            "the prompt has {prompt} tokens; the context holds {context}"
        ));
    }
    Ok((submit.params.max_tokens as usize).min(context - prompt))
}
