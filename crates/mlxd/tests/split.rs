//! `mlxd run --hosts 127.0.0.1,127.0.0.1 --parallel tensor|pipeline`: a
//! model split over two processes on MLX's ring (over loopback) generates
//! the greedy text of one process, on tiny random checkpoints mlx-lm
//! writes (`tests/data/split_checkpoints.py`); a rank that dies or never
//! connects ends the run with an error naming it, not a hang.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{assert_success, live_children, mlxd, tiny_model, wait_until};

/// `$MLXD_PYTHON`, else the repository's `.venv` (with mlx-lm).
fn python() -> PathBuf {
    std::env::var_os("MLXD_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
        PathBuf::from,
    )
}

/// The folder of the checkpoints, written once per test binary.
fn checkpoints() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/split_checkpoints.py");
        let out = Command::new(python())
            .arg(&script)
            .arg(dir.path())
            .arg(tiny_model())
            .output()
            .expect("python runs");
        assert_success(&out);
        dir
    })
    .path()
}

/// `mlxd run` of checkpoint `name`: 16 greedy tokens of a raw prompt, on
/// `hosts` split as `parallel` (none: one process).
fn run(name: &str, split: Option<(&str, &str)>) -> Output {
    let mut cmd = mlxd();
    cmd.env("RUST_BACKTRACE", "0")
        .arg("run")
        .arg("-m")
        .arg(checkpoints().join(name))
        .args(["-p", "The quick brown fox jumps over the lazy dog"])
        // Prompt chunks of three tokens: passes that only fill the caches
        // must run on every rank as well.
        .args(["-n", "16", "--raw", "--ignore-eos", "--prefill-step", "3"]);
    if let Some((hosts, parallel)) = split {
        cmd.args([
            "--hosts",
            hosts,
            "--parallel",
            parallel,
            "--connect-timeout",
            "30",
        ]);
    }
    cmd.output().expect("mlxd runs")
}

/// The generated text of a successful run.
fn text(out: &Output) -> String {
    assert_success(out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("generation: 16 tokens"), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_split_matches_one_rank(name: &str, modes: &[&str]) {
    let one = text(&run(name, None));
    assert!(!one.trim().is_empty());
    for mode in modes {
        let split = text(&run(name, Some(("127.0.0.1,127.0.0.1", mode))));
        assert_eq!(split, one, "{name} over two ranks, {mode} parallel");
    }
}

#[test]
fn a_llama_with_biases_split_two_ways_generates_the_text_of_one_rank() {
    assert_split_matches_one_rank("llama_bias", &["tensor", "pipeline"]);
}

#[test]
fn a_four_bit_llama_split_two_ways_generates_the_text_of_one_rank() {
    assert_split_matches_one_rank("llama_q4", &["tensor", "pipeline"]);
}

#[test]
fn a_qwen3_moe_split_two_ways_generates_the_text_of_one_rank() {
    assert_split_matches_one_rank("qwen3_moe", &["tensor", "pipeline"]);
}

#[test]
fn a_pipeline_of_three_ranks_generates_the_text_of_one_rank() {
    let one = text(&run("llama_bias", None));
    let three = text(&run(
        "llama_bias",
        Some(("127.0.0.1,127.0.0.1,127.0.0.1", "pipeline")),
    ));
    assert_eq!(three, one);
}

#[test]
fn a_split_that_does_not_divide_the_heads_is_refused_by_name() {
    let out = run(
        "llama_bias",
        Some(("127.0.0.1,127.0.0.1,127.0.0.1", "tensor")),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("num_attention_heads (4) divisible by 3"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn killing_rank_1_mid_run_ends_rank_0_with_that_ranks_error() {
    let mut lead = mlxd()
        .env("RUST_BACKTRACE", "0")
        .arg("run")
        .arg("-m")
        .arg(checkpoints().join("llama_bias"))
        .args([
            "-p",
            "The quick brown fox",
            "-n",
            "100000",
            "--raw",
            "--ignore-eos",
        ])
        .args(["--hosts", "127.0.0.1,127.0.0.1", "--parallel", "tensor"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mlxd runs");
    // Rank 1 is the child; kill it once text is flowing.
    let mut stdout = lead.stdout.take().unwrap();
    let mut first = [0u8; 8];
    std::io::Read::read_exact(&mut stdout, &mut first).expect("rank 0 generates");
    let children = live_children(lead.id());
    assert_eq!(children.len(), 1, "one follower rank: {children:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(children[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let started = Instant::now();
    let mut status = None;
    assert!(
        wait_until(Duration::from_secs(60), || {
            status = lead.try_wait().unwrap();
            status.is_some()
        }),
        "rank 0 still running {:?} after rank 1 died",
        started.elapsed()
    );
    assert!(!status.unwrap().success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut lead.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("rank 1 on 127.0.0.1 was killed by signal 9"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_rank_whose_peer_never_connects_fails_naming_it_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let hostfile = dir.path().join("hosts.json");
    std::fs::write(
        &hostfile,
        format!(
            r#"[["127.0.0.1:{port}"],["127.0.0.1:{}"]]"#,
            common::free_port()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = mlxd()
        .env("RUST_BACKTRACE", "0")
        .env("MLX_HOSTFILE", &hostfile)
        .env("MLX_RANK", "1")
        .arg("rank")
        .arg("--model")
        .arg(checkpoints().join("llama_bias"))
        .args(["--parallel", "tensor", "--connect-timeout", "2"])
        .output()
        .expect("mlxd runs");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "rank 1 could not join the ring within 2 s: not reached: rank 0 at 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}

#[test]
fn a_family_that_cannot_be_split_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let model = dir.path().join("gemma3");
    let out = mlxd()
        .args(["synth", "--preset", "tiny-gemma3-f32", "--vocab", "49152"])
        .arg(&model)
        .output()
        .expect("mlxd runs");
    assert_success(&out);
    let out = mlxd()
        .env("RUST_BACKTRACE", "0")
        .arg("run")
        .arg("-m")
        .arg(&model)
        .args(["-p", "hi", "-n", "2", "--hosts", "127.0.0.1,127.0.0.1"])
        .output()
        .expect("mlxd runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gemma3_text: this family cannot be split across ranks"),
        "{stderr}"
    );
    assert!(
        stderr.contains("llama, mistral, qwen2, qwen3, qwen3_moe"),
        "{stderr}"
    );
}
