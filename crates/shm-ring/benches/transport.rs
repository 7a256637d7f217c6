//! Transport benchmark: the shared-memory ring against a plain Unix socket,
//! side by side in one run.
//!
//! Scenarios (64-byte payloads unless said otherwise; two threads of one
//! process, which share the mapping exactly as two processes do):
//!
//! * `rt-hot`: round trip with both sides spinning on their ring (a busy
//!   stream) vs. blocking socket reads.
//! * `rt-sleep`: round trip with both sides sleeping between messages.
//! * `token`: a token event published by a worker thread every 250 µs,
//!   measured from just before publish to its arrival on the request's
//!   channel in a sleeping tokio front-end (`Connection` + demux), vs. a
//!   tokio socket reader task forwarding to an mpsc channel.
//! * `request`: the daemon's path for one request after the transport sat
//!   idle (1 ms, then 100 ms): a request task sends a frame through
//!   `Connection` (written by that task when nothing is queued ahead, as
//!   here), the worker thread waits in
//!   `recv_timeout` as the worker's loop does and answers with one frame,
//!   which the reader task routes to the request's channel. Timed in both
//!   legs (to the worker's read, from the worker's write) and whole, on a
//!   runtime with as many threads as the daemon's.
//! * `throughput`: 64-byte frames streamed worker → front-end, one wake-up
//!   check per frame, as fast as the front-end drains them (raw consumer,
//!   and through `Connection` to a request channel), vs. one `write` per
//!   frame on a socket.
//! * `protocol`: encoding and decoding one 16-sequence Tokens step.
//!
//! Prints a table and writes JSON. `--only NAME` runs one scenario (for
//! `strace -c -f`), `--json PATH` chooses the output file, `--quick`
//! shortens every scenario.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use shm_ring::{
    Backing, Connection, ConnectionOptions, Consumer, Demux, Doorbell, FrameHeader, FrontEnd,
    Producer, RegionConfig, Route, WorkerEndpoint, monotonic_ns,
};

const PAYLOAD: usize = 64;

struct Args {
    only: Option<String>,
    json: String,
    quick: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        only: None,
        json: "target/transport-bench.json".into(),
        quick: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--only" => args.only = it.next(),
            "--json" => args.json = it.next().unwrap_or(args.json),
            "--quick" => args.quick = true,
            // `cargo bench` passes `--bench`; ignore what we do not know.
            _ => {}
        }
    }
    args
}

#[derive(Default)]
struct Row {
    scenario: &'static str,
    transport: &'static str,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    max_us: Option<f64>,
    frames_per_s: Option<f64>,
    samples: usize,
}

fn percentiles(mut ns: Vec<u64>) -> (f64, f64, f64) {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    (at(0.50), at(0.99), at(1.0))
}

fn latency_row(scenario: &'static str, transport: &'static str, ns: Vec<u64>) -> Row {
    let samples = ns.len();
    let (p50, p99, max) = percentiles(ns);
    Row {
        scenario,
        transport,
        p50_us: Some(p50),
        p99_us: Some(p99),
        max_us: Some(max),
        samples,
        ..Row::default()
    }
}

fn config() -> RegionConfig {
    RegionConfig {
        request_capacity: 1 << 20,
        event_capacity: 1 << 20,
        max_frame: 64 * 1024,
        max_kind: 16,
        protocol_version: 1,
        generation: 1,
    }
}

struct Ends {
    _front_region: shm_ring::OwnedRegion,
    requests: Producer,
    events: Consumer,
    bell: Doorbell,
    worker: WorkerEndpoint,
}

fn ends() -> Ends {
    let (front, fds) = FrontEnd::create(&config(), &Backing::default()).expect("create");
    let (region, bell) = fds.into_owned();
    let worker = WorkerEndpoint::attach(region, bell).expect("attach");
    let (r, requests, events, bell) = front.into_parts();
    Ends {
        _front_region: r,
        requests,
        events,
        bell,
        worker,
    }
}

fn spin_pop(events: &mut Consumer, buf: &mut Vec<u8>) -> FrameHeader {
    loop {
        if let Some(h) = events.try_pop(buf).expect("pop") {
            return h;
        }
        std::hint::spin_loop();
    }
}

/// Sleeps on the doorbell like the async reader, synchronously.
fn sleep_pop(events: &mut Consumer, bell: &Doorbell, buf: &mut Vec<u8>) -> Option<FrameHeader> {
    loop {
        if let Some(h) = events.try_pop(buf).expect("pop") {
            return Some(h);
        }
        if events.room_wake_needed(true) {
            let _ = bell.ring();
        }
        if !events.prepare_sleep().expect("sleep") {
            continue;
        }
        bell.wait(Duration::from_millis(100)).expect("wait");
        events.cancel_sleep();
        if bell.drain().expect("drain").eof {
            return events.try_pop(buf).expect("pop");
        }
    }
}

