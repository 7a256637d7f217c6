//! Splitting worker events into what each request stream (or the
//! worker-wide control channel) receives. Transport-neutral: the front-end's
//! demultiplexer calls [`Event::deliver`] with whatever routing it has.

use crate::embed::Embedding;
use crate::messages::{Done, ErrorMsg, Event, Heartbeat, LoadProgress, Ready, Stats, TokenEntry};

/// What one request's stream, or the control channel (request id 0), gets.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// A token of this request.
    Token(TokenEntry),
    /// This request finished (its last delivery).
    Done(Done),
    /// This request (or, on the control channel, the worker) failed.
    Error(ErrorMsg),
    /// Control: the worker is ready.
    Ready(Ready),
    /// Control: loading progress.
    LoadProgress(LoadProgress),
    /// Control: figures.
    Stats(Stats),
    /// Control: heartbeat reply.
    Heartbeat(Heartbeat),
    /// Part of one of this request's embedding vectors.
    Embedding(Embedding),
}

impl Event {
    /// Calls `emit(request_id, delivery, last)` for each piece of this
    /// event: one per token entry, one for everything else; `last` marks the
    /// end of a request's stream. Request id 0 means the control channel.
    pub fn deliver(self, mut emit: impl FnMut(u64, Delivery, bool)) {
        match self {
            Event::Tokens(t) => {
                for entry in t.entries {
                    emit(entry.request_id, Delivery::Token(entry), false);
                }
            }
            Event::Done(d) => emit(d.request_id, Delivery::Done(d), true),
            // A request error is followed by Done; the stream ends there.
            Event::Error(e) => emit(e.request_id, Delivery::Error(e), false),
            Event::Ready(r) => emit(0, Delivery::Ready(r), false),
            Event::LoadProgress(p) => emit(0, Delivery::LoadProgress(p), false),
            Event::Stats(s) => emit(0, Delivery::Stats(s), false),
            Event::Heartbeat(h) => emit(0, Delivery::Heartbeat(h), false),
            Event::Embedding(e) => emit(e.request_id, Delivery::Embedding(e), false),
        }
    }
}
