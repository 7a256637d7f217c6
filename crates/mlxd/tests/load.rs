//! The load generator (`crates/loadgen`) against a real `mlxd serve` with
//! the tiny model: a few hundred mixed requests (streamed and whole, chat
//! and completions, short and longer prompts, 1-16 tokens) over 16
//! connections end with a checked answer or a 429, nothing else. Memory is
//! reported, not asserted (the full run, `scripts/reliability.sh`, asserts
//! its drift). `MLXD_LOAD_REQUESTS` and `MLXD_LOAD_CONCURRENCY` change the
//! size.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `mlxd serve` with the tiny model as `tiny`, killed (with its workers)
/// when dropped.
struct Daemon {
    child: Child,
    port: u16,
    admin_port: u16,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let empty = dir.path().join("empty");
            std::fs::create_dir(&empty).unwrap();
            let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
            let (port, admin_port) = (free_port(), free_port());
            let child = isolated_serve(&empty, port, admin_port)
                .arg("--model")
                .arg(format!("tiny={}", tiny_model().display()))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut d = Daemon {
                child,
                port,
                admin_port,
                dir,
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && d.child.try_wait().unwrap().is_none() {
                if TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && TcpStream::connect(("127.0.0.1", admin_port)).is_ok()
                {
                    return d;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Exited (a port was taken meanwhile) or never answered.
            let _ = d.child.kill();
        }
        panic!("mlxd serve did not start");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Workers die with the daemon (PR_SET_PDEATHSIG).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_load_gets_only_checked_answers_or_429s() {
    let d = Daemon::start();
    let config = loadgen::LoadConfig {
        url: format!("http://127.0.0.1:{}", d.port),
        admin_url: Some(format!("http://127.0.0.1:{}", d.admin_port)),
        model: "tiny".into(),
        requests: env_usize("MLXD_LOAD_REQUESTS").unwrap_or(300),
        concurrency: env_usize("MLXD_LOAD_CONCURRENCY").unwrap_or(16),
        warmup: 8,
        settle: Duration::from_secs(1),
        request_timeout: Duration::from_secs(120),
        ..loadgen::LoadConfig::default()
    };
    let report = loadgen::run(config).await.unwrap();
    eprint!("{}", report.table());
    assert_eq!(
        report.unexpected_errors(),
        0,
        "{}\n--- mlxd serve log (end) ---\n{}",
        report.table(),
        d.log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(report.ok + report.rejected, report.requests);
    assert!(report.ok > 0, "{}", report.table());
    assert!(report.streamed > 0 && report.streamed < report.ok);
    assert!(report.memory_before.daemon.is_some() && !report.memory_before.workers.is_empty());
}