const QUIT: u16 = 9;

fn rt_shm(n: usize, hot: bool) -> Vec<u64> {
    let Ends {
        _front_region,
        mut requests,
        mut events,
        bell,
        mut worker,
    } = ends();
    let echo = std::thread::spawn(move || {
        let mut buf = Vec::new();
        loop {
            let h = if hot {
                loop {
                    if let Some(h) = worker.try_recv(&mut buf).expect("recv") {
                        break h;
                    }
                    std::hint::spin_loop();
                }
            } else {
                match worker
                    .recv_timeout(&mut buf, Duration::from_secs(5))
                    .expect("recv")
                {
                    Some(h) => h,
                    None => continue,
                }
            };
            if h.kind == QUIT {
                return;
            }
            worker.send(h.kind, 0, h.request_id, &buf).expect("echo");
        }
    });
    let body = [7u8; PAYLOAD];
    let mut buf = Vec::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t0 = Instant::now();
        assert!(requests.try_push(1, 0, i as u64, &[&body]).expect("push"));
        if requests.wake_needed() {
            bell.ring().expect("ring");
        }
        let h = if hot {
            spin_pop(&mut events, &mut buf)
        } else {
            sleep_pop(&mut events, &bell, &mut buf).expect("echo")
        };
        let dt = t0.elapsed().as_nanos() as u64;
        assert_eq!(h.request_id, i as u64);
        if i >= n / 10 {
            out.push(dt);
        }
    }
    assert!(requests.try_push(QUIT, 0, 0, &[]).expect("push"));
    if requests.wake_needed() {
        bell.ring().expect("ring");
    }
    echo.join().expect("echo thread");
    out
}

fn write_frame(s: &mut impl Write, id: u64, payload: &[u8]) {
    let mut frame = Vec::with_capacity(16 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&[1, 0, 0, 0]);
    frame.extend_from_slice(&id.to_le_bytes());
    frame.extend_from_slice(payload);
    s.write_all(&frame).expect("write");
}

fn read_frame(s: &mut impl Read, buf: &mut Vec<u8>) -> Option<u64> {
    let mut h = [0u8; 16];
    s.read_exact(&mut h).ok()?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    buf.resize(len, 0);
    s.read_exact(buf).ok()?;
    Some(u64::from_le_bytes([
        h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15],
    ]))
}

fn rt_socket(n: usize) -> Vec<u64> {
    let (mut a, b) = UnixStream::pair().expect("pair");
    let echo = std::thread::spawn(move || {
        let mut r = BufReader::new(b.try_clone().expect("clone"));
        let mut w = b;
        let mut buf = Vec::new();
        while let Some(id) = read_frame(&mut r, &mut buf) {
            if id == u64::MAX {
                return;
            }
            write_frame(&mut w, id, &buf);
        }
    });
    let mut r = BufReader::new(a.try_clone().expect("clone"));
    let body = [7u8; PAYLOAD];
    let mut buf = Vec::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t0 = Instant::now();
        write_frame(&mut a, i as u64, &body);
        let id = read_frame(&mut r, &mut buf).expect("echo");
        let dt = t0.elapsed().as_nanos() as u64;
        assert_eq!(id, i as u64);
        if i >= n / 10 {
            out.push(dt);
        }
    }
    write_frame(&mut a, u64::MAX, &[]);
    echo.join().expect("echo thread");
    out
}

struct StampDemux;

impl Demux for StampDemux {
    type Event = u64;

