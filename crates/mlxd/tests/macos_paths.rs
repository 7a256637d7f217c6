//! The paths a Mac takes, run on Linux against a real `mlxd serve` and its
//! workers: regions in named POSIX shared memory (`shm_open`, what macOS
//! has instead of memfd; `SHM_RING_BACKING=named`), and workers that find
//! their daemon gone without the kernel's `PR_SET_PDEATHSIG`, which macOS
//! lacks (`SHM_RING_PDEATHSIG=off`): an idle one by its doorbell's EOF, a
//! busy one by its next doorbell ring failing or its parent pid changing,
//! whichever comes first (the parent-pid watch alone is unit-tested in
//! `crates/shm-ring/src/worker.rs`).
//!
//! The transport tests (`cargo test -p shm-ring`) and the fault-injection
//! tests (`--test faults`) run with `SHM_RING_BACKING=named` too:
//! scripts/test.sh does both. Last, an inventory of the code's macOS-only
//! branches keeps them few and small, each listed with where Linux runs the
//! same code or API.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;
mod support;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use support::*;

/// The daemon as it runs on a Mac, as far as Linux can show it.
const AS_ON_A_MAC: &[(&str, &str)] =
    &[("SHM_RING_BACKING", "named"), ("SHM_RING_PDEATHSIG", "off")];

/// The worker's shared-memory mappings, from /proc/<pid>/maps.
fn ring_mappings(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut found: Vec<String> = maps
        .lines()
        .filter(|l| l.contains("/dev/shm/") || l.contains("memfd:"))
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_owned))
        .collect();
    found.dedup();
    found
}

fn kill_daemon_and_time_the_worker(d: &mut Daemon, worker: u32) {
    kill(Pid::from_raw(d.pid() as i32), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    let gone = wait_until(Duration::from_secs(2), || !common::process_alive(worker));
    assert!(
        gone,
        "the worker is alive {:?} after its daemon was killed",
        killed.elapsed()
    );
}

#[test]
fn an_idle_worker_leaves_with_its_daemon_by_the_doorbell() {
    let mut d = Daemon::start(&[], AS_ON_A_MAC, &[]);
    d.assert_healthy(&[]);
    let workers = d.worker_pids();
    assert_eq!(workers.len(), 1);
    // The region is a named object, unlinked once the worker attached:
    // nothing is left to leak when the daemon is killed.
    let mappings = ring_mappings(workers[0]);
    assert_eq!(mappings.len(), 1, "{mappings:?}");
    assert!(mappings[0].starts_with("/dev/shm/shmr-"), "{mappings:?}");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", workers[0])).unwrap();
    assert!(
        maps.contains(&format!("{} (deleted)", mappings[0])),
        "{maps}"
    );
    kill_daemon_and_time_the_worker(&mut d, workers[0]);
}

#[test]
fn a_busy_worker_leaves_with_its_daemon() {
    let mut d = Daemon::start(&[], AS_ON_A_MAC, &[]);
    d.assert_healthy(&[]);
    let worker = d.worker_pids()[0];
    // A stream that would decode for minutes; read a little of it so the
    // worker is mid-batch, never sleeping on its doorbell.
    let body = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": 100_000,
        "ignore_eos": true,
        "stream": true,
    });
    let mut stream = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    common::write_request(&stream, d.port, "POST", "/v1/chat/completions", Some(&body)).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while seen.windows(6).filter(|w| w == b"data: ").count() < 5 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    kill_daemon_and_time_the_worker(&mut d, worker);
}

#[test]
fn named_regions_carry_requests_and_faults_alike() {
    let mut d = Daemon::start(&[], AS_ON_A_MAC, &[]);
    for _ in 0..3 {
        d.assert_healthy(&[]);
    }
    // A crashed worker is replaced, over a fresh named region.
    let first = d.worker_pids()[0];
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    assert!(wait_until(TIMEOUT, || !common::process_alive(first)));
    // Once the daemon has seen it go (the doorbell's EOF)...
    let noticed = wait_until(TIMEOUT, || {
        let status = get(d.admin_port, "/admin/status", &[]).json();
        status["workers"][0]["pid"] != first
    });
    assert!(noticed, "the daemon did not notice its worker's death");
    let reply = post_bytes(d.port, "/v1/chat/completions", &[], chat_body(2).as_bytes());
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let second = d.worker_pids();
    assert_eq!(second.len(), 1);
    assert_ne!(second[0], first);
    let mappings = ring_mappings(second[0]);
    assert!(mappings[0].starts_with("/dev/shm/shmr-"), "{mappings:?}");
}

