//! Round trips, chunking and hostile-input tests of the protocol.

use proptest::prelude::*;
use protocol::*;

fn params() -> impl Strategy<Value = SamplingParams> {
    (
        (
            0.0f32..4.0,
            0.01f32..=1.0,
            0u32..100,
            0.0f32..=1.0,
            0.5f32..2.0,
        ),
        (0u32..256, -2.0f32..2.0, -2.0f32..2.0),
        proptest::collection::vec((any::<u32>(), -100.0f32..100.0), 0..8),
        (any::<Option<u64>>(), 1u32..4096),
        proptest::collection::vec(any::<u32>(), 0..8),
        (any::<bool>(), 0u8..=20, any::<bool>(), any::<u32>()),
    )
        .prop_map(
            |(
                (t, p, k, m, r),
                (ctx, pres, freq),
                bias,
                (seed, max),
                stop,
                (lp, top, ie, generated),
            )| {
                SamplingParams {
                    temperature: t,
                    top_p: p,
                    top_k: k,
                    min_p: m,
                    repetition_penalty: r,
                    repetition_context_size: ctx,
                    presence_penalty: pres,
                    frequency_penalty: freq,
                    logit_bias: bias,
                    seed,
                    max_tokens: max,
                    stop_token_ids: stop,
                    logprobs: lp,
                    top_logprobs: top,
                    ignore_eos: ie,
                    generated,
                }
            },
        )
}

fn token_entry() -> impl Strategy<Value = TokenEntry> {
    (
        1u64..u64::MAX,
        any::<u32>(),
        proptest::option::of(-50.0f32..0.0),
        proptest::collection::vec((any::<u32>(), -50.0f32..0.0), 0..=20),
    )
        .prop_map(|(request_id, token_id, logprob, top_logprobs)| TokenEntry {
            request_id,
            token_id,
            logprob,
            top_logprobs,
        })
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (
            any::<u32>(),
            ".{0,40}",
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(any::<u32>(), 0..4),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(v, m, c, vs, eos, mem, t)| Event::Ready(Ready {
                protocol_version: v,
                model_id: m,
                context_length: c,
                vocab_size: vs,
                eos_token_ids: eos,
                memory_used_bytes: mem,
                load_time_us: t,
            })),
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| Event::LoadProgress(LoadProgress {
            bytes_loaded: a,
            bytes_total: b
        })),
        proptest::collection::vec(token_entry(), 0..16)
            .prop_map(|entries| Event::Tokens(Tokens { entries })),
        (
            1u64..u64::MAX,
            0u8..4,
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            (any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>())
        )
            .prop_map(
                |(id, fr, p, c, pre, dec, (cached, rx, adm, first))| Event::Done(Done {
                    request_id: id,
                    finish_reason: [
                        FinishReason::Stop,
                        FinishReason::Length,
                        FinishReason::Cancelled,
                        FinishReason::Error
                    ][fr as usize],
                    prompt_tokens: p,
                    completion_tokens: c,
                    prefill_us: pre,
                    decode_us: dec,
                    cached_tokens: cached,
                    received_ns: rx,
                    admitted_ns: adm,
                    first_token_ns: first,
                    draft_tokens: (cached % 97),
                    accepted_draft_tokens: (cached % 97) / 2,
                })
            ),
        (any::<u64>(), ".{0,60}").prop_map(|(id, m)| Event::Error(ErrorMsg {
            request_id: id,
            code: ErrorCode::OutOfMemory,
            message: m
        })),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(a, p, c, s, q)| Event::Stats(Stats {
                active_memory: a,
                peak_memory: p,
                cache_memory: c,
                active_sequences: s,
                queue_depth: q
            })),
        any::<u64>().prop_map(|t| Event::Heartbeat(Heartbeat { monotonic_ns: t })),
    ]
}

proptest! {
    #[test]
    fn every_event_survives_a_round_trip(ev in event()) {
        let mut buf = Vec::new();
        let meta = ev.encode(&mut buf);
        prop_assert!(meta.kind >= 1 && meta.kind <= Kind::MAX);
        prop_assert_eq!(Event::decode(meta, &buf).expect("decodes"), ev);
    }

    #[test]
    fn every_truncation_of_an_event_is_an_error(ev in event()) {
        let mut buf = Vec::new();
        let meta = ev.encode(&mut buf);
        for cut in 0..buf.len() {
            prop_assert!(Event::decode(meta, &buf[..cut]).is_err());
        }
        buf.push(0);
        prop_assert!(Event::decode(meta, &buf).is_err(), "trailing byte accepted");
    }

    #[test]
    fn decoding_random_bytes_never_panics(
        kind in 0u16..16, flags in any::<u16>(), id in any::<u64>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let meta = FrameMeta { kind, flags, request_id: id };
        let _ = Event::decode(meta, &bytes);
        let _ = Request::decode(meta, &bytes);
    }

    #[test]
    fn chunked_prompts_reassemble_exactly(
        prompt in proptest::collection::vec(any::<u32>(), 0..3000),
        params in params(),
        max_payload in 200usize..4096,
        id in 1u64..1000,
        grammar in proptest::option::of(("[\\PC]{0,3000}", 1u8..=3)),
    ) {
        let grammar = grammar.map(|(text, kind)| Grammar {
            kind: GrammarKind::from_u8(kind).expect("a kind"),
            text,
        });
        let submit = Submit { request_id: id, prompt, params, grammar };
        let frames = submit.encode_frames(max_payload).expect("fits");
        let mut asm = SubmitAssembler::new(4096);
        let mut done = None;
        for (i, f) in frames.iter().enumerate() {
            prop_assert!(f.payload.len() <= max_payload);
            let last = i + 1 == frames.len();
            prop_assert_eq!(f.meta.flags & flags::MORE == 0, last);
            let Request::Submit(part) = Request::decode(f.meta, &f.payload).expect("decodes") else {
                panic!("not a submit");
            };
            let got = asm.push(part).expect("valid chunk");
            prop_assert_eq!(got.is_some(), last);
            done = got.or(done);
        }
        prop_assert_eq!(done.expect("assembled"), submit);
        prop_assert_eq!(asm.pending(), 0);
    }
}

