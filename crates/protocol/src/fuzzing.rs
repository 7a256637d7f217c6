//! The message decoders under hostile bytes: the entry point of the
//! `protocol_messages` fuzz target (`fuzz/`) and of the corpus test
//! (`tests/fuzz_corpus.rs`), which replays every corpus file through it.
//!
//! The input is a sequence of frames, each decoded as a [`Request`] (what a
//! worker reads) or an [`Event`] (what the front-end reads). Decoding must
//! never panic, and what decodes must round-trip: encoding it and decoding
//! the result gives the same message, and encoding that again gives the same
//! bytes. Submit parts go through one [`SubmitAssembler`], as in a worker;
//! every request it completes is chunked again with
//! [`Submit::encode_frames`] and must reassemble to itself; Embed parts
//! likewise go through one [`EmbedAssembler`] and [`Embed::encode_frames`].
//!
//! Frame layout: `sel u8 | kind u16 | flags u16 | id | len u16 | payload`,
//! little endian. Bit 0 of `sel` picks an event (1) or a request (0); bit 1
//! a one-byte request id (0) or eight bytes (1), so that small ids, which
//! make chunks meet in the assembler, are easy to find.

use crate::embed::{Embed, EmbedAssembler};
use crate::messages::{Event, FrameMeta, Request};
use crate::route::Delivery;
use crate::submit::{Submit, SubmitAssembler};

/// Prompts longer than this are refused by the assembler (bounds memory).
const MAX_PROMPT_TOKENS: usize = 4096;

/// What one input did, for tests that check the decoders accept what they
/// should.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Frames decoded as a request.
    pub requests: usize,
    /// Frames decoded as an event.
    pub events: usize,
    /// Whole requests the assembler completed.
    pub submits: usize,
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
}

/// Runs one fuzz input; panics when an invariant breaks.
pub fn frames(data: &[u8]) -> Outcome {
    let mut input = Input(data);
    let mut assembler = SubmitAssembler::new(MAX_PROMPT_TOKENS);
    let mut embeds = EmbedAssembler::new(MAX_PROMPT_TOKENS);
    let mut outcome = Outcome::default();
    while let Some(sel) = input.u8() {
        let (Some(kind), Some(flags)) = (input.u16(), input.u16()) else {
            break;
        };
        let request_id = if sel & 2 == 0 {
            input.u8().map(u64::from)
        } else {
            input.u64()
        };
        let Some(request_id) = request_id else { break };
        let len = input.u16().map_or(0, usize::from);
        let payload = input.take(len.min(input.0.len())).unwrap_or_default();
        let meta = FrameMeta {
            kind,
            flags,
            request_id,
        };
        if sel & 1 == 1 {
            if let Ok(event) = Event::decode(meta, payload) {
                event_round_trip(&event);
                check_delivery(event);
                outcome.events += 1;
            }
            continue;
        }
        let Ok(request) = Request::decode(meta, payload) else {
            continue;
        };
        request_round_trip(&request);
        outcome.requests += 1;
        match request {
            Request::Submit(part) => {
                if let Ok(Some(submit)) = assembler.push(part) {
                    submit_round_trip(&submit, usize::from(sel >> 2) * 64 + 64);
                    outcome.submits += 1;
                }
            }
            Request::Embed(part) => {
                if let Ok(Some(embed)) = embeds.push(part) {
                    embed_round_trip(&embed, usize::from(sel >> 2) * 64 + 64);
                }
            }
            Request::Cancel { request_id } => {
                assembler.cancel(request_id);
                embeds.cancel(request_id);
            }
            _ => {}
        }
    }
    outcome
}

/// Tokens and Done reach a request (never the control channel), one
/// delivery per token entry.
fn check_delivery(event: Event) {
    let expected = match &event {
        Event::Tokens(t) => t.entries.len(),
        _ => 1,
    };
    let mut delivered = 0;
    event.deliver(|id, delivery, _| {
        delivered += 1;
        if matches!(delivery, Delivery::Token(_) | Delivery::Done(_)) {
            assert_ne!(id, 0, "a token or Done routed to the control channel");
        }
    });
    assert_eq!(delivered, expected);
}

