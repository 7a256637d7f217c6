//! A daemon and a raw HTTP client for the hostile-client tests
//! (`bad_input.rs`, `security.rs`): `mlxd serve` on free loopback ports
//! serving the tiny model as `tiny`, killed with its workers when dropped,
//! and requests written byte for byte over a `TcpStream`, so that malformed
//! ones reach the server exactly as sent.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::{isolated_serve, process_alive, tiny_model};

/// Generous: a loaded 2-core machine runs the suites in parallel.
pub const TIMEOUT: Duration = Duration::from_secs(60);

pub use crate::common::{free_port, live_children, wait_until};

/// A response read to the end of the connection.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The status line's protocol (`HTTP/1.1`).
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Checks OpenAI's error body: `{"error": {message, type, param, code}}`
    /// with all four keys, and the status. Returns the error object.
    pub fn openai_error(&self, status: u16) -> Value {
        let text = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "{text}");
        let body = self.json();
        let error = &body["error"];
        assert!(error["message"].is_string(), "{text}");
        assert!(error["type"].is_string(), "{text}");
        let object = error.as_object().unwrap();
        assert!(
            object.contains_key("param") && object.contains_key("code"),
            "{text}"
        );
        assert_eq!(object.len(), 4, "{text}");
        error.clone()
    }
}

/// Parses a whole HTTP/1.x response (chunked bodies decoded).
pub fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next()?.split_whitespace();
    let version = status_line.next()?.to_owned();
    let status = status_line.next()?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Some(Reply {
        status,
        version,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        raw = &raw[eol + 2..];
        if size == 0 || raw.len() < size {
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
    out
}

/// Writes `request` as is and reads until the server closes the
/// connection. `None`: closed without a (whole) response.
pub fn raw(port: u16, request: &[u8]) -> Option<Reply> {
    raw_at(std::net::Ipv4Addr::LOCALHOST.into(), port, request)
}

/// [`raw`] to address `ip` of this machine.
pub fn raw_at(ip: std::net::IpAddr, port: u16, request: &[u8]) -> Option<Reply> {
    let stream = TcpStream::connect((ip, port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    // Write from another thread: a server that answers before reading the
    // whole body (413) must find us reading, not blocked writing.
    let mut writer = stream.try_clone().unwrap();
    let request = request.to_vec();
    // No half-close after it: the server would take it for the client
    // going away.
    let sent = std::thread::spawn(move || writer.write_all(&request).is_ok());
    let raw = read_to_close(&stream);
    let _ = sent.join();
    parse_reply(&raw)
}

/// Everything the server sends until it closes (or the read times out, or
/// the connection is reset).
pub fn read_to_close(stream: &TcpStream) -> Vec<u8> {
    read_until_closed(stream).0
}

/// What the server sends, and whether it then closed the connection (EOF
/// or reset) rather than the read timing out.
pub fn read_until_closed(mut stream: &TcpStream) -> (Vec<u8>, bool) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (raw, true),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => {
                use std::io::ErrorKind::*;
                let timed_out = matches!(e.kind(), WouldBlock | TimedOut);
                return (raw, !timed_out);
            }
        }
    }
}

/// A request with a JSON content type and `body` as given.
pub fn post_bytes(port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    raw(port, &bytes).unwrap_or_else(|| panic!("no response to POST {path}"))
}

pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    get_at(std::net::Ipv4Addr::LOCALHOST.into(), port, path, headers)
}

/// [`get`] to address `ip` of this machine.
pub fn get_at(ip: std::net::IpAddr, port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    raw_at(ip, port, request.as_bytes()).unwrap_or_else(|| panic!("no response to GET {path}"))
}

/// A chat request for the tiny model generating `max_tokens` tokens.
pub fn chat_body(max_tokens: u32) -> String {
    format!(
        r#"{{"model":"tiny","messages":[{{"role":"user","content":"Hello"}}],"max_tokens":{max_tokens},"temperature":0}}"#
    )
}

/// A running `mlxd serve`; dropping it kills it and its workers.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub admin_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// `mlxd serve --model tiny=<tiny model>` on free ports (`--host` is
    /// left to the default), with `args` and `env` added, once both APIs
    /// answer `/health`. `health_headers` go with the readiness probes.
    pub fn start(args: &[&str], env: &[(&str, &str)], health_headers: &[(&str, &str)]) -> Daemon {
        for _ in 0..3 {
            if let Some(daemon) = Daemon::try_start(args, env, health_headers) {
                return daemon;
            }
        }
        panic!("mlxd serve did not start");
    }

    fn try_start(
        args: &[&str],
        env: &[(&str, &str)],
        health_headers: &[(&str, &str)],
    ) -> Option<Daemon> {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let log = dir.path().join("serve.log");
        let (port, admin_port) = (free_port(), free_port());
        let mut cmd = isolated_serve(&empty, port, admin_port);
        cmd.envs(env.iter().copied())
            .arg("--model")
            .arg(format!("tiny={}", tiny_model().display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap());
        let mut daemon = Daemon {
            child: cmd.spawn().unwrap(),
            port,
            admin_port,
            log,
            _dir: dir,
        };
        let up = |p: u16, path: &str| {
            TcpStream::connect(("127.0.0.1", p)).is_ok()
                && get(p, path, health_headers).status == 200
        };
        let ready = wait_until(TIMEOUT, || {
            daemon.exited()
                || (up(daemon.port, "/health") && up(daemon.admin_port, "/admin/health"))
        });
        if daemon.exited() {
            let log = daemon.log_text();
            // Another process took a port between the probe and the bind.
            assert!(log.contains("listening on"), "mlxd serve exited:\n{log}");
            return None;
        }
        assert!(ready, "mlxd serve did not answer:\n{}", daemon.log_text());
        Some(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's live child processes: its workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        live_children(self.pid())
    }

    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asserts the daemon lives, answers `/health`, generates, and never
    /// logged a panic.
    pub fn assert_healthy(&mut self, headers: &[(&str, &str)]) {
        assert!(!self.exited(), "the daemon died:\n{}", self.log_text());
        assert_eq!(get(self.port, "/health", &[]).status, 200);
        let reply = post_bytes(
            self.port,
            "/v1/chat/completions",
            headers,
            chat_body(2).as_bytes(),
        );
        assert_eq!(
            reply.status,
            200,
            "{}\n{}",
            String::from_utf8_lossy(&reply.body),
            self.log_text()
        );
        assert_eq!(reply.json()["object"], "chat.completion");
        let log = self.log_text();
        assert!(!log.contains("panicked"), "a panic was logged:\n{log}");
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM);
        let exited = wait_until(TIMEOUT, || self.exited());
        assert!(exited, "the daemon did not stop:\n{}", self.log_text());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited() {
            return;
        }
        for pid in live_children(self.pid()) {
            if process_alive(pid) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