#[test]
fn requests_round_trip() {
    let reqs = [
        Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            generation: 7,
        }),
        Request::Cancel { request_id: 9 },
        Request::Heartbeat(Heartbeat { monotonic_ns: 123 }),
        Request::Shutdown,
        Request::Submit(SubmitPart::Head {
            request_id: 3,
            params: SamplingParams::default(),
            prompt_len: 2,
            grammar: None,
            tokens: vec![1, 2],
            grammar_bytes: vec![],
            more: false,
        }),
        Request::Submit(SubmitPart::Head {
            request_id: 3,
            params: SamplingParams::default(),
            prompt_len: 1,
            grammar: Some((GrammarKind::Lark, 9)),
            tokens: vec![1],
            grammar_bytes: b"start: /a".to_vec(),
            more: true,
        }),
        Request::Submit(SubmitPart::Continuation {
            request_id: 3,
            tokens: vec![],
            grammar_bytes: b"/".to_vec(),
            more: false,
        }),
    ];
    for req in reqs {
        let mut buf = Vec::new();
        let meta = req.encode(&mut buf);
        assert_eq!(Request::decode(meta, &buf).expect("decodes"), req);
    }
}

#[test]
fn messages_in_the_wrong_direction_are_rejected() {
    let mut buf = Vec::new();
    let meta = Request::Shutdown.encode(&mut buf);
    assert_eq!(
        Event::decode(meta, &buf),
        Err(ProtocolError::UnknownKind(Kind::Shutdown as u16))
    );
    let mut buf = Vec::new();
    let meta = Event::Stats(Stats::default()).encode(&mut buf);
    assert!(matches!(
        Request::decode(meta, &buf),
        Err(ProtocolError::UnknownKind(_))
    ));
    assert!(matches!(
        Event::decode(
            FrameMeta {
                kind: 0,
                flags: 0,
                request_id: 0
            },
            &[]
        ),
        Err(ProtocolError::UnknownKind(0))
    ));
}

#[test]
fn the_handshake_rejects_another_version() {
    assert!(check_version(PROTOCOL_VERSION).is_ok());
    assert_eq!(
        check_version(PROTOCOL_VERSION + 1),
        Err(ProtocolError::VersionMismatch {
            theirs: PROTOCOL_VERSION + 1,
            ours: PROTOCOL_VERSION
        })
    );
}

#[test]
fn out_of_range_fields_are_rejected() {
    let bad_params = [
        SamplingParams {
            temperature: f32::NAN,
            ..SamplingParams::default()
        },
        SamplingParams {
            top_p: 0.0,
            ..SamplingParams::default()
        },
        SamplingParams {
            top_logprobs: 21,
            ..SamplingParams::default()
        },
        SamplingParams {
            logit_bias: vec![(1, f32::INFINITY)],
            ..SamplingParams::default()
        },
    ];
    for params in bad_params {
        let req = Request::Submit(SubmitPart::Head {
            request_id: 1,
            params,
            prompt_len: 0,
            grammar: None,
            tokens: vec![],
            grammar_bytes: vec![],
            more: false,
        });
        let mut buf = Vec::new();
        let meta = req.encode(&mut buf);
        assert!(matches!(
            Request::decode(meta, &buf),
            Err(ProtocolError::Invalid(_))
        ));
    }
    // A token entry with a NaN logprob, and a Done without a request id.
    let mut buf = Vec::new();
    let meta = Event::Tokens(Tokens {
        entries: vec![TokenEntry {
            request_id: 1,
            token_id: 2,
            logprob: Some(f32::NAN),
            top_logprobs: vec![],
        }],
    })
    .encode(&mut buf);
    assert!(Event::decode(meta, &buf).is_err());
    let mut buf = Vec::new();
    let mut meta = Event::Done(Done {
        request_id: 5,
        finish_reason: FinishReason::Stop,
        prompt_tokens: 1,
        completion_tokens: 1,
        prefill_us: 1,
        decode_us: 1,
        ..Done::default()
    })
    .encode(&mut buf);
    meta.request_id = 0;
    assert!(Event::decode(meta, &buf).is_err());
    meta.request_id = 5;
    meta.flags = flags::MORE;
    assert!(Event::decode(meta, &buf).is_err(), "flags on an event");
}

