//! Helpers shared by the integration tests: the binary, and a tiny model on
//! disk with the default model's tokenizer.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `mlxd` without any library path (its rpath must suffice).
pub fn mlxd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlxd"));
    cmd.env_remove("LD_LIBRARY_PATH")
        .env_remove("DYLD_LIBRARY_PATH");
    cmd
}

pub fn mlxd_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mlxd"))
}

/// A tiny random f32 Llama (2 layers, d=64) with SmolLM2's tokenizer,
/// written once per test binary.
pub fn tiny_model() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("tiny");
            let out = mlxd()
                .args(["synth", "--preset", "tiny-f32", "--vocab", "49152"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (dir, path)
        })
        .1
}

/// A free TCP port on loopback (free when asked: a daemon that loses a
/// race for it fails to bind, and its test starts another).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `mlxd serve` cut off from this machine's settings: no `MLXD_*`
/// variables, no user configuration, `empty` as its models folder and hub
/// cache, listening on `port` and `admin_port` (on the default host,
/// loopback). Callers add the models and flags they need.
pub fn isolated_serve(empty: &Path, port: u16, admin_port: u16) -> Command {
    let mut cmd = mlxd();
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MLXD_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("XDG_CONFIG_HOME", empty)
        .env("HF_HUB_CACHE", empty)
        .args(["serve", "--port", &port.to_string()])
        .args(["--admin-port", &admin_port.to_string()])
        .arg("--models-dir")
        .arg(empty)
        .arg("--hf-cache")
        .arg(empty);
    cmd
}

/// Whether a process exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
