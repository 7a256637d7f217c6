//! Helpers shared by the integration tests: the binary, and a tiny model on
//! disk with the default model's tokenizer.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// `mlxd` without any library path (its rpath must suffice).
pub fn mlxd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlxd"));
    cmd.env_remove("LD_LIBRARY_PATH")
        .env_remove("DYLD_LIBRARY_PATH");
    cmd
}

/// Fails the test, showing the command's status and output, unless it
/// exited with success.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A file or directory of the data `scripts/test-data.sh` installs
/// (`$MLXD_TEST_DATA`, else `<workspace root>/.cache/test-data`); panics
/// when it is missing: these tests never skip.
pub fn test_data(rel: &str) -> PathBuf {
    let data = std::env::var_os("MLXD_TEST_DATA").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/test-data"),
        PathBuf::from,
    );
    let path = data.join(rel);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test-data.sh",
        path.display()
    );
    path
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

/// Polls `f` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Child processes of `pid`, zombies included, as (pid, state letter).
pub fn child_processes(pid: u32) -> Vec<(u32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
            let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            (ppid == Some(pid)).then_some((child, state))
        })
        .collect()
}

/// Live (not zombie) children of `pid`.
pub fn live_children(pid: u32) -> Vec<u32> {
    child_processes(pid)
        .into_iter()
        .filter(|&(_, state)| state != 'Z')
        .map(|(child, _)| child)
        .collect()
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

/// Writes an HTTP/1.1 request for `path` on the daemon at `port` to
/// `stream` (`Connection: close`; a POST carries `body` as JSON).
pub fn write_request(
    stream: &std::net::TcpStream,
    port: u16,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> std::io::Result<()> {
    use std::io::Write;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut stream = stream;
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}