    fn demux(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
        emit: &mut dyn FnMut(Route<u64>),
    ) -> Result<(), String> {
        let stamp = payload
            .first_chunk::<8>()
            .map(|b| u64::from_le_bytes(*b))
            .ok_or("short frame")?;
        emit(Route {
            request_id: header.request_id,
            event: stamp,
            last: header.kind == QUIT,
        });
        Ok(())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn pace(gap: Duration) {
    std::thread::sleep(gap);
}

fn token_shm(n: usize, gap: Duration) -> Vec<u64> {
    let (front, fds) = FrontEnd::create(&config(), &Backing::default()).expect("create");
    let (region, bell) = fds.into_owned();
    let mut worker = WorkerEndpoint::attach(region, bell).expect("attach");
    let rt = runtime();
    rt.block_on(async move {
        let (conn, _control) =
            Connection::open(front, StampDemux, ConnectionOptions::default()).expect("open");
        let mut stream = conn.register(1).expect("register");
        let producer = std::thread::spawn(move || {
            for _ in 0..n + n / 10 {
                pace(gap);
                worker
                    .send(1, 0, 1, &monotonic_ns().to_le_bytes())
                    .expect("send");
            }
            worker
                .send(QUIT, 0, 1, &monotonic_ns().to_le_bytes())
                .expect("send");
        });
        // The request's consumer is a task on the runtime, as an HTTP
        // handler is in the server.
        let consumer = tokio::spawn(async move {
            let mut out = Vec::with_capacity(n);
            let mut i = 0;
            while let Some(Ok(stamp)) = stream.recv().await {
                let dt = monotonic_ns().saturating_sub(stamp);
                if i >= n / 10 && i < n + n / 10 {
                    out.push(dt);
                }
                i += 1;
            }
            out
        });
        let out = consumer.await.expect("consumer task");
        drop(conn);
        tokio::task::spawn_blocking(move || producer.join().expect("producer"))
            .await
            .expect("join");
        out
    })
}

/// Stamps of one answered request: when the worker read it and when it
/// wrote its answer.
struct AnswerDemux;

impl Demux for AnswerDemux {
    type Event = (u64, u64);

    fn demux(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
        emit: &mut dyn FnMut(Route<(u64, u64)>),
    ) -> Result<(), String> {
        let stamp = |at: usize| {
            payload
                .get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or("short frame")
        };
        emit(Route {
            request_id: header.request_id,
            event: (stamp(0)?, stamp(8)?),
            last: true,
        });
        Ok(())
    }
}

/// One request's three spans (ns): to the worker, back, whole.
type Legs = (u64, u64, u64);

/// `n` requests through `Connection` to a worker thread that answers each
/// one, `idle` apart; see the module's `request`.
fn request_shm(n: usize, idle: Duration) -> Vec<Legs> {
    let (front, fds) = FrontEnd::create(&config(), &Backing::default()).expect("create");
    let (region, bell) = fds.into_owned();
    let mut worker = WorkerEndpoint::attach(region, bell).expect("attach");
    let worker_loop = std::thread::spawn(move || {
        let mut buf = Vec::new();
        loop {
            // The worker loop's idle wait: a heartbeat tick.
            let h = match worker.recv_timeout(&mut buf, Duration::from_millis(250)) {
                Ok(Some(h)) => h,
                Ok(None) => continue,
                Err(_) => return,
            };
            let read = monotonic_ns();
            if h.kind == QUIT {
                return;
            }
            let written = monotonic_ns();
            worker
                .send(
                    1,
                    0,
                    h.request_id,
                    &[read, written].map(u64::to_le_bytes).concat(),
                )
                .expect("answer");
        }
    });
    // The daemon's runtime: a thread per CPU.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let legs = rt.block_on(async move {
        let (conn, _control) =
            Connection::open(front, AnswerDemux, ConnectionOptions::default()).expect("open");
        let conn = std::sync::Arc::new(conn);
        let mut legs = Vec::with_capacity(n);
        for i in 0..n + n / 10 {
            tokio::time::sleep(idle).await;
            let conn = conn.clone();
            // Each request on a task of its own, as a handler is.
            let request = tokio::spawn(async move {
                let id = i as u64 + 1;
                let mut events = conn.register(id).expect("register");
                let sent = monotonic_ns();
                conn.send(shm_ring::OutFrame {
                    kind: 1,
                    flags: 0,
                    request_id: id,
                    payload: vec![7; PAYLOAD],
                })
                .await
                .expect("send");
                let (read, written) = events.recv().await.expect("answer").expect("open");
                let back = monotonic_ns();
                (read - sent, back - written, back - sent)
            });
            let got = request.await.expect("request task");
            if i >= n / 10 {
                legs.push(got);
            }
        }
        conn.send(shm_ring::OutFrame {
            kind: QUIT,
            flags: 0,
            request_id: 0,
            payload: Vec::new(),
        })
        .await
        .expect("send");
        legs
    });
    worker_loop.join().expect("worker thread");
    legs
}

