//! Hostile and broken clients against a real `mlxd serve` and its worker,
//! over loopback: malformed, mistyped, oversized and out-of-range bodies,
//! model names that try to reach files or URLs, HTTP/1.0 and garbage on the
//! wire, clients that send slowly or not at all, and more idle connections
//! than the daemon accepts. Each gets OpenAI's error body with the right
//! 4xx, or is cut by a limit; afterwards the daemon still answers `/health`
//! and generates.
//!
//! The validation rules themselves are unit-tested in `crates/api` and the
//! handlers in `crates/server/src/http/tests.rs`; this battery checks that
//! they hold end to end, through the real listener and body reading.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

const CHAT: &str = "/v1/chat/completions";

fn chat(d: &Daemon, body: &[u8]) -> Reply {
    post_bytes(d.port, CHAT, &[], body)
}

/// A 400 naming `param` (`None`: the body as a whole).
fn assert_400(reply: &Reply, param: Option<&str>) {
    let error = reply.openai_error(400);
    assert_eq!(error["param"].as_str(), param, "{error}");
}

#[test]
fn malformed_bodies_get_openai_errors_and_the_daemon_keeps_serving() {
    let mut d = Daemon::start(&[], &[], &[]);

    // Not JSON, or not an object.
    assert_400(&chat(&d, br#"{"model": "tiny", "messages": ["#), None);
    assert_400(&chat(&d, b""), None);
    assert_400(&chat(&d, b"[1, 2, 3]"), None);
    assert_400(&chat(&d, b"null"), None);

    // Wrong types, missing fields, empty messages.
    assert_400(
        &chat(&d, br#"{"model": "tiny", "messages": "hi"}"#),
        Some("messages"),
    );
    assert_400(
        &chat(
            &d,
            br#"{"model": "tiny", "messages": [{"role": "user", "content": 5}]}"#,
        ),
        Some("messages[0].content"),
    );
    assert_400(
        &chat(&d, br#"{"model": ["tiny"], "messages": []}"#),
        Some("model"),
    );
    assert_400(&chat(&d, br#"{"model": "tiny"}"#), Some("messages"));
    // (Without `model` a request gets the default model: tests/first_run.rs.)
    assert_400(
        &chat(
            &d,
            br#"{"model": "", "messages": [{"role": "user", "content": "hi"}]}"#,
        ),
        Some("model"),
    );
    let empty = chat(&d, br#"{"model": "tiny", "messages": []}"#);
    assert_eq!(empty.openai_error(400)["param"], "messages");

    // Invalid UTF-8 and NUL bytes on the wire are not JSON.
    assert_400(
        &chat(
            &d,
            b"{\"model\": \"tiny\", \"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}",
        ),
        None,
    );
    assert_400(
        &chat(
            &d,
            b"{\"model\": \"tiny\", \"messages\": [{\"role\": \"user\", \"content\": \"a\0b\"}]}",
        ),
        None,
    );

    // Numbers out of range, of the wrong kind, or beyond what JSON's
    // doubles hold (NaN is not JSON; 1e999 is its nearest spelling).
    let with = |extra: &str| {
        format!(
            r#"{{"model": "tiny", "messages": [{{"role": "user", "content": "hi"}}], {extra}}}"#
        )
    };
    for (extra, param) in [
        (r#""max_tokens": 4294967296"#, Some("max_tokens")),
        (r#""max_tokens": 1e30"#, Some("max_tokens")),
        (r#""max_tokens": -1"#, Some("max_tokens")),
        (
            r#""max_completion_tokens": 0"#,
            Some("max_completion_tokens"),
        ),
        (r#""temperature": -0.5"#, Some("temperature")),
        (r#""temperature": 3"#, Some("temperature")),
        (r#""temperature": "hot""#, Some("temperature")),
        (r#""temperature": "NaN""#, Some("temperature")),
        (r#""temperature": 1e999"#, None),
        (r#""top_p": 0"#, Some("top_p")),
        (r#""repetition_penalty": 1e300"#, Some("repetition_penalty")),
        (r#""n": 1000"#, Some("n")),
        (r#""logit_bias": {"x": 1}"#, Some("logit_bias")),
    ] {
        let reply = chat(&d, with(extra).as_bytes());
        let error = reply.openai_error(400);
        assert_eq!(error["param"].as_str(), param, "{extra}: {error}");
    }
    let stops: Vec<String> = (0..100).map(|i| format!("stop{i}")).collect();
    let body = with(&format!(
        r#""stop": {}"#,
        serde_json::to_string(&stops).unwrap()
    ));
    assert_400(&chat(&d, body.as_bytes()), Some("stop"));

    // Models that do not exist, or names that try to reach files or URLs:
    // requests name models, they never open paths.
    let tiny_path = common::tiny_model().display().to_string();
    for model in [
        "no-such-model",
        "../../etc/passwd",
        "/etc/passwd",
        "~/.ssh/id_rsa",
        "tiny/../tiny",
        tiny_path.as_str(),
        "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
        "http://127.0.0.1:9/model",
        "file:///etc/passwd",
        "ti\u{0}ny",
    ] {
        let body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 1,
        });
        let reply = chat(&d, body.to_string().as_bytes());
        let error = reply.openai_error(404);
        assert_eq!(error["code"], "model_not_found", "{model}");
        assert_eq!(error["param"], "model", "{model}");
    }

    // A body over the 16 MiB default limit.
    let mut big = br#"{"model": "tiny", "messages": [{"role": "user", "content": ""#.to_vec();
    big.resize(20 << 20, b'a');
    big.extend_from_slice(br#""}]}"#);
    let error = chat(&d, &big).openai_error(413);
    assert_eq!(error["code"], "request_too_large");

    // Not declared as JSON; no such route; wrong method.
    let request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                    Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}";
    raw(d.port, request).unwrap().openai_error(415);
    get(d.port, "/v1/../../etc/passwd", &[]).openai_error(404);
    get(d.port, CHAT, &[]).openai_error(405);

    // HTTP/1.0: answered in kind, then the connection closes.
    let reply = raw(d.port, b"GET /health HTTP/1.0\r\n\r\n").expect("a response");
    assert_eq!((reply.status, reply.version.as_str()), (200, "HTTP/1.0"));
    let request = b"POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\n\
                    Content-Length: 8\r\n\r\n{\"model\"";
    assert_400(&raw(d.port, request).expect("a response"), None);

    // Garbage instead of a request line, and a header too large to
    // buffer: refused by the HTTP layer (no JSON there), or closed.
    for request in [
        b"\x00\x01\x02 garbage\r\n\r\n".to_vec(),
        format!(
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(1 << 20)
        )
        .into_bytes(),
    ] {
        if let Some(reply) = raw(d.port, &request) {
            assert!((400..500).contains(&reply.status), "{}", reply.status);
        }
    }

    // Valid JSON that cannot fit: 10,000 messages overflow the context.
    let messages: Vec<serde_json::Value> = (0..10_000)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            serde_json::json!({"role": role, "content": "hello there"})
        })
        .collect();
    let body = serde_json::json!({"model": "tiny", "messages": messages, "max_tokens": 1});
    let error = chat(&d, body.to_string().as_bytes()).openai_error(400);
    assert_eq!(error["code"], "context_length_exceeded", "{error}");

    // NUL as an escaped character is valid text: it is generated from.
    let body = with(r#""max_tokens": 1, "stop": ["\u0000"]"#).replace("\"hi\"", r#""a\u0000b""#);
    let reply = chat(&d, body.as_bytes());
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );

    d.assert_healthy(&[]);
}

#[test]
fn slow_and_silent_clients_are_cut_by_the_read_timeout() {
    let mut d = Daemon::start(&["--read-timeout", "1s"], &[], &[]);

    // Headers trickled a byte every 100 ms (slowloris): the connection is
    // closed long before the 600 bytes are all sent.
    let mut stream = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let head = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: x\r\n{}",
        "X-Slow: 1\r\n".repeat(50)
    );
    let cut = head.bytes().position(|b| {
        std::thread::sleep(Duration::from_millis(100));
        stream.write_all(&[b]).is_err() || peer_closed(&stream)
    });
    assert!(cut.is_some(), "a slowloris sent all its headers");

    // A body trickled slowly: 408 with OpenAI's body when the time is up.
    let stream = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        let head = format!(
            "POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 1000\r\n\r\n{{"
        );
        writer.write_all(head.as_bytes()).unwrap();
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(100));
            if writer.write_all(b" ").is_err() {
                return;
            }
        }
    });
    let reply = parse_reply(&read_to_close(&stream)).expect("a response");
    let error = reply.openai_error(408);
    assert_eq!(error["code"], "request_timeout");
    trickle.join().unwrap();

    // A connection that never sends anything is closed too, and so is one
    // left idle after a keep-alive request.
    let idle = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    idle.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(read_until_closed(&idle), (Vec::new(), true));
    let mut kept = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    kept.set_read_timeout(Some(TIMEOUT)).unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (bytes, closed) = read_until_closed(&kept);
    assert_eq!(parse_reply(&bytes).expect("a response").status, 200);
    assert!(closed, "a kept-alive connection left idle stays open");

    d.assert_healthy(&[]);
}

/// Whether the server closed its side (a read finds EOF or a reset).
fn peer_closed(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => true, // an error response: the server is done with us
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// TCP sockets the process `pid` holds open (listeners included).
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn idle_connections_beyond_the_limit_wait_and_are_cut_in_turn() {
    const LIMIT: usize = 50;
    const CLIENTS: usize = 1000;
    let mut d = Daemon::start(
        &[
            "--max-connections",
            &LIMIT.to_string(),
            "--read-timeout",
            "1s",
        ],
        &[],
        &[],
    );
    let before = open_sockets(d.pid());
    let idle: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s
        })
        .collect();
    // The daemon takes connections up to its limit, and never more, while
    // the rest wait in the backlog (on the main listener only; the admin
    // listener has its own limit).
    assert!(
        wait_until(TIMEOUT, || open_sockets(d.pid()) >= before + LIMIT / 2),
        "the daemon accepted no connection"
    );
    for _ in 0..20 {
        let open = open_sockets(d.pid());
        assert!(
            open <= before + LIMIT,
            "{open} sockets open, {before} before and a limit of {LIMIT}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every idle connection is accepted in turn and closed by the timeout.
    for (i, s) in idle.iter().enumerate() {
        let (bytes, closed) = read_until_closed(s);
        assert!(closed && bytes.is_empty(), "connection {i}: {bytes:?}");
    }
    drop(idle);
    d.assert_healthy(&[]);
}
