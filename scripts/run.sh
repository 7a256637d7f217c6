#!/usr/bin/env bash
# Installs what mlxd needs, builds it in release mode and runs it. With no
# arguments it runs the daemon, `mlxd serve`, with the built-in default
# model (the OpenAI API on 127.0.0.1:11440, the admin API on :11441).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --locked -p mlxd
if [[ $# -eq 0 ]]; then
  set -- serve
fi
exec target/release/mlxd "$@"
