//! The built binary runs without any library path set (its rpath finds
//! libmlx) and its commands print what they promise.

mod common;

use common::{assert_success, mlxd, test_data};

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

#[test]
fn run_answers_with_the_default_model_and_reports_speed() {
    let out = mlxd()
        .args(["run", "-p", "What is the capital of France?", "-n", "16"])
        .output()
        .expect("mlxd runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "The capital of France is Paris.\n"
    );
    assert!(stderr.contains("prompt: 37 tokens"), "{stderr}");
    assert!(stderr.contains("generation: 8 tokens"), "{stderr}");
    assert!(stderr.contains("peak memory"), "{stderr}");
}

#[test]
fn run_with_a_quantized_kv_cache_still_answers_and_refuses_bad_bits() {
    let out = mlxd()
        .args(["run", "-p", "What is the capital of France?", "-n", "16"])
        .args(["--kv-bits", "8"])
        .output()
        .expect("mlxd runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Paris"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = mlxd()
        .args(["run", "-p", "hi", "--kv-bits", "3"])
        .output()
        .expect("mlxd runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kv_bits must be 4 or 8"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bench_measures_a_synthetic_model_and_writes_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("bench.json");
    let out = mlxd()
        .args(["bench", "--engine", "--synthetic", "tiny-f32"])
        .args([
            "--prompt-tokens",
            "16",
            "--gen-tokens",
            "8",
            "--repeats",
            "3",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("mlxd runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| decode tok/s |"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written"))
            .expect("valid json");
    assert_eq!(report["runs"].as_array().map(Vec::len), Some(3));
    assert_eq!(report["gen_tokens"], 8);
    assert!(
        report["decode_tps"]["median"]
            .as_f64()
            .is_some_and(|v| v > 0.0)
    );
}

#[test]
fn bad_models_fail_with_a_message_not_a_panic() {
    let out = mlxd()
        .args(["run", "-m", "/no/such/model.gguf", "-p", "hi"])
        .output()
        .expect("mlxd runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not found"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let out = mlxd()
        .args(["bench", "--engine", "--synthetic", "nope"])
        .output()
        .expect("mlxd runs");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown synthetic model"));
}

#[test]
fn a_synthetic_checkpoint_written_with_a_qwen_tokenizer_generates_its_text() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("qwen-shaped");
    let out = mlxd()
        .args(["synth", "--preset", "tiny-f32", "--vocab", "151936"])
        .arg("--tokenizer-from")
        .arg(test_data("npm/qwen3"))
        .arg(&model)
        .output()
        .expect("mlxd runs");
    assert_success(&out);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["vocab_size"], 151_936);
    let out = mlxd()
        .arg("run")
        .arg("-m")
        .arg(&model)
        .args([
            "-p",
            "What is the capital of France?",
            "-n",
            "8",
            "--ignore-eos",
        ])
        .output()
        .expect("mlxd runs");
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Qwen's ChatML without a default system message: 15 tokens (SmolLM2's
    // template adds a system message).
    assert!(stderr.contains("prompt: 15 tokens"), "{stderr}");
    assert!(stderr.contains("generation: 8 tokens"), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.trim().is_empty(), "no text for 8 generated ids");
}

#[test]
fn run_speculates_with_a_draft_model_or_prompt_lookup_and_prints_the_same_text() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("tiny");
    let out = mlxd()
        .args(["synth", "--preset", "tiny-f32", "--vocab", "49152"])
        .arg(&model)
        .output()
        .expect("mlxd runs");
    assert_success(&out);
    let run = |extra: &[&str]| {
        let out = mlxd()
            .arg("run")
            .arg("-m")
            .arg(&model)
            .args(["-p", "Say it again and again", "-n", "16", "--ignore-eos"])
            .args(extra)
            .output()
            .expect("mlxd runs");
        assert_success(&out);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    };
    let (plain, _) = run(&[]);
    let draft = model.display().to_string();
    // The model as its own draft: every draft token is accepted.
    let (text, stderr) = run(&["--draft-model", &draft, "--num-draft-tokens", "3"]);
    assert_eq!(text, plain);
    assert!(stderr.contains("generation: 16 tokens"), "{stderr}");
    let drafted = stderr
        .split("draft: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(drafted > 0, "{stderr}");
    assert!(
        stderr.contains(&format!("{drafted} accepted (100 %)")),
        "{stderr}"
    );
    let (text, stderr) = run(&["--prompt-lookup"]);
    assert_eq!(text, plain);
    assert!(stderr.contains("draft: "), "{stderr}");
}