fn request_round_trip(request: &Request) {
    let mut bytes = Vec::new();
    let meta = request.encode(&mut bytes);
    let again = Request::decode(meta, &bytes).expect("an encoded request decodes");
    assert_eq!(&again, request, "request changed in a round trip");
    let mut bytes2 = Vec::new();
    assert_eq!(again.encode(&mut bytes2), meta);
    assert_eq!(bytes2, bytes, "request encoding is not canonical");
}

fn event_round_trip(event: &Event) {
    let mut bytes = Vec::new();
    let meta = event.encode(&mut bytes);
    let again = Event::decode(meta, &bytes).expect("an encoded event decodes");
    assert_eq!(&again, event, "event changed in a round trip");
    let mut bytes2 = Vec::new();
    assert_eq!(again.encode(&mut bytes2), meta);
    assert_eq!(bytes2, bytes, "event encoding is not canonical");
}

/// A completed request, chunked into frames of `max_payload` bytes, comes
/// back whole from a fresh assembler.
fn submit_round_trip(submit: &Submit, max_payload: usize) {
    let Ok(frames) = submit.encode_frames(max_payload) else {
        // Frames too small for the parameters: refused, never split wrong.
        return;
    };
    let mut assembler = SubmitAssembler::new(MAX_PROMPT_TOKENS);
    let mut done = None;
    for (i, frame) in frames.iter().enumerate() {
        assert!(frame.payload.len() <= max_payload, "frame over the limit");
        let Ok(Request::Submit(part)) = Request::decode(frame.meta, &frame.payload) else {
            panic!("chunk {i} of an encoded submit does not decode");
        };
        let got = assembler.push(part).expect("an encoded chunk is accepted");
        assert!(done.is_none(), "chunks after the request was complete");
        done = got;
    }
    assert_eq!(done.as_ref(), Some(submit), "submit changed in chunking");
    assert_eq!(assembler.pending(), 0);
}

/// A completed embedding request, chunked again, comes back whole.
fn embed_round_trip(embed: &Embed, max_payload: usize) {
    let Ok(frames) = embed.encode_frames(max_payload) else {
        // Frames too small for the lengths: refused, never split wrong.
        return;
    };
    let mut assembler = EmbedAssembler::new(MAX_PROMPT_TOKENS);
    let mut done = None;
    for (i, frame) in frames.iter().enumerate() {
        assert!(frame.payload.len() <= max_payload, "frame over the limit");
        let Ok(Request::Embed(part)) = Request::decode(frame.meta, &frame.payload) else {
            panic!("chunk {i} of an encoded embed does not decode");
        };
        let got = assembler.push(part).expect("an encoded chunk is accepted");
        assert!(done.is_none(), "chunks after the request was complete");
        done = got;
    }
    assert_eq!(done.as_ref(), Some(embed), "embed changed in chunking");
}

