//! Security defaults of a real `mlxd serve`: it listens on loopback unless
//! told otherwise, and the admin API stays there when the OpenAI API is
//! put on the network (it leaves loopback only with a key of its own);
//! with keys configured, the APIs and `/metrics` refuse requests without
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

use std::net::{IpAddr, Ipv4Addr, TcpStream};
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

/// Addresses of this machine other than 127.0.0.1, as a client elsewhere
/// would reach it: 127.0.0.2 (a listener on 127.0.0.1 does not answer it,
/// one on 0.0.0.0 does) and every IPv4 address of the interfaces.
fn other_addresses() -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = vec![Ipv4Addr::new(127, 0, 0, 2).into()];
    for interface in nix::ifaddrs::getifaddrs().unwrap() {
        let ip = interface
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|a| IpAddr::V4(a.ip()));
        if let Some(ip) = ip.filter(|ip| !ip.is_loopback() && !found.contains(ip)) {
            found.push(ip);
        }
    }
    found
}

#[test]
fn on_every_interface_the_admin_api_stays_on_loopback_and_metrics_need_the_key() {
    let key = "sk-lan-0d5e7c21";
    let bearer = format!("Bearer {key}");
    let auth = [("Authorization", bearer.as_str())];
    let none: &[(&str, &str)] = &[];
    let mut d = Daemon::start(&["--host", "0.0.0.0", "--api-key", key], &[], &[]);
    assert_eq!(listeners(d.port), vec![(false, "00000000".to_owned())]);
    assert_eq!(
        listeners(d.admin_port),
        vec![(false, "0100007F".to_owned())]
    );
    for ip in other_addresses() {
        // The OpenAI API answers there, the admin API is not reachable.
        assert_eq!(get_at(ip, d.port, "/health", none).status, 200, "{ip}");
        assert!(
            TcpStream::connect((ip, d.admin_port)).is_err(),
            "the admin API answers on {ip}"
        );
        get_at(ip, d.port, "/metrics", none).openai_error(401);
        get_at(ip, d.port, "/metrics", &[("Authorization", "Bearer wrong")]).openai_error(401);
        let metrics = get_at(ip, d.port, "/metrics", &auth);
        assert_eq!(metrics.status, 200, "{ip}");
        assert!(String::from_utf8_lossy(&metrics.body).contains("# TYPE"));
    }
    // On loopback, the admin API is there for the machine's own user.
    assert_eq!(get(d.admin_port, "/admin/status", none).status, 200);
    d.assert_healthy(&auth);
}

#[test]
fn metrics_open_to_a_scraper_when_asked() {
    let key = "sk-scrape-61b0aa4e";
    let none: &[(&str, &str)] = &[];
    let d = Daemon::start(&["--api-key", key, "--public-metrics", "true"], &[], &[]);
    assert_eq!(get(d.port, "/metrics", none).status, 200);
    get(d.port, "/v1/models", none).openai_error(401);
}

#[test]
fn an_admin_api_on_the_network_needs_its_own_key() {
    // Without an admin key: mlxd refuses to start, and says how to fix it.
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let mut child = common::isolated_serve(dir.path(), port, admin_port)
        .args([
            "--host",
            "0.0.0.0",
            "--api-key",
            "sk-k",
            "--admin-host",
            "0.0.0.0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until(TIMEOUT, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited && !out.status.success(), "it started:\n{stderr}");
    assert!(stderr.contains("--admin-api-key KEY"), "{stderr}");
    assert!(stderr.contains("server.admin_host"), "{stderr}");
    assert!(listeners(admin_port).is_empty() && listeners(port).is_empty());

    // With one, it listens there and takes only that key.
    let admin_key = "sk-admin-2c4f8b10";
    let admin_bearer = format!("Bearer {admin_key}");
    let d = Daemon::start(
        &[
            "--host",
            "0.0.0.0",
            "--api-key",
            "sk-k",
            "--admin-host",
            "0.0.0.0",
            "--admin-api-key",
            admin_key,
        ],
        &[],
        &[("Authorization", &admin_bearer)],
    );
    for ip in other_addresses() {
        get_at(ip, d.admin_port, "/admin/status", &[]).openai_error(401);
        let reply = get_at(
            ip,
            d.admin_port,
            "/admin/status",
            &[("Authorization", "Bearer sk-k")],
        );
        reply.openai_error(401);
        let reply = get_at(
            ip,
            d.admin_port,
            "/admin/status",
            &[("Authorization", &admin_bearer)],
        );
        assert_eq!(reply.status, 200, "{ip}");
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
