//! Embedding requests in the worker's loop: `Embed` frames are reassembled
//! ([`EmbedAssembler`]) and queued, first come first served; the loop runs
//! them between the generation scheduler's steps, one chunk of one input
//! ([`engine::embed::EMBED_CHUNK`] tokens at most) per turn while sequences
//! decode, so a running stream waits at most one such forward pass for an
//! embedding request; with nothing decoding, a turn runs up to
//! [`IDLE_TOKENS`]. Each input's vector leaves as soon as it is complete, in
//! `Embedding` frames, and the request ends with `Done` (its tokens counted
//! as prompt) or an `Error` and `Done`.

use std::collections::VecDeque;
use std::time::Instant;

use engine::Model;
use engine::embed::{EmbedJob, Pooling};
use protocol::{
    Done, Embed, EmbedAssembler, EmbedPart, Embedding, ErrorCode, ErrorMsg, Event, FinishReason,
};
use shm_ring::{WorkerEndpoint, monotonic_ns};

use crate::{WorkerError, send_event, truncate};

/// Tokens an idle worker runs per turn of its loop (between reads of the
/// ring and heartbeats).
pub const IDLE_TOKENS: usize = 2048;

/// Values per `Embedding` frame: 32 KiB, well within a ring frame.
const VALUES_PER_FRAME: usize = 8192;

/// A queued or running embedding request.
struct Job {
    id: u64,
    job: EmbedJob,
    received_ns: u64,
    admitted: Option<Instant>,
}

/// The worker's embedding requests.
pub struct EmbedQueue {
    assembler: EmbedAssembler,
    jobs: VecDeque<Job>,
}

impl EmbedQueue {
    /// A queue for a model serving `context_length` tokens per input.
    pub fn new(context_length: usize) -> EmbedQueue {
        EmbedQueue {
            assembler: EmbedAssembler::new(context_length),
            jobs: VecDeque::new(),
        }
    }

    /// Whether a request waits to run.
    pub fn is_busy(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Requests held.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Takes one `Embed` frame; a complete request joins the queue, a bad
    /// one ends at once with an invalid-request error.
    pub fn push(
        &mut self,
        endpoint: &mut WorkerEndpoint,
        part: EmbedPart,
    ) -> Result<(), WorkerError> {
        let id = part.request_id();
        let received_ns = monotonic_ns();
        let embed = match self.assembler.push(part) {
            Ok(Some(embed)) => embed,
            Ok(None) => return Ok(()),
            Err(e) => return fail(endpoint, id, 0, ErrorCode::InvalidRequest, &e.to_string()),
        };
        #[cfg(feature = "fault-injection")]
        if embed.inputs.iter().any(|input| {
            input
                .windows(crate::serve::FAULT_TRIGGER.len())
                .any(|w| w == crate::serve::FAULT_TRIGGER)
        }) {
            tracing::error!("an embedding input holds the fault trigger; aborting");
            std::process::abort();
        }
        let Embed {
            request_id,
            inputs,
            pooling,
            normalize,
        } = embed;
        let pooling = match pooling {
            protocol::Pooling::Last => Pooling::Last,
            protocol::Pooling::Mean => Pooling::Mean,
            protocol::Pooling::Cls => Pooling::Cls,
        };
        match EmbedJob::new(inputs, pooling, normalize) {
            Ok(job) => {
                self.jobs.push_back(Job {
                    id: request_id,
                    job,
                    received_ns,
                    admitted: None,
                });
                Ok(())
            }
            Err(e) => fail(endpoint, id, 0, ErrorCode::InvalidRequest, &e.to_string()),
        }
    }

    /// Ends request `id` if this queue holds it (`Done`, cancelled).
    pub fn cancel(&mut self, endpoint: &mut WorkerEndpoint, id: u64) -> Result<bool, WorkerError> {
        let partial = self.assembler.cancel(id);
        let queued = self.jobs.iter().position(|j| j.id == id);
        if let Some(i) = queued {
            self.jobs.remove(i);
        }
        if !partial && queued.is_none() {
            return Ok(false);
        }
        done(endpoint, id, FinishReason::Cancelled, 0, 0, None)?;
        Ok(true)
    }

    /// Runs the oldest request's next chunks: one while `decoding`, else up
    /// to [`IDLE_TOKENS`] tokens; sends each finished vector, and `Done`
    /// when a request has all of them. An engine error ends that request.
    pub fn run(
        &mut self,
        endpoint: &mut WorkerEndpoint,
        model: &Model,
        decoding: bool,
    ) -> Result<(), WorkerError> {
        let budget = if decoding { 1 } else { IDLE_TOKENS };
        let mut spent = 0;
        while spent < budget {
            let Some(front) = self.jobs.front_mut() else {
                return Ok(());
            };
            front.admitted.get_or_insert_with(Instant::now);
            let advanced = match front.job.advance(model) {
                Ok(advanced) => advanced,
                Err(e) => {
                    tracing::error!("embedding failed: {e}");
                    let (id, tokens) = (front.id, front.job.total_tokens());
                    self.jobs.pop_front();
                    let why = format!("the engine failed: {e}");
                    return fail(endpoint, id, tokens, ErrorCode::Internal, &why);
                }
            };
            spent += advanced.tokens.max(1);
            if let Some((index, vector)) = advanced.vector {
                for chunk in Embedding::chunks(front.id, index as u32, &vector, VALUES_PER_FRAME) {
                    send_event(endpoint, &Event::Embedding(chunk))?;
                }
            }
            if front.job.is_done() {
                let (id, tokens) = (front.id, front.job.total_tokens());
                let (received, admitted) = (front.received_ns, front.admitted);
                self.jobs.pop_front();
                done(endpoint, id, FinishReason::Stop, tokens, received, admitted)?;
            }
            endpoint.heartbeat();
        }
        Ok(())
    }

    /// Ends every held request with an error (the worker is stopping).
    pub fn fail_all(
        &mut self,
        endpoint: &mut WorkerEndpoint,
        why: &str,
    ) -> Result<(), WorkerError> {
        while let Some(job) = self.jobs.pop_front() {
            fail(endpoint, job.id, 0, ErrorCode::Internal, why)?;
        }
        Ok(())
    }
}

/// Sends an error for request `id` and its `Done`.
fn fail(
    endpoint: &mut WorkerEndpoint,
    id: u64,
    tokens: usize,
    code: ErrorCode,
    message: &str,
) -> Result<(), WorkerError> {
    let event = Event::Error(ErrorMsg {
        request_id: id,
        code,
        message: truncate(message),
    });
    send_event(endpoint, &event)?;
    done(endpoint, id, FinishReason::Error, tokens, 0, None)
}

/// Sends request `id`'s `Done`.
fn done(
    endpoint: &mut WorkerEndpoint,
    id: u64,
    reason: FinishReason,
    tokens: usize,
    received_ns: u64,
    admitted: Option<Instant>,
) -> Result<(), WorkerError> {
    let now = monotonic_ns();
    let admitted_ns = admitted.map_or(0, |at| now.saturating_sub(at.elapsed().as_nanos() as u64));
    let event = Event::Done(Done {
        request_id: id,
        finish_reason: reason,
        prompt_tokens: tokens as u32,
        completion_tokens: 0,
        prefill_us: admitted.map_or(0, |at| at.elapsed().as_micros() as u64),
        decode_us: 0,
        cached_tokens: 0,
        received_ns: if received_ns == 0 { now } else { received_ns },
        admitted_ns,
        first_token_ns: 0,
        draft_tokens: 0,
        accepted_draft_tokens: 0,
    });
    send_event(endpoint, &event)?;
    Ok(())
}
