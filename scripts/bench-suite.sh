#!/usr/bin/env bash
# Installs what mlxd needs (and mlx-lm, a peer the suite measures when it is
# there), builds mlxd in release mode and runs the benchmark suite:
# `mlxd bench --suite` with the arguments given (default: the built-in
# model, 50/100/200 tokens, 5 runs, 1/4/16 concurrent streams, into
# bench-suite/). See docs/benchmarks/suite.md.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh test
cargo build --release --locked -p mlxd
if [[ $# -eq 0 ]]; then
  set -- --concurrency 1,4,16 --out bench-suite
fi
exec "${CARGO_TARGET_DIR:-target}/release/mlxd" bench --suite "$@"
