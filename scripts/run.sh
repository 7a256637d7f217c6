#!/usr/bin/env bash
# Installs what mlxd needs, builds it in release mode and runs it. With no
# arguments it runs `mlxd info`: the MLX version, backend and device, and a
# check that MLX computes correctly on it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --locked -p mlxd
if [[ $# -eq 0 ]]; then
  set -- info
fi
exec target/release/mlxd "$@"
