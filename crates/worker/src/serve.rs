//! The worker's request loop: a FIFO of submitted requests, run one at a
//! time through the engine's decode loop, with the request ring polled
//! between decode steps for cancellations and new work.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use engine::generate::{GenerateOptions, GenerationStats, Generator};
use engine::loader::LoadedModel;
use engine::{Sampler, SamplingParams};
use protocol::{
    Done, ErrorCode, ErrorMsg, Event, FinishReason, FrameMeta, Heartbeat, Request, Stats, Submit,
    SubmitAssembler, TokenEntry, Tokens,
};
use shm_ring::WorkerEndpoint;

use crate::{WorkerError, send_event, stopping, truncate};

/// How long an idle worker sleeps between heartbeats.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// Context length served when neither the model nor the supervisor says.
const FALLBACK_CONTEXT: u32 = 4096;

/// What the loop does after handling a frame.
#[derive(Debug, PartialEq, Eq)]
enum Control {
    Continue,
    /// `Shutdown` asked for an orderly exit.
    Shutdown,
}

/// One loaded model and the requests waiting for it.
pub struct Server {
    loaded: LoadedModel,
    context_length: u32,
    inbox: Inbox,
    /// Requests run so far.
    served: u64,
}

/// Requests received and not yet started.
struct Inbox {
    queue: VecDeque<Submit>,
    assembler: SubmitAssembler,
}

/// How one request ended.
struct Outcome {
    reason: FinishReason,
    stats: GenerationStats,
    error: Option<(ErrorCode, String)>,
}