/// Every place the Rust code takes a branch only off Linux (a Mac), by
/// file: how many, and where Linux runs the same code or API (or why it
/// cannot). A new macOS branch fails [`macos_branches_stay_few_and_small`]
/// until it is listed here with its Linux counterpart.
const MACOS_BRANCHES: &[(&str, usize, &str)] = &[
    (
        "crates/engine/src/memory.rs",
        2,
        "host_statistics64 for free memory (Linux reads MemAvailable); the admissions that use \
         it are tested with given amounts (memory_pressure.rs, supervisor::tests)",
    ),
    (
        "crates/mlx/src/device.rs",
        2,
        "cfg! values, both arms compiled everywhere; Metal itself only on a Mac",
    ),
    (
        "crates/mlxd/src/config/machine.rs",
        2,
        "sysctl hw.memsize (no Linux equivalent; the tiers it feeds are tested with given sizes)",
    ),
    (
        "crates/mlxd/src/service.rs",
        1,
        "launchd is the native manager; its plist is rendered and checked here (tests/service.rs)",
    ),
    (
        "crates/server/src/supervisor/process.rs",
        1,
        "a fallback where waitid is missing: the doorbell EOF it relies on runs here (above)",
    ),
    (
        "crates/server/src/supervisor/process/child.rs",
        1,
        "where /proc is missing, a child that never ran its program is left to the load timeout, tested here",
    ),
    (
        "crates/shm-ring/src/doorbell.rs",
        3,
        "SO_NOSIGPIPE in place of MSG_NOSIGNAL (Linux has no such option); PeerGone is tested here",
    ),
];

/// Longest a macOS-only item may be, in lines.
const MAX_BRANCH_LINES: usize = 30;

fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether a line selects code for a Mac only.
fn takes_the_mac_branch(line: &str) -> bool {
    let line = line.trim();
    if line.starts_with("//") || line.contains("cfg_attr") {
        return false;
    }
    (line.contains("target_os = \"macos\"") && !line.contains("not(target_os = \"macos\")"))
        || line.contains("target_vendor = \"apple\"")
        || line.contains("not(target_os = \"linux\")")
        || line.contains("not(any(target_os = \"linux\"")
}

/// Lines of the item or statement after the attribute at `at`: up to the
/// `;` or the brace that closes what it opened.
fn item_lines(lines: &[&str], at: usize) -> usize {
    let mut depth = 0i32;
    let mut opened = false;
    for (i, line) in lines.iter().enumerate().skip(at + 1) {
        for c in line.chars() {
            match c {
                '{' => {
                    depth += 1;
                    opened = true;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let ends_statement = !opened && line.trim_end().ends_with(';');
        if (opened && depth <= 0) || ends_statement {
            return i - at;
        }
    }
    lines.len() - at
}

#[test]
fn macos_branches_stay_few_and_small() {
    // crates/mlxd -> the workspace.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap();
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            sources(&src, &mut files);
        }
    }
    let mut found: std::collections::BTreeMap<String, usize> = Default::default();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let name = file.strip_prefix(root).unwrap().display().to_string();
        for (i, line) in lines.iter().enumerate() {
            if !takes_the_mac_branch(line) {
                continue;
            }
            *found.entry(name.clone()).or_default() += 1;
            if line.trim_start().starts_with("#[cfg(") {
                let size = item_lines(&lines, i);
                assert!(
                    size <= MAX_BRANCH_LINES,
                    "{name}:{}: a macOS-only item of {size} lines (at most \
                     {MAX_BRANCH_LINES}): keep the platform part small and share the rest",
                    i + 1
                );
            }
        }
    }
    let listed: std::collections::BTreeMap<String, usize> = MACOS_BRANCHES
        .iter()
        .map(|(file, n, _)| ((*file).to_owned(), *n))
        .collect();
    assert_eq!(
        found, listed,
        "macOS-only branches changed: list each in MACOS_BRANCHES with the test that runs \
         its code or API on Linux"
    );
}
