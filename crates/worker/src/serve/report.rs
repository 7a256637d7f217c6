//! How a request ended, and the frames that say so: its error and its
//! `Done`, and a step's tokens.

use std::time::Instant;

use engine::batch::{SeqEnd, SeqReport};
use protocol::{Done, ErrorCode, ErrorMsg, Event, FinishReason, TokenEntry, Tokens};
use shm_ring::{WorkerEndpoint, monotonic_ns};

use super::Tracked;
use crate::{WorkerError, send_event, truncate};

/// How a request ended, as the protocol reports it.
pub(super) struct Report {
    pub(super) id: u64,
    pub(super) reason: FinishReason,
    pub(super) error: Option<(ErrorCode, String)>,
    pub(super) prompt_tokens: usize,
    pub(super) cached_tokens: usize,
    pub(super) generated: usize,
    pub(super) admitted_at: Option<Instant>,
    pub(super) first_token_at: Option<Instant>,
    pub(super) last_token_at: Option<Instant>,
    pub(super) speculative: engine::speculative::SpecCounts,
}

impl Report {
    pub(super) fn ended(id: u64, prompt_tokens: usize, reason: FinishReason) -> Report {
        Report {
            id,
            reason,
            error: None,
            prompt_tokens,
            cached_tokens: 0,
            generated: 0,
            admitted_at: None,
            first_token_at: None,
            last_token_at: None,
            speculative: Default::default(),
        }
    }
}

pub(super) fn failed(id: u64, prompt_tokens: usize, code: ErrorCode, message: String) -> Report {
    Report {
        error: Some((code, message)),
        ..Report::ended(id, prompt_tokens, FinishReason::Error)
    }
}

impl From<SeqReport> for Report {
    fn from(r: SeqReport) -> Report {
        let (reason, error) = match r.end {
            SeqEnd::Stop => (FinishReason::Stop, None),
            SeqEnd::Length => (FinishReason::Length, None),
            SeqEnd::Cancelled => (FinishReason::Cancelled, None),
            SeqEnd::Failed(message) => (FinishReason::Error, Some((ErrorCode::Internal, message))),
        };
        Report {
            id: r.id,
            reason,
            error,
            prompt_tokens: r.prompt_tokens,
            cached_tokens: r.cached_tokens,
            generated: r.generated,
            admitted_at: r.admitted_at,
            first_token_at: r.first_token_at,
            last_token_at: r.last_token_at,
            speculative: r.speculative,
        }
    }
}

/// `CLOCK_MONOTONIC` ns of an `Instant` in the past (both read that clock).
fn instant_ns(at: Option<Instant>) -> u64 {
    at.map_or(0, |at| {
        monotonic_ns().saturating_sub(at.elapsed().as_nanos() as u64)
    })
}

/// Token entries per frame: with 20 alternatives an entry takes under 200
/// bytes, so a frame stays well within the ring's 64 KiB frame limit.
const ENTRIES_PER_FRAME: usize = 128;

/// Writes a step's tokens, in as few frames as fit.
pub(super) fn send_tokens(
    endpoint: &mut WorkerEndpoint,
    entries: Vec<TokenEntry>,
) -> Result<(), WorkerError> {
    if entries.len() <= ENTRIES_PER_FRAME {
        return Ok(send_event(endpoint, &Event::Tokens(Tokens { entries }))?);
    }
    for chunk in entries.chunks(ENTRIES_PER_FRAME) {
        let event = Event::Tokens(Tokens {
            entries: chunk.to_vec(),
        });
        send_event(endpoint, &event)?;
    }
    Ok(())
}

/// Sends the request's error (if any) and its `Done`.
pub(super) fn finish(
    endpoint: &mut WorkerEndpoint,
    r: &Report,
    tracked: &Tracked,
) -> Result<(), WorkerError> {
    if let Some((code, message)) = &r.error {
        let event = Event::Error(ErrorMsg {
            request_id: r.id,
            code: *code,
            message: truncate(message),
        });
        send_event(endpoint, &event)?;
    }
    let span = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_micros() as u64,
        _ => 0,
    };
    let done = Done {
        request_id: r.id,
        finish_reason: r.reason,
        prompt_tokens: r.prompt_tokens as u32,
        completion_tokens: r.generated as u32,
        prefill_us: span(r.admitted_at, r.first_token_at),
        decode_us: span(r.first_token_at, r.last_token_at),
        cached_tokens: r.cached_tokens as u32,
        received_ns: tracked.received_ns,
        admitted_ns: instant_ns(r.admitted_at),
        first_token_ns: tracked.first_token_ns,
        draft_tokens: r.speculative.drafted as u32,
        accepted_draft_tokens: r.speculative.accepted as u32,
    };
    send_event(endpoint, &Event::Done(done))?;
    Ok(())
}