#[test]
fn inconsistent_chunks_are_rejected() {
    let mut asm = SubmitAssembler::new(100);
    let cont = SubmitPart::Continuation {
        request_id: 4,
        tokens: vec![1],
        grammar_bytes: vec![],
        more: false,
    };
    assert!(matches!(
        asm.push(cont.clone()),
        Err(ProtocolError::BadChunk { .. })
    ));
    let head = |prompt_len, more| SubmitPart::Head {
        request_id: 4,
        params: SamplingParams::default(),
        prompt_len,
        grammar: None,
        tokens: vec![1, 2],
        grammar_bytes: vec![],
        more,
    };
    // Announced 3, delivered 2 + 1... then one too many.
    assert_eq!(asm.push(head(3, true)).expect("ok"), None);
    let extra = SubmitPart::Continuation {
        request_id: 4,
        tokens: vec![5, 6],
        grammar_bytes: vec![],
        more: false,
    };
    assert!(asm.push(extra).is_err());
    assert_eq!(asm.pending(), 0);
    // Too long for the assembler's limit.
    assert!(asm.push(head(101, true)).is_err());
    // Last chunk short of the announced length.
    assert!(asm.push(head(5, false)).is_err());
    // Cancel drops a partial request.
    assert_eq!(asm.push(head(3, true)).expect("ok"), None);
    assert!(asm.cancel(4));
    assert_eq!(asm.pending(), 0);
}

#[test]
fn grammar_chunks_must_follow_the_prompt_and_match_their_length() {
    let head = |tokens: Vec<u32>, bytes: &[u8], more| SubmitPart::Head {
        request_id: 6,
        params: SamplingParams::default(),
        prompt_len: 2,
        grammar: Some((GrammarKind::Regex, 4)),
        tokens,
        grammar_bytes: bytes.to_vec(),
        more,
    };
    let cont = |tokens: Vec<u32>, bytes: &[u8], more| SubmitPart::Continuation {
        request_id: 6,
        tokens,
        grammar_bytes: bytes.to_vec(),
        more,
    };
    let mut asm = SubmitAssembler::new(100);
    // Bytes before the last prompt token.
    assert!(asm.push(head(vec![1], b"a", true)).is_err());
    // More bytes than announced.
    assert!(asm.push(head(vec![1, 2], b"abcde", false)).is_err());
    // Fewer bytes than announced at the last chunk.
    assert!(asm.push(head(vec![1, 2], b"ab", false)).is_err());
    // Not UTF-8.
    assert_eq!(
        asm.push(head(vec![1, 2], b"ab\xff", true)).expect("ok"),
        None
    );
    assert!(asm.push(cont(vec![], b"c", false)).is_err());
    // In order, split anywhere.
    assert_eq!(asm.push(head(vec![1], b"", true)).expect("ok"), None);
    assert_eq!(asm.push(cont(vec![2], b"a|", true)).expect("ok"), None);
    let done = asm
        .push(cont(vec![], b"bc", false))
        .expect("ok")
        .expect("whole");
    assert_eq!(done.prompt, vec![1, 2]);
    assert_eq!(
        done.grammar,
        Some(Grammar {
            kind: GrammarKind::Regex,
            text: "a|bc".into()
        })
    );
    assert_eq!(asm.pending(), 0);
    // Bytes on a request without a grammar, and an unknown kind, never
    // decode.
    let mut buf = Vec::new();
    let meta = Request::Submit(SubmitPart::Head {
        request_id: 1,
        params: SamplingParams::default(),
        prompt_len: 0,
        grammar: None,
        tokens: vec![],
        grammar_bytes: b"x".to_vec(),
        more: false,
    })
    .encode(&mut buf);
    assert!(Request::decode(meta, &buf).is_err());
    assert!(GrammarKind::from_u8(0).is_err() && GrammarKind::from_u8(4).is_err());
}

#[test]
fn a_step_delivers_one_token_to_each_request_and_done_ends_a_stream() {
    let ev = Event::Tokens(Tokens {
        entries: vec![
            TokenEntry {
                request_id: 1,
                token_id: 10,
                logprob: None,
                top_logprobs: vec![],
            },
            TokenEntry {
                request_id: 2,
                token_id: 20,
                logprob: Some(-0.5),
                top_logprobs: vec![(20, -0.5), (21, -1.5)],
            },
        ],
    });
    let mut got = Vec::new();
    ev.deliver(|id, d, last| got.push((id, d, last)));
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].0, got[1].0), (1, 2));
    assert!(got.iter().all(|g| !g.2));
    let mut got = Vec::new();
    Event::Done(Done {
        request_id: 2,
        finish_reason: FinishReason::Length,
        prompt_tokens: 1,
        completion_tokens: 2,
        prefill_us: 3,
        decode_us: 4,
        ..Done::default()
    })
    .deliver(|id, _, last| got.push((id, last)));
    assert_eq!(got, vec![(2, true)]);
}
