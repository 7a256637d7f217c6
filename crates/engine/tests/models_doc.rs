//! `docs/models.md` is what the engine loads: the list of model types from
//! the registry, the quantization modes, and the GGUF architectures and
//! tensor types, rendered here and compared with the file, so the page
//! cannot go stale. `MLXD_WRITE_DOCS=1 cargo test -p engine --test
//! models_doc` writes it.

use std::fmt::Write as _;
use std::path::Path;

use engine::gguf_quant::{EXACT_TYPES, REQUANTIZED_TYPES};
use engine::model::gguf::ARCHITECTURES;
use engine::model::supported_model_types;
use mlx::QuantMode;

fn render() -> String {
    let code = |items: &[&str]| {
        items
            .iter()
            .map(|i| format!("`{i}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    out.push_str(
        "# Supported models\n\n\
         <!-- Generated from the engine by `crates/engine/tests/models_doc.rs`: \
         `MLXD_WRITE_DOCS=1 cargo test -p engine --test models_doc` rewrites it. -->\n\n\
         A model directory in the Hugging Face / mlx-community layout loads when its \
         `config.json`'s `model_type` (or, for a multimodal-style config, its \
         `text_config.model_type`) is one of these. Each family is one file under \
         `crates/engine/src/model/` (some take several types), checked against \
         mlx-lm 0.32.2 on tiny random checkpoints \
         (`crates/engine/tests/mlx_lm_parity.rs`); `qwen2_5_vl` also takes images \
         (engine level only, not yet over HTTP), checked against mlx-vlm 0.7.10 \
         (`crates/engine/tests/qwen2_5_vl.rs`).\n\n",
    );
    let types = supported_model_types();
    let _ = writeln!(out, "## Model types ({})\n", types.len());
    for t in &types {
        let _ = writeln!(out, "- `{t}`");
    }
    let modes: Vec<&str> = QuantMode::ALL.iter().map(|m| m.name()).collect();
    let _ = writeln!(
        out,
        "\n## Quantization\n\nMLX's modes as mlx-lm writes them, from `quantization` \
         (or `quantization_config`) with per-layer overrides: {}.\n",
        code(&modes)
    );
    let _ = writeln!(
        out,
        "## GGUF files\n\n- Architectures: {}.\n- Tensor types loaded exactly \
         (as MLX affine groups of 32, or as they are): {}.\n- Re-quantized to affine \
         groups of 32 between each group's min and max (each weight within half a step \
         of that width): {}.\n- Any other type is refused by name.",
        code(&ARCHITECTURES),
        code(&EXACT_TYPES),
        REQUANTIZED_TYPES
            .iter()
            .map(|(t, bits)| format!("`{t}` ({bits} bits)"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    out
}

#[test]
fn models_md_lists_what_the_engine_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/models.md");
    let want = render();
    if std::env::var_os("MLXD_WRITE_DOCS").is_some() {
        std::fs::write(&path, &want).expect("docs/models.md is writable");
    }
    let got = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "docs/models.md is stale: run `MLXD_WRITE_DOCS=1 cargo test -p engine --test models_doc`"
    );
}
