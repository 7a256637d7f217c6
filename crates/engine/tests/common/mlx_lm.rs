//! The tiny random checkpoints mlx-lm writes (`tests/data/mlx_lm_reference.py`)
//! with its outputs on them, written once per test binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use engine::Model;

/// `$MLXD_PYTHON`, else the repository's `.venv` (with mlx-lm).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MLXD_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run `scripts/setup.sh test`",
        venv.display()
    );
    venv
}

/// The folder of the reference checkpoints, one per variant:
/// `$MLXD_MLX_LM_REFERENCE` when set (a folder the script wrote before, to
/// iterate on a family without writing every variant again), else written
/// now into a temporary folder.
pub fn reference_dir() -> &'static Path {
    static GIVEN: OnceLock<Option<PathBuf>> = OnceLock::new();
    if let Some(dir) =
        GIVEN.get_or_init(|| std::env::var_os("MLXD_MLX_LM_REFERENCE").map(PathBuf::from))
    {
        return dir;
    }
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| run_script("mlx_lm_reference.py")).path()
}

/// The folder of the quantized-KV reference checkpoints
/// (`tests/data/mlx_lm_kv_quant.py`), one per variant.
pub fn kv_quant_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| run_script("mlx_lm_kv_quant.py")).path()
}

/// Runs `tests/data/{name}` (a reference script: mlx-lm's or mlx-vlm's)
/// into a new temporary folder.
pub fn run_script(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let out = Command::new(python())
        .arg(&script)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed (needs the references: `scripts/setup.sh test`):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// The reference checkpoint `name`, loaded.
pub fn load(name: &str) -> Model {
    Model::load_dir(&reference_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}
