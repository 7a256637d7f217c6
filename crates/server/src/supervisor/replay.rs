//! A running request's events, carried over worker crashes: a
//! [`Generation`] keeps what it needs to resume (the prompt, the tokens it
//! has passed on, the sampling parameters with the seed fixed) and, when its
//! worker dies, resubmits the request to the next worker as a continuation:
//! the prompt followed by the tokens already passed on, `max_tokens` reduced
//! by their count, and `generated` set to it, so the worker continues at
//! that token index: it decodes those tokens again (or, past 256, prefills
//! them with the sampler starting at the index; its draws depend only on
//! the seed and the index) and counts them for the presence and frequency
//! penalties. A request under a grammar is resubmitted with it, and the
//! worker advances the grammar over those tokens. The caller sees one
//! stream: no gap, no error, no token twice.
//!
//! **Poison detection.** A request in flight at two crashes in a row
//! without a token in between is taken as their cause and ends with the
//! crash's reason. To tell it from its neighbours, a replayed request waits
//! for the model's probation gate, and holds it from its resubmission to
//! its first token: replays reach a fresh worker one at a time, so a request
//! that kills the worker again is the only one there that has not yet made
//! progress. A request is replayed at most `max_replays` times.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use protocol::{Done, FinishReason, SamplingParams};
use tokio::sync::OwnedMutexGuard;

use super::{EventStream, Lease, ModelSpec, Supervisor, Worker, WorkerEvent, WorkerGone};

/// Per model, the gate replayed requests pass one at a time.
#[derive(Default)]
pub(super) struct ProbationGates {
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ProbationGates {
    fn of(&self, model: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(gates.entry(model.to_owned()).or_default())
    }
}

/// What a request needs to be resubmitted.
struct Resume {
    /// The prompt as the client sent it.
    prompt: Vec<u32>,
    /// Its parameters as first submitted (`max_tokens` the whole budget).
    params: SamplingParams,
    /// The grammar its output follows, if any.
    grammar: Option<protocol::Grammar>,
    /// Tokens passed to the caller so far, in order.
    delivered: Vec<u32>,
    /// Tokens delivered before the current worker took the request (they
    /// are the end of its prompt there).
    carried: u32,
    /// Times the request was resubmitted.
    replays: u32,
    /// Crashes the request was in flight at since its last token.
    crashes_in_a_row: u32,
    /// Held from a resubmission to the first token after it.
    probation: Option<OwnedMutexGuard<()>>,
}

/// A running request's events. Dropping it before `Done` cancels the
/// request in the worker.
pub struct Generation {
    stream: EventStream,
    request_id: u64,
    finished: bool,
    worker: Arc<dyn Worker>,
    /// Held until the request is over (taken by `drop` to follow a
    /// cancelled request to its end).
    lease: Option<Lease>,
    /// For a new lease after a crash.
    spec: ModelSpec,
    supervisor: Supervisor,
    resume: Resume,
}

impl Lease {
    /// Starts a generation; the lease is held until the stream is dropped.
    /// A sampled request without a seed gets one here, so that a replay
    /// draws what the first worker would have.
    pub async fn generate(
        self,
        prompt: Vec<u32>,
        params: SamplingParams,
    ) -> Result<Generation, super::SupervisorError> {
        self.generate_constrained(prompt, params, None).await
    }

    /// Starts a generation whose output follows `grammar` (none: free).
    pub async fn generate_constrained(
        self,
        prompt: Vec<u32>,
        mut params: SamplingParams,
        grammar: Option<protocol::Grammar>,
    ) -> Result<Generation, super::SupervisorError> {
        if params.seed.is_none() && params.temperature > 0.0 {
            params.seed = Some(fresh_seed());
        }
        let request_id = self.supervisor.request_id();
        let submitted = self
            .worker
            .submit(request_id, prompt.clone(), params.clone(), grammar.clone())
            .await;
        let supervisor = self.supervisor.clone();
        let spec = self.spec.clone();
        let mut generation = Generation {
            stream: Box::pin(futures::stream::empty()),
            request_id,
            finished: false,
            worker: Arc::clone(&self.worker),
            lease: Some(self),
            spec,
            supervisor,
            resume: Resume {
                prompt,
                params,
                grammar,
                delivered: Vec::new(),
                carried: 0,
                replays: 0,
                crashes_in_a_row: 0,
                probation: None,
            },
        };
        match submitted {
            Ok(stream) => generation.stream = stream,
            // The worker died before the request reached it: the request
            // was not there, so this counts as no crash of its own.
            Err(gone) => generation
                .resubmit(gone)
                .await
                .map_err(|e| super::SupervisorError::WorkerGone(e.0))?,
        }
        Ok(generation)
    }
}

impl Generation {
    /// The next event; `None` after `Done`. A worker crash is answered by
    /// resubmitting the request (see the module docs); `Err` only when that
    /// is not possible: the request is the likely cause, it reached its
    /// replay limit, or no new worker could be started.
    pub async fn next(&mut self) -> Option<Result<WorkerEvent, WorkerGone>> {
        loop {
            if self.finished {
                return None;
            }
            let gone = match self.stream.next().await {
                Some(Ok(WorkerEvent::Token(t))) => {
                    let r = &mut self.resume;
                    r.delivered.push(t.token_id);
                    r.crashes_in_a_row = 0;
                    r.probation = None;
                    return Some(Ok(WorkerEvent::Token(t)));
                }
                Some(Ok(WorkerEvent::Done(done))) => {
                    self.finished = true;
                    self.resume.probation = None;
                    return Some(Ok(WorkerEvent::Done(self.whole(done))));
                }
                Some(Ok(other @ (WorkerEvent::Error { .. } | WorkerEvent::Embedding(_)))) => {
                    return Some(Ok(other));
                }
                None => {
                    self.finished = true;
                    return None;
                }
                Some(Err(gone)) => gone,
            };
            self.resume.crashes_in_a_row += 1;
            if self.resume.crashes_in_a_row >= 2 {
                self.finished = true;
                self.resume.probation = None;
                tracing::warn!(
                    model = %self.spec.id,
                    "a request was in flight at two crashes in a row; ending it as their likely cause"
                );
                return Some(Err(WorkerGone(format!(
                    "{}; the request was in flight at {} worker crashes in a row and is taken as their cause",
                    gone.0, self.resume.crashes_in_a_row
                ))));
            }
            if let Err(gone) = self.resubmit(gone).await {
                self.finished = true;
                return Some(Err(gone));
            }
        }
    }