impl Server {
    /// A server for `loaded`, limited to `context_length` tokens when given
    /// (never more than the model's own).
    pub fn new(loaded: LoadedModel, context_length: Option<u32>) -> Server {
        let native = loaded
            .model
            .config
            .context_length()
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(FALLBACK_CONTEXT);
        let context_length = context_length.map_or(native, |c| c.min(native)).max(1);
        Server {
            loaded,
            context_length,
            inbox: Inbox {
                queue: VecDeque::new(),
                assembler: SubmitAssembler::new(context_length as usize),
            },
            served: 0,
        }
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

    /// Serves requests until the front-end leaves, `Shutdown`, or SIGTERM.
    pub fn serve(
        mut self,
        endpoint: &mut WorkerEndpoint,
        stop: &AtomicBool,
    ) -> Result<(), WorkerError> {
        let mut buf = Vec::new();
        let mut last_stats = Instant::now();
        loop {
            endpoint.heartbeat();
            if stopping(stop) {
                return self.shut_down(endpoint, "the worker received SIGTERM");
            }
            if let Some(submit) = self.inbox.queue.pop_front() {
                if self.run_request(endpoint, submit, stop)? == Control::Shutdown {
                    return self.shut_down(endpoint, "the supervisor shut the worker down");
                }
                self.send_stats(endpoint)?;
                continue;
            }
            if last_stats.elapsed() >= Duration::from_secs(5) {
                self.send_stats(endpoint)?;
                last_stats = Instant::now();
            }
            match endpoint.recv_timeout(&mut buf, IDLE_TICK) {
                Ok(Some(header)) => {
                    let meta = FrameMeta {
                        kind: header.kind,
                        flags: header.flags,
                        request_id: header.request_id,
                    };
                    if self.inbox.handle(endpoint, meta, &buf, None)? == Control::Shutdown {
                        return self.shut_down(endpoint, "the supervisor shut the worker down");
                    }
                }
                Ok(None) => {}
                Err(shm_ring::RingError::PeerGone) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Runs one request to its end, polling for frames between steps.
    fn run_request(
        &mut self,
        endpoint: &mut WorkerEndpoint,
        submit: Submit,
        stop: &AtomicBool,
    ) -> Result<Control, WorkerError> {
        let id = submit.request_id;
        let prompt_len = submit.prompt.len();
        self.served += 1;
        let max_tokens = match self.budget(&submit) {
            Ok(max) => max,
            Err(message) => {
                let outcome = Outcome::failed(ErrorCode::ContextOverflow, message);
                finish(endpoint, id, prompt_len, &outcome)?;
                return Ok(Control::Continue);
            }
        };
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
        };
        let model = &self.loaded.model;
        let generator = Sampler::new(params, model.config.vocab_size as usize, &submit.prompt)
            .and_then(|sampler| {
                let options = GenerateOptions {
                    max_tokens,
                    ..GenerateOptions::default()
                };
                Generator::new(model, &submit.prompt, sampler, options)
            });
        let mut generator = match generator {
            Ok(g) => g,
            Err(e) => {
                let code = match e {
                    engine::EngineError::InvalidRequest(_) => ErrorCode::InvalidRequest,
                    _ => ErrorCode::Internal,
                };
                finish(
                    endpoint,
                    id,
                    prompt_len,
                    &Outcome::failed(code, e.to_string()),
                )?;
                return Ok(Control::Continue);
            }
        };
        let stop_ids: Vec<u32> = if p.ignore_eos {
            p.stop_token_ids.clone()
        } else {
            let mut ids = self.loaded.tokenizer.eos_token_ids().to_vec();
            ids.extend(&p.stop_token_ids);
            ids
        };
        let mut control = Control::Continue;
        let mut cancelled = false;
        let mut buf = Vec::new();
        let outcome = loop {
            let Some(token) = generator.next() else {
                break Outcome::ended(FinishReason::Length);
            };
            let token = match token {
                Ok(t) => t,
                Err(e) => break Outcome::failed(ErrorCode::Internal, e.to_string()),
            };
            let entry = TokenEntry {
                request_id: id,
                token_id: token.token,
                logprob: token.logprobs.as_ref().map(|l| l.logprob),
                top_logprobs: token.logprobs.map(|l| l.top).unwrap_or_default(),
            };
            send_event(
                endpoint,
                &Event::Tokens(Tokens {
                    entries: vec![entry],
                }),
            )?;
            endpoint.heartbeat();
            if stop_ids.contains(&token.token) {
                break Outcome::ended(FinishReason::Stop);
            }
            // New work and cancellations, without waiting.
            while let Some(header) = endpoint.try_recv(&mut buf)? {
                let meta = FrameMeta {
                    kind: header.kind,
                    flags: header.flags,
                    request_id: header.request_id,
                };
                if self
                    .inbox
                    .handle(endpoint, meta, &buf, Some((id, &mut cancelled)))?
                    == Control::Shutdown
                {
                    control = Control::Shutdown;
                }
            }
            endpoint.check_peer()?;
            if cancelled {
                break Outcome::ended(FinishReason::Cancelled);
            }
            if control == Control::Shutdown || stopping(stop) {
                break Outcome::failed(ErrorCode::Internal, "the worker is shutting down".into());
            }
        };
        let outcome = Outcome {
            stats: generator.stats(),
            ..outcome
        };
        finish(endpoint, id, prompt_len, &outcome)?;
        Ok(control)
    }

    /// Tokens this request may generate: its `max_tokens`, clipped to the
    /// room the context leaves; an error when the prompt alone fills it.
    fn budget(&self, submit: &Submit) -> Result<usize, String> {
        let prompt = submit.prompt.len();
        let context = self.context_length as usize;
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

    fn send_stats(&self, endpoint: &mut WorkerEndpoint) -> Result<(), WorkerError> {
        let mem = mlx::memory::stats();
        let stats = Stats {
            active_memory: mem.active as u64,
            peak_memory: mem.peak as u64,
            cache_memory: mem.cache as u64,
            active_sequences: 0,
            queue_depth: self.inbox.queue.len() as u32,
        };
        send_event(endpoint, &Event::Stats(stats))?;
        Ok(())
    }

    /// Ends every held request with an error and marks the worker closing.
    fn shut_down(mut self, endpoint: &mut WorkerEndpoint, why: &str) -> Result<(), WorkerError> {
        endpoint.set_closing();
        tracing::info!(served = self.served, "{why}");
        for submit in std::mem::take(&mut self.inbox.queue) {
            let outcome = Outcome::failed(ErrorCode::Internal, why.to_owned());
            finish(endpoint, submit.request_id, submit.prompt.len(), &outcome)?;
        }
        Ok(())
    }
}

impl Inbox {
    /// Handles one request frame. `running` is the request being decoded,
    /// if any: a Cancel for it sets its flag for the decode loop to act on.
    fn handle(
        &mut self,
        endpoint: &mut WorkerEndpoint,
        meta: FrameMeta,
        payload: &[u8],
        running: Option<(u64, &mut bool)>,
    ) -> Result<Control, WorkerError> {
        match Request::decode(meta, payload)? {
            Request::Submit(part) => {
                let id = match &part {
                    protocol::SubmitPart::Head { request_id, .. }
                    | protocol::SubmitPart::Continuation { request_id, .. } => *request_id,
                };
                match self.assembler.push(part) {
                    Ok(Some(submit)) => self.queue.push_back(submit),
                    Ok(None) => {}
                    Err(e) => {
                        let outcome = Outcome::failed(ErrorCode::InvalidRequest, e.to_string());
                        finish(endpoint, id, 0, &outcome)?;
                    }
                }
            }
            Request::Cancel { request_id } => {
                if let Some((id, cancelled)) = running
                    && id == request_id
                {
                    *cancelled = true;
                } else if let Some(pos) = self.queue.iter().position(|s| s.request_id == request_id)
                {
                    let submit = self.queue.remove(pos).expect("position is in range");
                    let outcome = Outcome::ended(FinishReason::Cancelled);
                    finish(endpoint, request_id, submit.prompt.len(), &outcome)?;
                } else if self.assembler.cancel(request_id) {
                    finish(
                        endpoint,
                        request_id,
                        0,
                        &Outcome::ended(FinishReason::Cancelled),
                    )?;
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
            Request::Shutdown => return Ok(Control::Shutdown),
            Request::Hello(_) => {
                tracing::warn!("ignoring a second Hello");
            }
        }
        Ok(Control::Continue)
    }
}

impl Outcome {
    fn ended(reason: FinishReason) -> Outcome {
        Outcome {
            reason,
            stats: GenerationStats::default(),
            error: None,
        }
    }

    fn failed(code: ErrorCode, message: String) -> Outcome {
        Outcome {
            reason: FinishReason::Error,
            stats: GenerationStats::default(),
            error: Some((code, message)),
        }
    }
}

/// Sends the request's error (if any) and its `Done`.
fn finish(
    endpoint: &mut WorkerEndpoint,
    request_id: u64,
    prompt_len: usize,
    outcome: &Outcome,
) -> Result<(), WorkerError> {
    if let Some((code, message)) = &outcome.error {
        let event = Event::Error(ErrorMsg {
            request_id,
            code: *code,
            message: truncate(message),
        });
        send_event(endpoint, &event)?;
    }
    let done = Done {
        request_id,
        finish_reason: outcome.reason,
        prompt_tokens: prompt_len as u32,
        completion_tokens: outcome.stats.generated_tokens as u32,
        prefill_us: outcome.stats.prefill.as_micros() as u64,
        decode_us: outcome.stats.decode.as_micros() as u64,
        ..Done::default()
    };
    send_event(endpoint, &Event::Done(done))?;
    Ok(())
}