fn token_socket(n: usize, gap: Duration) -> Vec<u64> {
    let (a, mut b) = UnixStream::pair().expect("pair");
    let rt = runtime();
    rt.block_on(async move {
        a.set_nonblocking(true).expect("nonblocking");
        let a = tokio::net::UnixStream::from_std(a).expect("tokio stream");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        // Reader task: parse frames, route to the request's channel.
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut r = tokio::io::BufReader::new(a);
            let mut h = [0u8; 16];
            let mut body = Vec::new();
            while r.read_exact(&mut h).await.is_ok() {
                let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
                body.resize(len, 0);
                if r.read_exact(&mut body).await.is_err() {
                    break;
                }
                let stamp = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
                if tx.send(stamp).is_err() {
                    break;
                }
            }
        });
        let producer = std::thread::spawn(move || {
            for _ in 0..n + n / 10 {
                pace(gap);
                write_frame(&mut b, 1, &monotonic_ns().to_le_bytes());
            }
        });
        let consumer = tokio::spawn(async move {
            let mut out = Vec::with_capacity(n);
            for i in 0..n + n / 10 {
                let stamp = rx.recv().await.expect("event");
                let dt = monotonic_ns().saturating_sub(stamp);
                if i >= n / 10 {
                    out.push(dt);
                }
            }
            out
        });
        let out = consumer.await.expect("consumer task");
        tokio::task::spawn_blocking(move || producer.join().expect("producer"))
            .await
            .expect("join");
        out
    })
}

fn throughput_shm_raw(n: u64) -> f64 {
    let Ends {
        _front_region,
        mut events,
        bell,
        mut worker,
        ..
    } = ends();
    let body = [3u8; PAYLOAD - 8];
    let t0 = Instant::now();
    let producer = std::thread::spawn(move || {
        for i in 0..n {
            worker
                .push(1, 0, i, &[&i.to_le_bytes(), &body])
                .expect("push");
            worker.flush().expect("flush");
        }
    });
    let mut buf = Vec::new();
    for i in 0..n {
        let h = sleep_pop(&mut events, &bell, &mut buf).expect("frame");
        debug_assert_eq!(h.request_id, i);
    }
    let dt = t0.elapsed();
    producer.join().expect("producer");
    n as f64 / dt.as_secs_f64()
}

fn throughput_shm_connection(n: u64) -> f64 {
    let (front, fds) = FrontEnd::create(&config(), &Backing::default()).expect("create");
    let (region, bell) = fds.into_owned();
    let mut worker = WorkerEndpoint::attach(region, bell).expect("attach");
    let rt = runtime();
    rt.block_on(async move {
        let (conn, _control) =
            Connection::open(front, StampDemux, ConnectionOptions::default()).expect("open");
        let mut stream = conn.register(1).expect("register");
        let body = [3u8; PAYLOAD - 8];
        let t0 = Instant::now();
        let producer = std::thread::spawn(move || {
            for i in 0..n {
                worker
                    .push(1, 0, 1, &[&i.to_le_bytes(), &body])
                    .expect("push");
                worker.flush().expect("flush");
            }
        });
        tokio::spawn(async move {
            for i in 0..n {
                let got = stream.recv().await.expect("open").expect("event");
                debug_assert_eq!(got, i);
            }
        })
        .await
        .expect("consumer task");
        let dt = t0.elapsed();
        tokio::task::spawn_blocking(move || producer.join().expect("producer"))
            .await
            .expect("join");
        n as f64 / dt.as_secs_f64()
    })
}

fn throughput_socket(n: u64) -> f64 {
    let (a, mut b) = UnixStream::pair().expect("pair");
    let body = [3u8; PAYLOAD];
    let t0 = Instant::now();
    let producer = std::thread::spawn(move || {
        for i in 0..n {
            write_frame(&mut b, i, &body);
        }
    });
    let mut r = BufReader::with_capacity(64 * 1024, a);
    let mut buf = Vec::new();
    for i in 0..n {
        let id = read_frame(&mut r, &mut buf).expect("frame");
        debug_assert_eq!(id, i);
    }
    let dt = t0.elapsed();
    producer.join().expect("producer");
    n as f64 / dt.as_secs_f64()
}

fn protocol_step(n: usize) -> Vec<u64> {
    use protocol::{Event, TokenEntry, Tokens};
    let ev = Event::Tokens(Tokens {
        entries: (1..=16)
            .map(|id| TokenEntry {
                request_id: id,
                token_id: 1000 + id as u32,
                logprob: Some(-0.5),
                top_logprobs: Vec::new(),
            })
            .collect(),
    });
    let mut buf = Vec::with_capacity(1024);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        buf.clear();
        let meta = ev.encode(&mut buf);
        let back = Event::decode(meta, &buf).expect("decode");
        std::hint::black_box(back);
        out.push(t0.elapsed().as_nanos() as u64);
    }
    out
}