    /// The worker-assigned request id (of the current worker).
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// What the current worker reported when ready.
    pub fn info(&self) -> &super::WorkerInfo {
        self.worker.info()
    }

    /// Times the request was resubmitted to a new worker.
    pub fn replays(&self) -> u32 {
        self.resume.replays
    }

    /// A `Done` as the caller would have had it without replays: the
    /// original prompt, every generated token counted.
    fn whole(&self, mut done: Done) -> Done {
        let r = &self.resume;
        if r.carried > 0 {
            let prompt = r.prompt.len() as u32;
            done.prompt_tokens = prompt;
            done.completion_tokens = done.completion_tokens.saturating_add(r.carried);
            done.cached_tokens = done.cached_tokens.min(prompt);
        }
        done
    }

    /// Resubmits the request to a new worker after `gone`, retrying while
    /// a fresh worker dies before the request reaches it.
    async fn resubmit(&mut self, mut gone: WorkerGone) -> Result<(), WorkerGone> {
        loop {
            let limit = self.supervisor.max_replays;
            if self.resume.replays >= limit {
                return Err(WorkerGone(format!(
                    "{}; the request was already resubmitted {limit} times",
                    gone.0
                )));
            }
            self.resume.replays += 1;
            if let Some(done) = self.ended_already() {
                self.stream = Box::pin(futures::stream::iter([Ok(WorkerEvent::Done(done))]));
                return Ok(());
            }
            if self.resume.probation.is_none() {
                let gate = self.supervisor.gates.of(&self.spec.id);
                self.resume.probation = Some(gate.lock_owned().await);
            }
            // The old lease goes first: its worker is gone.
            drop(self.lease.take());
            let lease = self
                .supervisor
                .acquire(self.spec.clone(), None)
                .await
                .map_err(|e| {
                    WorkerGone(format!("{}; restarting the worker failed: {e}", gone.0))
                })?;
            let r = &self.resume;
            let mut prompt = Vec::with_capacity(r.prompt.len() + r.delivered.len());
            prompt.extend_from_slice(&r.prompt);
            prompt.extend_from_slice(&r.delivered);
            let done = r.delivered.len() as u32;
            let params = SamplingParams {
                max_tokens: r.params.max_tokens - done,
                generated: done,
                ..r.params.clone()
            };
            let request_id = self.supervisor.request_id();
            tracing::info!(
                model = %self.spec.id,
                request_id,
                replay = self.resume.replays,
                delivered = done,
                "resubmitting a request after its worker crashed: {}",
                gone.0
            );
            let worker = Arc::clone(&lease.worker);
            self.worker = Arc::clone(&worker);
            self.lease = Some(lease);
            let grammar = self.resume.grammar.clone();
            match worker.submit(request_id, prompt, params, grammar).await {
                Ok(stream) => {
                    self.stream = stream;
                    self.request_id = request_id;
                    self.resume.carried = done;
                    return Ok(());
                }
                Err(again) => gone = again,
            }
        }
    }

    /// A `Done` for a request that had ended in all but its `Done` when
    /// its worker died: every token delivered, or a stop token last.
    fn ended_already(&self) -> Option<Done> {
        let r = &self.resume;
        let n = r.delivered.len() as u32;
        let reason = if n >= r.params.max_tokens {
            FinishReason::Length
        } else {
            let last = *r.delivered.last()?;
            let eos = !r.params.ignore_eos && self.worker.info().eos_token_ids.contains(&last);
            if !(eos || r.params.stop_token_ids.contains(&last)) {
                return None;
            }
            FinishReason::Stop
        };
        Some(Done {
            request_id: self.request_id,
            finish_reason: reason,
            prompt_tokens: r.prompt.len() as u32,
            completion_tokens: n,
            ..Done::default()
        })
    }
}

impl Drop for Generation {
    /// Cancels an unfinished request and follows it to its `Done`, counting
    /// the tokens that still arrive (the lease is held until then, so the
    /// model is not unloaded under it).
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let worker = Arc::clone(&self.worker);
        let id = self.request_id;
        let mut stream = std::mem::replace(&mut self.stream, Box::pin(futures::stream::empty()));
        let Some(lease) = self.lease.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            worker.cancel(id).await;
            let mut late = 0u64;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WorkerEvent::Token(_)) => late += 1,
                    Ok(WorkerEvent::Done(_)) | Err(_) => break,
                    Ok(WorkerEvent::Error { .. } | WorkerEvent::Embedding(_)) => {}
                }
            }
            lease.supervisor.count_cancel(late);
            drop(lease);
        });
    }
}

/// A seed for a request that gave none (the thread's generator, seeded
/// from the operating system).
fn fresh_seed() -> u64 {
    rand::random()
}
