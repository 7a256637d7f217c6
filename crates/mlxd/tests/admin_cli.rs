//! `mlxd ps`, `load` and `unload` against a running `mlxd serve` with a
//! tiny model.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A daemon that is killed when the test ends, however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn admin(args: &[&str], url: &str) -> String {
    let out = mlxd().args(args).args(["--url", url]).output().unwrap();
    assert_success(&out);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn ps_load_and_unload_drive_a_running_daemon() {
    let (port, admin_port) = (free_port(), free_port());
    let model = format!("tiny={}", tiny_model().display());
    let daemon = Daemon(
        mlxd()
            .args([
                "serve",
                "--port",
                &port.to_string(),
                "--admin-port",
                &admin_port.to_string(),
            ])
            .args(["--model", &model, "--config", "/dev/null"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{admin_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let loaded = admin(&["load", "tiny", "--keep-alive", "5m"], &url);
    assert!(loaded.starts_with("loaded tiny (pid "), "{loaded}");
    let table = admin(&["ps"], &url);
    let row = table
        .lines()
        .find(|l| l.starts_with("tiny"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("ready") && row.contains("300s"), "{row}");
    let unloaded = admin(&["unload", "tiny"], &url);
    assert!(unloaded.starts_with("unloading tiny"), "{unloaded}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let table = admin(&["ps"], &url);
        if !table.contains("ready") {
            break;
        }
        assert!(Instant::now() < deadline, "still loaded: {table}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = mlxd()
        .args(["load", "nope", "--url", &url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(daemon);
}
