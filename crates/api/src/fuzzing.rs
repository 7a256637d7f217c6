//! The request parsers under hostile bodies: the entry point of the
//! `api_request` fuzz target (`fuzz/`) and of the corpus test
//! (`tests/fuzz_corpus.rs`), which replays every corpus file through it.
//!
//! Each input is a request body, given to [`parse_chat`],
//! [`parse_completion`], the Responses parser, and Ollama's
//! [`crate::ollama::parse_chat`] and [`crate::ollama::parse_generate`].
//! None may panic. A refusal is a 4xx whose body is
//! OpenAI's error object (`message`, `type`, `param`, `code`). An accepted
//! request holds only values the rest of the server can pass on unchecked:
//! finite sampling numbers within their documented ranges, at most
//! [`MAX_STOP`] non-empty stop strings, `n` within `1..=MAX_N`, non-empty
//! prompts, `logit_bias` sorted with each token once. The embedding
//! parsers (OpenAI's and Ollama's two) take every body as well: a refusal is
//! the same 4xx, an accepted request has 1 to 2,048 non-empty inputs (the
//! legacy Ollama route: at most one) and `dimensions` of at least 1.

use crate::error::ApiError;
use crate::request::Endpoint;
use crate::validate::{
    GenerationRequest, MAX_COMPLETION_LOGPROBS, MAX_N, MAX_STOP, MAX_TOP_LOGPROBS, PromptInput,
    parse_chat, parse_completion,
};

/// What one body did: `(chat accepted, completion accepted)`. The body is
/// also given to the Responses parser, whose accepted requests must hold
/// what an accepted chat request holds, and to Ollama's `/api/chat` and
/// `/api/generate` parsers, held to the same rules.
pub fn request_body(body: &[u8]) -> (bool, bool) {
    let responses = crate::responses::parse_responses_for(body, None);
    check(Endpoint::Responses, responses.map(|r| r.generation(&[])));
    for parsed in [
        crate::ollama::parse_chat(body, None),
        crate::ollama::parse_generate(body, None),
    ] {
        match parsed {
            Ok(req) => check_request(req.generation.endpoint, &req.generation, true),
            Err(e) => check_error(&e),
        }
    }
    use crate::embeddings::{parse_ollama_embed, parse_ollama_legacy, parse_openai};
    check_embed(parse_openai(body, Some("default")), 1);
    check_embed(parse_ollama_embed(body), 1);
    check_embed(parse_ollama_legacy(body), 0);
    (
        check(Endpoint::Chat, parse_chat(body)),
        check(Endpoint::Completion, parse_completion(body)),
    )
}

fn check(endpoint: Endpoint, parsed: Result<GenerationRequest, ApiError>) -> bool {
    match parsed {
        Ok(req) => {
            check_request(endpoint, &req, false);
            true
        }
        Err(e) => {
            check_error(&e);
            false
        }
    }
}

/// An embedding request's invariants: `least` to 2,048 non-empty inputs
/// (the legacy route carries at most one), `dimensions` of at least 1.
fn check_embed(parsed: Result<crate::embeddings::EmbedRequest, ApiError>, least: usize) {
    use crate::embeddings::{EmbedInput, MAX_INPUTS};
    match parsed {
        Ok(req) => {
            let most = if least == 0 { 1 } else { MAX_INPUTS };
            assert!((least..=most).contains(&req.inputs.len()), "{req:?}");
            assert!(req.inputs.iter().all(|i| match i {
                EmbedInput::Text(t) => !t.is_empty(),
                EmbedInput::Tokens(ids) => !ids.is_empty(),
            }));
            assert!(req.dimensions.is_none_or(|d| d >= 1));
        }
        Err(e) => check_error(&e),
    }
}

fn check_error(e: &ApiError) {
    let status = e.status();
    assert!((400..500).contains(&status), "{e:?} answers {status}");
    let body: serde_json::Value =
        serde_json::from_str(&e.body_json()).expect("the error body is JSON");
    let error = body.get("error").expect("an error object");
    assert!(error.get("message").is_some_and(|m| m.is_string()));
    assert!(error.get("type").is_some_and(|t| t.is_string()));
    assert!(
        error
            .get("param")
            .is_some_and(|p| p.is_string() || p.is_null())
    );
    assert!(
        error
            .get("code")
            .is_some_and(|c| c.is_string() || c.is_null())
    );
}

