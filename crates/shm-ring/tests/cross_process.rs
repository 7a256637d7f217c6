//! Two-process tests over a real shared mapping: the test binary re-executes
//! itself in a child role (see `child_role`), inheriting the region and
//! doorbell descriptors the way a worker does.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use protocol::{Delivery, Event, FinishReason, Request, SamplingParams, Submit};
use shm_ring::{
    ChildFds, Closed, Connection, ConnectionOptions, FrontEnd, RegionConfig, RingError,
    WorkerEndpoint,
};

const ROLE_ENV: &str = "SHM_RING_TEST_ROLE";
const ARG_ENV: &str = "SHM_RING_TEST_ARG";
const QUIT: u16 = 50;

fn spawn_child(role: &str, arg: u64, fds: ChildFds) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "child_role",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE_ENV, role)
    .env(ARG_ENV, arg.to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    fds.configure(&mut cmd);
    let child = cmd.spawn().expect("spawn child");
    // The child holds the only copy of its doorbell end from here on.
    drop(fds);
    child
}

#[test]
#[ignore = "entry point of the child processes the other tests spawn"]
fn child_role() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let arg: u64 = std::env::var(ARG_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: this process was spawned by `spawn_child`, which configured
    // the descriptors; this is the only call.
    let mut w = unsafe { WorkerEndpoint::from_env() }.expect("attach");
    match role.as_str() {
        "echo" => echo(&mut w),
        "torn" => torn(&mut w, arg),
        "idle" => {
            w.send(1, 0, 0, b"up").expect("send");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        "llm" => fake_llm(&mut w, arg),
        other => panic!("unknown role {other}"),
    }
}

fn echo(w: &mut WorkerEndpoint) {
    let mut buf = Vec::new();
    loop {
        match w.recv_timeout(&mut buf, Duration::from_secs(10)) {
            Ok(Some(h)) if h.kind == QUIT => return,
            Ok(Some(h)) => w.send(h.kind, h.flags, h.request_id, &buf).expect("echo"),
            Ok(None) => {}
            Err(RingError::PeerGone) => return,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Publishes `n` frames, writes half of one more, and dies.
fn torn(w: &mut WorkerEndpoint, n: u64) {
    for seq in 0..n {
        w.push(1, 0, seq, &[&payload(seq, 100 + (seq as usize % 300))])
            .expect("push");
    }
    w.flush().expect("flush");
    let mut r = w.reserve(1, 0, u64::MAX, 1000).expect("reserve");
    r.put(&[0xAB; 500]).expect("half a frame");
    kill(Pid::this(), Signal::SIGKILL).expect("kill self");
    unreachable!("SIGKILL does not return");
}

/// A stand-in worker speaking the protocol: handshake, chunked submits,
/// one token frame per step for every active request, then Done. With
/// `die_after` > 0 it SIGKILLs itself after that many steps.
fn fake_llm(w: &mut WorkerEndpoint, die_after: u64) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut send = |w: &mut WorkerEndpoint, ev: Event| {
        out.clear();
        let m = ev.encode(&mut out);
        w.send(m.kind, m.flags, m.request_id, &out).expect("send");
    };
    let mut assembler = protocol::SubmitAssembler::new(1 << 20);
    let mut active: Vec<(Submit, u32)> = Vec::new();
    let mut steps = 0u64;
    loop {
        let timeout = if active.is_empty() {
            Duration::from_secs(10)
        } else {
            Duration::ZERO
        };
        match w.recv_timeout(&mut buf, timeout) {
            Ok(Some(h)) => {
                let meta = protocol::FrameMeta {
                    kind: h.kind,
                    flags: h.flags,
                    request_id: h.request_id,
                };
                match Request::decode(meta, &buf).expect("valid request") {
                    Request::Hello(hello) => {
                        protocol::check_version(hello.protocol_version).expect("version");
                        send(
                            w,
                            Event::LoadProgress(protocol::LoadProgress {
                                bytes_loaded: 1,
                                bytes_total: 1,
                            }),
                        );
                        send(
                            w,
                            Event::Ready(protocol::Ready {
                                protocol_version: protocol::PROTOCOL_VERSION,
                                model_id: "fake".into(),
                                context_length: 4096,
                                vocab_size: 1000,
                                eos_token_ids: vec![2],
                                memory_used_bytes: 0,
                                load_time_us: 1,
                            }),
                        );
                    }
                    Request::Submit(part) => {
                        if let Some(s) = assembler.push(part).expect("chunk") {
                            active.push((s, 0));
                        }
                    }
                    Request::Shutdown => return,
                    Request::Embed(_) => panic!("this test sends no embedding requests"),
                    Request::Cancel { .. } | Request::Heartbeat(_) => {}
                }
                continue;
            }
            Ok(None) => {}
            Err(RingError::PeerGone) => return,
            Err(e) => panic!("{e}"),
        }
        if active.is_empty() {
            continue;
        }
        // One decode step: a token for every active request; the token is
        // the prompt's length plus the step, so the parent can check it.
        let entries = active
            .iter_mut()
            .map(|(s, produced)| {
                *produced += 1;
                protocol::TokenEntry {
                    request_id: s.request_id,
                    token_id: s.prompt.len() as u32 + *produced,
                    logprob: s.params.logprobs.then_some(-0.25),
                    top_logprobs: Vec::new(),
                }
            })
            .collect();
        send(w, Event::Tokens(protocol::Tokens { entries }));
        steps += 1;
        if die_after > 0 && steps == die_after {
            kill(Pid::this(), Signal::SIGKILL).expect("kill self");
        }
        let mut i = 0;
        while i < active.len() {
            let (s, produced) = &active[i];
            if *produced >= s.params.max_tokens {
                let done = protocol::Done {
                    request_id: s.request_id,
                    finish_reason: FinishReason::Length,
                    prompt_tokens: s.prompt.len() as u32,
                    completion_tokens: *produced,
                    prefill_us: 1,
                    decode_us: 1,
                    ..protocol::Done::default()
                };
                send(w, Event::Done(done));
                active.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
}

#[test]
fn two_processes_exchange_frames_over_a_real_mapping() {
    let prefix = "/shmrt-2p-";
    let config = small_config(8192, 2048);
    let (front, fds) = FrontEnd::create(&config, &named(prefix)).expect("create");
    let child = spawn_child("echo", 0, fds);
    let (region, mut requests, mut events, bell) = front.into_parts();
    let mut buf = Vec::new();
    let mut eof = false;
    let mut next_echo = 0u64;
    const N: u64 = 5000;
    for seq in 0..N {
        let body = payload(seq, (seq as usize * 7) % 2049);
        while !requests.try_push(2, 3, seq, &[&body]).expect("push") {
            // Full: wake the child, then collect echoes to make room.
            if requests.wake_needed() {
                bell.ring().expect("ring");
            }
            let h = recv_blocking(&mut events, &bell, &mut buf, &mut eof)
                .expect("recv")
                .expect("echo");
            assert_eq!((h.kind, h.flags, h.request_id), (2, 3, next_echo));
            assert_eq!(buf, payload(next_echo, h.len as usize));
            next_echo += 1;
        }
        if requests.wake_needed() {
            bell.ring().expect("ring");
        }
    }
    while next_echo < N {
        let h = recv_blocking(&mut events, &bell, &mut buf, &mut eof)
            .expect("recv")
            .expect("echo");
        assert_eq!(h.request_id, next_echo);
        assert_eq!(buf, payload(next_echo, h.len as usize));
        next_echo += 1;
    }
    assert!(requests.try_push(QUIT, 0, 0, &[]).expect("push"));
    if requests.wake_needed() {
        bell.ring().expect("ring");
    }
    let status = reap(child);
    assert!(status.success(), "{status:?}");
    drop(region);
    assert!(shm_entries(prefix).is_empty());
}

fn reap(mut child: Child) -> std::process::ExitStatus {
    child.wait().expect("wait for child")
}

#[test]
fn a_worker_killed_mid_frame_leaves_only_whole_frames_visible() {
    let prefix = "/shmrt-tn-";
    for rep in 0..50u64 {
        let n = (rep * 37) % 90;
        let config = small_config(8192, 2048);
        let (front, fds) = FrontEnd::create(&config, &named(prefix)).expect("create");
        let child = spawn_child("torn", n, fds);
        let (region, _requests, mut events, bell) = front.into_parts();
        let mut buf = Vec::new();
        let mut eof = false;
        let mut seen = 0u64;
        while let Some(h) = recv_blocking(&mut events, &bell, &mut buf, &mut eof).expect("recv") {
            assert_eq!(h.request_id, seen, "rep {rep}: frames in order, none torn");
            assert_eq!(buf, payload(seen, 100 + (seen as usize % 300)));
            seen += 1;
        }
        assert!(eof, "rep {rep}: the reader stops at doorbell EOF");
        assert_eq!(seen, n, "rep {rep}: exactly the published frames");
        let status = reap(child);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(Signal::SIGKILL as i32)
        );
        drop(region);
    }
    assert!(shm_entries(prefix).is_empty(), "no segment left behind");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn doorbell_eof_reports_a_killed_worker_within_ten_milliseconds() {
    let prefix = "/shmrt-eof-";
    let rt = runtime();
    let mut latencies = Vec::new();
    for _ in 0..7 {
        let config = small_config(8192, 1024);
        let (front, fds) = FrontEnd::create(&config, &named(prefix)).expect("create");
        let mut child = spawn_child("idle", 0, fds);
        let elapsed = rt.block_on(async {
            let (conn, mut control) =
                Connection::open(front, RawDemux, ConnectionOptions::default()).expect("open");
            let (_, up) = tokio::time::timeout(Duration::from_secs(10), control.recv())
                .await
                .expect("child came up")
                .expect("control event");
            assert_eq!(up, b"up");
            assert!(conn.closed_reason().is_none());
            let pid = conn.status().worker_pid().expect("worker pid in header");
            assert_eq!(pid, child.id());
            let start = Instant::now();
            kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill");
            let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
                .await
                .expect("closed in time");
            let elapsed = start.elapsed();
            assert_eq!(reason, Closed::WorkerGone);
            assert!(conn.region_name().is_none(), "unlinked after first frame");
            elapsed
        });
        child.wait().expect("reap");
        latencies.push(elapsed);
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    eprintln!("kill → doorbell EOF observed: {latencies:?}");
    // Measured from kill(2), so this includes the kernel tearing the
    // process down; the median of seven tolerates a loaded machine.
    assert!(median < Duration::from_millis(10), "median {median:?}");
    assert!(shm_entries(prefix).is_empty());
}

fn submit_frames(submit: &Submit, max: usize) -> Vec<shm_ring::OutFrame> {
    submit
        .encode_frames(max)
        .expect("encode")
        .into_iter()
        .map(|f| shm_ring::OutFrame {
            kind: f.meta.kind,
            flags: f.meta.flags,
            request_id: f.meta.request_id,
            payload: f.payload,
        })
        .collect()
}

fn llm_config() -> RegionConfig {
    RegionConfig {
        request_capacity: 16 * 1024,
        event_capacity: 16 * 1024,
        max_frame: 1024,
        max_kind: protocol::Kind::MAX,
        protocol_version: protocol::PROTOCOL_VERSION,
        generation: 3,
    }
}

async fn handshake(
    conn: &Connection<Delivery>,
    control: &mut tokio::sync::mpsc::UnboundedReceiver<Delivery>,
) {
    let mut out = Vec::new();
    let meta = Request::Hello(protocol::Hello {
        protocol_version: protocol::PROTOCOL_VERSION,
        generation: 3,
    })
    .encode(&mut out);
    conn.send(shm_ring::OutFrame {
        kind: meta.kind,
        flags: meta.flags,
        request_id: meta.request_id,
        payload: out,
    })
    .await
    .expect("send hello");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), control.recv())
            .await
            .expect("handshake in time")
            .expect("control open")
        {
            Delivery::LoadProgress(_) => {}
            Delivery::Ready(ready) => {
                protocol::check_version(ready.protocol_version).expect("version");
                return;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_protocol_session_streams_batched_tokens_to_each_request() {
    let prefix = "/shmrt-llm-";
    let rt = runtime();
    let (front, fds) = FrontEnd::create(&llm_config(), &named(prefix)).expect("create");
    let child = spawn_child("llm", 0, fds);
    rt.block_on(async {
        let (conn, mut control) =
            Connection::open(front, ProtocolDemux, ConnectionOptions::default()).expect("open");
        handshake(&conn, &mut control).await;
        // Two requests decoded together; the second prompt needs chunking.
        let plan = [(1u64, 10usize, 40u32), (2, 3000, 25)];
        let mut streams = Vec::new();
        for (id, prompt_len, max_tokens) in plan {
            let stream = conn.register(id).expect("register");
            let submit = Submit {
                grammar: None,
                request_id: id,
                prompt: (0..prompt_len as u32).collect(),
                params: SamplingParams {
                    max_tokens,
                    logprobs: id == 2,
                    ..SamplingParams::default()
                },
            };
            let frames = submit_frames(&submit, 1024);
            assert_eq!(frames.len() > 1, prompt_len > 200);
            conn.send_all(frames).await.expect("send");
            streams.push((stream, prompt_len, max_tokens));
        }
        for (mut stream, prompt_len, max_tokens) in streams {
            let mut got = 0u32;
            loop {
                let ev = tokio::time::timeout(Duration::from_secs(10), stream.recv())
                    .await
                    .expect("event in time");
                match ev {
                    Some(Ok(Delivery::Token(t))) => {
                        got += 1;
                        assert_eq!(t.token_id, prompt_len as u32 + got);
                        assert_eq!(t.logprob.is_some(), stream.request_id() == 2);
                    }
                    Some(Ok(Delivery::Done(d))) => {
                        assert_eq!(d.completion_tokens, max_tokens);
                        assert_eq!(d.prompt_tokens, prompt_len as u32);
                    }
                    None => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(got, max_tokens);
        }
        let mut out = Vec::new();
        let meta = Request::Shutdown.encode(&mut out);
        conn.send(shm_ring::OutFrame {
            kind: meta.kind,
            flags: meta.flags,
            request_id: 0,
            payload: out,
        })
        .await
        .expect("send shutdown");
        let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("worker exits");
        assert_eq!(reason, Closed::WorkerGone);
    });
    assert!(reap(child).success());
    assert!(shm_entries(prefix).is_empty());
}

#[test]
fn a_worker_crash_mid_stream_fails_its_requests_with_a_clear_reason() {
    let prefix = "/shmrt-die-";
    let rt = runtime();
    let (front, fds) = FrontEnd::create(&llm_config(), &named(prefix)).expect("create");
    let child = spawn_child("llm", 5, fds);
    rt.block_on(async {
        let (conn, mut control) =
            Connection::open(front, ProtocolDemux, ConnectionOptions::default()).expect("open");
        handshake(&conn, &mut control).await;
        let mut stream = conn.register(7).expect("register");
        let submit = Submit {
            grammar: None,
            request_id: 7,
            prompt: vec![1, 2, 3],
            params: SamplingParams {
                max_tokens: 100,
                ..SamplingParams::default()
            },
        };
        conn.send_all(submit_frames(&submit, 1024))
            .await
            .expect("send");
        let mut tokens = 0;
        let end = loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.recv())
                .await
                .expect("event in time")
            {
                Some(Ok(Delivery::Token(_))) => tokens += 1,
                Some(Err(reason)) => break reason,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(tokens, 5, "every published step arrives before the error");
        assert_eq!(end, Closed::WorkerGone);
        assert!(
            stream.recv().await.is_none(),
            "the stream ends after the error"
        );
        assert!(
            conn.register(8).is_err(),
            "a closed connection takes no request"
        );
        assert!(conn.send_all(submit_frames(&submit, 1024)).await.is_err());
    });
    reap(child);
    assert!(shm_entries(prefix).is_empty());
}
