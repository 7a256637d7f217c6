//! The built binary runs without any library path set (its rpath finds
//! libmlx) and its commands print what they promise.

use std::process::Command;

fn mlxd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlxd"));
    cmd.env_remove("LD_LIBRARY_PATH")
        .env_remove("DYLD_LIBRARY_PATH");
    cmd
}

#[test]
fn version_names_the_mlx_version_and_backend() {
    let out = mlxd().arg("--version").output().expect("mlxd runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.starts_with("mlxd "), "{text}");
    assert!(text.contains("MLX 0.32.4"), "{text}");
    assert!(text.contains("backend"), "{text}");
}

#[test]
fn info_checks_mlx_computes_correctly() {
    let out = mlxd().arg("info").output().expect("mlxd runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("MLX 0.32.4"), "{text}");
    assert!(text.contains("check: 4-bit quantized matmul"), "{text}");
}

#[test]
fn an_unknown_command_fails_with_usage() {
    let out = mlxd().arg("frobnicate").output().expect("mlxd runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
}