/// The rules an accepted request keeps; `ollama`: it came through Ollama's
/// parsers.
fn check_request(endpoint: Endpoint, req: &GenerationRequest, ollama: bool) {
    assert_eq!(req.endpoint, endpoint);
    assert!(!req.model.trim().is_empty(), "empty model accepted");
    let s = &req.sampling;
    let finite = [
        s.temperature,
        s.top_p,
        s.min_p,
        s.repetition_penalty,
        s.presence_penalty,
        s.frequency_penalty,
    ];
    assert!(finite.iter().all(|v| v.is_finite()), "{s:?}");
    assert!((0.0..=2.0).contains(&s.temperature), "{s:?}");
    assert!(s.top_p > 0.0 && s.top_p <= 1.0, "{s:?}");
    assert!((0.0..=1.0).contains(&s.min_p), "{s:?}");
    assert!(s.repetition_penalty > 0.0, "{s:?}");
    assert!((-2.0..=2.0).contains(&s.presence_penalty), "{s:?}");
    assert!((-2.0..=2.0).contains(&s.frequency_penalty), "{s:?}");
    assert!(
        s.logit_bias
            .iter()
            .all(|&(_, b)| (-100.0..=100.0).contains(&b)),
        "{s:?}"
    );
    assert!(
        s.logit_bias.windows(2).all(|w| w[0].0 < w[1].0),
        "logit_bias not sorted or repeated: {s:?}"
    );
    assert!(req.stop.len() <= MAX_STOP && req.stop.iter().all(|s| !s.is_empty()));
    assert!((1..=MAX_N).contains(&req.n), "n = {}", req.n);
    assert!(!req.prompts.is_empty());
    assert_eq!(req.choice_count(), req.prompts.len() * req.n as usize);
    match endpoint {
        Endpoint::Chat | Endpoint::Responses => {
            assert_eq!(req.prompts.len(), 1);
            assert!(matches!(req.prompts[0], PromptInput::Chat { .. }));
            assert!(req.max_tokens.is_none_or(|m| m >= 1));
            assert!(req.logprobs.is_none_or(|k| k <= MAX_TOP_LOGPROBS));
        }
        Endpoint::Completion => {
            for p in &req.prompts {
                match p {
                    PromptInput::Text(t) => assert!(!t.is_empty()),
                    PromptInput::Tokens(ids) => assert!(!ids.is_empty()),
                    PromptInput::Chat { .. } => panic!("a chat prompt in a completion"),
                }
            }
            // Ollama's have none with `num_predict: -1` (until the context
            // is full, which the server clips).
            let max = match req.max_tokens {
                None if ollama => 1,
                max => max.expect("completions always have a limit"),
            };
            assert!(max >= 1 || req.echo, "max_tokens 0 without echo");
            assert!(req.logprobs.is_none_or(|k| k <= MAX_COMPLETION_LOGPROBS));
        }
    }
    if !req.stream {
        assert!(!req.include_usage, "stream_options without stream");
    }
}

/// Bodies as clients send them: the seeds of the corpus, each with whether
/// chat and completions accept it.
pub fn seeds() -> Vec<(&'static str, &'static str, (bool, bool))> {
    vec![
        (
            "chat-minimal",
            r#"{"model":"m","messages":[{"role":"user","content":"Hi"}]}"#,
            (true, false),
        ),
        (
            "chat-full",
            r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]},{"role":"assistant","content":"Hello"},{"role":"developer","content":"x"}],"temperature":0.5,"top_p":0.9,"top_k":40,"min_p":0.05,"repetition_penalty":1.1,"presence_penalty":0.5,"frequency_penalty":-0.5,"logit_bias":{"5":-100,"7":3},"seed":-3,"max_completion_tokens":8,"max_tokens":9,"stop":["\n","END"],"n":2,"logprobs":true,"top_logprobs":5,"stream":true,"stream_options":{"include_usage":true},"user":"u","keep_alive":"5m","ignore_eos":false,"chat_template_kwargs":{"enable_thinking":false}}"#,
            (true, false),
        ),
        (
            "chat-tools",
            r#"{"model":"m","messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get","arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"c1","content":"sunny"}],"tools":[{"type":"function","function":{"name":"get","description":"d","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],"tool_choice":"auto"}"#,
            (true, false),
        ),
        (
            "completion-text",
            r#"{"model":"m","prompt":"Once upon a time","max_tokens":4,"temperature":0,"stop":"."}"#,
            (false, true),
        ),
        (
            "completion-batch",
            r#"{"model":"m","prompt":["a","b"],"n":2,"best_of":2,"echo":true,"max_tokens":0,"logprobs":2,"keep_alive":-1}"#,
            (false, true),
        ),
        (
            "completion-tokens",
            r#"{"model":"m","prompt":[[1,2,3],[4]],"suffix":"","seed":7,"stream":false}"#,
            (false, true),
        ),
        (
            "both",
            r#"{"model":"m","prompt":"x","messages":[{"role":"user","content":"y"}],"keep_alive":300}"#,
            (true, true),
        ),
        (
            "bad-json",
            r#"{"model":"m","messages":[{"role":"user","content":"Hi"}"#,
            (false, false),
        ),
        ("array-body", r#"[1,2,3]"#, (false, false)),
        (
            "wrong-types",
            r#"{"model":5,"messages":"hi","temperature":"hot","n":1.5}"#,
            (false, false),
        ),
        (
            "out-of-range",
            r#"{"model":"m","messages":[],"prompt":"","temperature":3,"top_p":0,"n":0,"stop":["a","b","c","d","e"]}"#,
            (false, false),
        ),
        (
            "huge-numbers",
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"repetition_penalty":1e300}"#,
            (false, false),
        ),
        (
            "duplicate-key",
            r#"{"model":"m","model":"n","prompt":"x"}"#,
            (false, false),
        ),
    ]
}
