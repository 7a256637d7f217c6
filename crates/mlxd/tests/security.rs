//! Security defaults of a real `mlxd serve`: it listens on loopback unless
//! told otherwise; with keys configured, the APIs refuse requests without
//! them; keys never reach the log, even at debug level; a worker's shared
//! region is its owner's only.
//!
//! The key comparison itself (constant time, every key compared) is
//! unit-tested in `crates/server/src/http/auth.rs`, and the region's mode
//! and random names in `crates/shm-ring/src/region.rs`.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;
mod support;

use std::os::unix::fs::PermissionsExt;

use support::*;

/// Listening TCP sockets on `port`, as `(IPv6?, local address in hex)`
/// from /proc/net/tcp{,6}.
fn listeners(port: u16) -> Vec<(bool, String)> {
    let mut found = Vec::new();
    for (v6, file) in [(false, "/proc/net/tcp"), (true, "/proc/net/tcp6")] {
        let Ok(table) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
                continue;
            };
            let Some((addr, p)) = local.split_once(':') else {
                continue;
            };
            // 0A: LISTEN.
            if *state == "0A" && u16::from_str_radix(p, 16) == Ok(port) {
                found.push((v6, addr.to_owned()));
            }
        }
    }
    found
}

#[test]
fn a_default_daemon_listens_on_loopback_only() {
    let d = Daemon::start(&[], &[], &[]);
    for port in [d.port, d.admin_port] {
        // 127.0.0.1 as /proc/net/tcp writes it (little-endian hex).
        assert_eq!(listeners(port), vec![(false, "0100007F".to_owned())]);
    }
}

#[test]
fn keyed_apis_refuse_requests_without_their_key() {
    let key = "sk-main-5b1c0e9d";
    let admin_key = "sk-admin-77aa31f2";
    let bearer = format!("Bearer {key}");
    let admin_bearer = format!("Bearer {admin_key}");
    let mut d = Daemon::start(
        &["--api-key", key, "--admin-api-key", admin_key],
        &[],
        &[("Authorization", &admin_bearer)],
    );
    let none: &[(&str, &str)] = &[];
    for (port, path) in [
        (d.port, "/v1/models"),
        (d.admin_port, "/admin/status"),
        (d.admin_port, "/admin/health"),
    ] {
        let error = get(port, path, none).openai_error(401);
        assert!(error["message"].as_str().unwrap().contains("API key"));
        let error = get(port, path, &[("Authorization", "Bearer wrong")]).openai_error(401);
        assert_eq!(error["code"], "invalid_api_key");
    }
    // Each API takes its own key only.
    get(d.admin_port, "/admin/status", &[("Authorization", &bearer)]).openai_error(401);
    get(d.port, "/v1/models", &[("Authorization", &admin_bearer)]).openai_error(401);
    let load = br#"{"model": "tiny"}"#;
    post_bytes(d.admin_port, "/admin/load", &[], load).openai_error(401);
    post_bytes(d.port, "/v1/chat/completions", &[], chat_body(1).as_bytes()).openai_error(401);
    assert!(d.worker_pids().is_empty(), "an unauthenticated load ran");

    assert_eq!(
        get(
            d.admin_port,
            "/admin/status",
            &[("Authorization", &admin_bearer)]
        )
        .status,
        200
    );
    assert_eq!(
        get(d.port, "/v1/models", &[("Authorization", &bearer)]).status,
        200
    );
    // Liveness stays open for probes.
    assert_eq!(get(d.port, "/health", none).status, 200);
    d.assert_healthy(&[("Authorization", &bearer)]);
}

#[test]
fn keys_never_reach_the_log_at_debug_level() {
    let key = "sk-main-secret-4e1f9a0c";
    let admin_key = "sk-admin-secret-c0ffee42";
    let env_key = "sk-env-secret-9d8c7b6a";
    let bearer = format!("Bearer {key}");
    let admin_bearer = format!("Bearer {admin_key}");
    let mut d = Daemon::start(
        &[
            "--api-key",
            key,
            "--admin-api-key",
            admin_key,
            "--log-level",
            "debug",
        ],
        &[("MLXD_API_KEYS", env_key)],
        &[("Authorization", &admin_bearer)],
    );
    let auth = [("Authorization", bearer.as_str())];
    d.assert_healthy(&auth);
    let stream = br#"{"model":"tiny","messages":[{"role":"user","content":"Hi"}],"max_tokens":1,"stream":true}"#;
    let reply = post_bytes(d.port, "/v1/chat/completions", &auth, stream);
    assert_eq!(reply.status, 200);
    assert_eq!(get(d.port, "/metrics", &auth).status, 200);
    let admin = [("Authorization", admin_bearer.as_str())];
    assert_eq!(get(d.admin_port, "/admin/status", &admin).status, 200);
    // Wrong keys are not echoed either.
    let wrong = "sk-wrong-guess-1a2b3c4d";
    get(
        d.port,
        "/v1/models",
        &[("Authorization", &format!("Bearer {wrong}"))],
    )
    .openai_error(401);
    d.stop();
    let log = d.log_text();
    assert!(log.contains("DEBUG"), "debug logging was not on:\n{log}");
    for secret in [key, admin_key, env_key, wrong] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
}

#[test]
fn a_workers_shared_region_is_its_owners_only() {
    let mut d = Daemon::start(&[], &[], &[]);
    d.assert_healthy(&[]);
    let workers = d.worker_pids();
    assert_eq!(workers.len(), 1, "one worker serves the model");
    // The front-end holds the region as a memfd on Linux (no name anyone
    // could open), mode 0600...
    let mut modes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{}/fd", d.pid())).unwrap() {
        let path = entry.unwrap().path();
        let Ok(target) = std::fs::read_link(&path) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if target.starts_with("/memfd:shm-ring") || target.starts_with("/dev/shm/") {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            modes.push((target, mode));
        }
    }
    assert_eq!(modes.len(), 1, "one region: {modes:?}");
    assert!(modes[0].0.starts_with("/memfd:"), "{modes:?}");
    assert_eq!(modes[0].1, 0o600, "{modes:?}");
    // ...and the worker has that region mapped.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", workers[0])).unwrap();
    assert!(maps.contains("/memfd:shm-ring"), "{maps}");
}