/// Frames as the front-end and a worker send them: the seeds of the corpus.
/// Each seed comes with what it must decode to.
pub fn seeds() -> Vec<(String, Vec<u8>, Outcome)> {
    use crate::messages::*;

    let params = SamplingParams {
        temperature: 0.7,
        top_p: 0.9,
        top_k: 40,
        logit_bias: vec![(5, -1.5)],
        seed: Some(42),
        max_tokens: 16,
        stop_token_ids: vec![2],
        logprobs: true,
        top_logprobs: 3,
        generated: 2,
        ..SamplingParams::default()
    };
    let mut seeds = Vec::new();
    let mut add = |name: &str, frames: Vec<(bool, FrameMeta, Vec<u8>)>, outcome: Outcome| {
        let mut out = Vec::new();
        for (event, meta, payload) in frames {
            out.push(u8::from(event) | 2);
            out.extend_from_slice(&meta.kind.to_le_bytes());
            out.extend_from_slice(&meta.flags.to_le_bytes());
            out.extend_from_slice(&meta.request_id.to_le_bytes());
            out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
            out.extend_from_slice(&payload);
        }
        seeds.push((name.to_owned(), out, outcome));
    };
    let req = |r: Request| {
        let mut p = Vec::new();
        let meta = r.encode(&mut p);
        (false, meta, p)
    };
    let ev = |e: Event| {
        let mut p = Vec::new();
        let meta = e.encode(&mut p);
        (true, meta, p)
    };
    let reqs = |n| Outcome {
        requests: n,
        ..Outcome::default()
    };
    let evs = |n| Outcome {
        events: n,
        ..Outcome::default()
    };
    add(
        "hello",
        vec![req(Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            generation: 3,
        }))],
        reqs(1),
    );
    add(
        "cancel-heartbeat-shutdown",
        vec![
            req(Request::Cancel { request_id: 9 }),
            req(Request::Heartbeat(Heartbeat { monotonic_ns: 77 })),
            req(Request::Shutdown),
        ],
        reqs(3),
    );
    let grammar = Grammar {
        kind: GrammarKind::JsonSchema,
        text: r#"{"type":"object","properties":{"é":{"enum":["a","b"]}}}"#.repeat(8),
    };
    for (name, prompt, max, grammar) in [
        ("submit-short", (1..=5).collect::<Vec<u32>>(), 65536, None),
        ("submit-chunked", (1..=200).collect::<Vec<u32>>(), 256, None),
        (
            "submit-grammar-chunked",
            (1..=100).collect::<Vec<u32>>(),
            200,
            Some(grammar),
        ),
    ] {
        let submit = Submit {
            request_id: 7,
            prompt,
            params: params.clone(),
            grammar,
        };
        let frames: Vec<_> = submit
            .encode_frames(max)
            .expect("a valid submit")
            .into_iter()
            .map(|f| (false, f.meta, f.payload))
            .collect();
        let n = frames.len();
        add(
            name,
            frames,
            Outcome {
                requests: n,
                submits: 1,
                ..Outcome::default()
            },
        );
    }
    add(
        "ready",
        vec![ev(Event::Ready(Ready {
            protocol_version: PROTOCOL_VERSION,
            model_id: "tiny".into(),
            context_length: 2048,
            vocab_size: 512,
            eos_token_ids: vec![2, 3],
            memory_used_bytes: 1 << 20,
            load_time_us: 1234,
        }))],
        evs(1),
    );
    add(
        "progress-stats-heartbeat",
        vec![
            ev(Event::LoadProgress(LoadProgress {
                bytes_loaded: 10,
                bytes_total: 100,
            })),
            ev(Event::Stats(Stats {
                active_memory: 1,
                peak_memory: 2,
                cache_memory: 3,
                active_sequences: 1,
                queue_depth: 0,
            })),
            ev(Event::Heartbeat(Heartbeat { monotonic_ns: 5 })),
        ],
        evs(3),
    );
    add(
        "tokens-done-error",
        vec![
            ev(Event::Tokens(Tokens {
                entries: vec![
                    TokenEntry {
                        request_id: 7,
                        token_id: 100,
                        logprob: Some(-0.25),
                        top_logprobs: vec![(100, -0.25), (101, f32::NEG_INFINITY)],
                    },
                    TokenEntry {
                        request_id: 8,
                        token_id: 3,
                        logprob: None,
                        top_logprobs: vec![],
                    },
                ],
            })),
            ev(Event::Done(Done {
                request_id: 7,
                finish_reason: FinishReason::Length,
                prompt_tokens: 5,
                completion_tokens: 1,
                ..Done::default()
            })),
            ev(Event::Error(ErrorMsg {
                request_id: 8,
                code: ErrorCode::Internal,
                message: "boom".into(),
            })),
        ],
        evs(3),
    );
    let embed = Embed {
        request_id: 9,
        inputs: vec![(1..40).collect(), vec![7]],
        pooling: crate::embed::Pooling::Mean,
        normalize: true,
    };
    let mut embed_frames: Vec<_> = embed
        .encode_frames(96)
        .expect("the seed's embed fits")
        .into_iter()
        .map(|f| (false, f.meta, f.payload))
        .collect();
    let parts = embed_frames.len();
    embed_frames.push(ev(Event::Embedding(crate::embed::Embedding {
        request_id: 9,
        index: 1,
        dims: 4,
        offset: 2,
        values: vec![0.5, -0.25],
    })));
    add(
        "embed-embedding",
        embed_frames,
        Outcome {
            requests: parts,
            events: 1,
            submits: 0,
        },
    );
    seeds
}