fn main() {
    let args = parse_args();
    let want = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    let scale = if args.quick { 10 } else { 1 };
    let mut rows = Vec::new();
    if want("rt-hot") {
        rows.push(latency_row(
            "round trip, back-to-back",
            "shm ring",
            rt_shm(200_000 / scale, true),
        ));
    }
    if want("rt-hot-socket") {
        rows.push(latency_row(
            "round trip, back-to-back",
            "unix socket",
            rt_socket(100_000 / scale),
        ));
    }
    if want("rt-sleep") {
        rows.push(latency_row(
            "round trip, both sleeping",
            "shm ring",
            rt_shm(50_000 / scale, false),
        ));
    }
    let gap = Duration::from_micros(250);
    if want("token") {
        rows.push(latency_row(
            "token event, sleeping front-end",
            "shm ring",
            token_shm(20_000 / scale, gap),
        ));
    }
    if want("token-socket") {
        rows.push(latency_row(
            "token event, sleeping front-end",
            "unix socket",
            token_socket(20_000 / scale, gap),
        ));
    }
    // (idle, requests, requests with --quick)
    for (idle, count, quick, rows_of) in [
        (
            Duration::from_millis(1),
            3_000,
            300,
            [
                "request after 1 ms idle: to the worker",
                "request after 1 ms idle: back",
                "request after 1 ms idle: round trip",
            ],
        ),
        (
            Duration::from_millis(100),
            60,
            20,
            [
                "request after 100 ms idle: to the worker",
                "request after 100 ms idle: back",
                "request after 100 ms idle: round trip",
            ],
        ),
    ] {
        if want("request") {
            let legs = request_shm(if args.quick { quick } else { count }, idle);
            let pick = |f: fn(&Legs) -> u64| legs.iter().map(f).collect::<Vec<_>>();
            for (scenario, leg) in
                rows_of
                    .into_iter()
                    .zip([pick(|l| l.0), pick(|l| l.1), pick(|l| l.2)])
            {
                rows.push(latency_row(scenario, "shm ring (Connection)", leg));
            }
        }
    }
    let frames = 5_000_000 / scale as u64;
    for (name, transport, f) in [
        (
            "throughput",
            "shm ring (raw consumer)",
            throughput_shm_raw as fn(u64) -> f64,
        ),
        (
            "throughput-connection",
            "shm ring (Connection → channel)",
            throughput_shm_connection,
        ),
        (
            "throughput-socket",
            "unix socket (write per frame)",
            throughput_socket,
        ),
    ] {
        if want(name) {
            let best = (0..3).map(|_| f(frames)).fold(0.0, f64::max);
            rows.push(Row {
                scenario: "throughput, 64-byte frames (best of 3)",
                transport,
                frames_per_s: Some(best),
                samples: frames as usize,
                ..Row::default()
            });
        }
    }
    if want("protocol") {
        rows.push(latency_row(
            "encode+decode Tokens step (16 seqs)",
            "protocol",
            protocol_step(200_000 / scale),
        ));
    }
    print_table(&rows);
    write_json(&args.json, &rows);
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<42} {:<34} {:>9} {:>9} {:>10} {:>14} {:>9}",
        "scenario", "transport", "p50 µs", "p99 µs", "max µs", "frames/s", "samples"
    );
    for r in rows {
        println!(
            "{:<42} {:<34} {:>9} {:>9} {:>10} {:>14} {:>9}",
            r.scenario,
            r.transport,
            fmt_opt(r.p50_us, 2),
            fmt_opt(r.p99_us, 2),
            fmt_opt(r.max_us, 1),
            fmt_opt(r.frames_per_s, 0),
            r.samples
        );
    }
}

fn write_json(path: &str, rows: &[Row]) {
    let num = |v: Option<f64>| v.map_or_else(|| "null".into(), |v| format!("{v:.3}"));
    let body: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "  {{\"scenario\": \"{}\", \"transport\": \"{}\", \"p50_us\": {}, \"p99_us\": {}, \"max_us\": {}, \"frames_per_s\": {}, \"samples\": {}}}",
                r.scenario,
                r.transport,
                num(r.p50_us),
                num(r.p99_us),
                num(r.max_us),
                num(r.frames_per_s),
                r.samples
            )
        })
        .collect();
    let json = format!("[\n{}\n]\n", body.join(",\n"));
    if let Some(dir) = std::path::Path::new(path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(path, json) {
        Ok(()) => println!("\nwrote {path}"),
        Err(e) => eprintln!("could not write {path}: {e}"),
    }
}
