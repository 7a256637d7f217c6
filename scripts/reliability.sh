#!/usr/bin/env bash
# The reliability run (its figures are in docs/reliability.md):
#   1. fault injection: 100 trials of SIGKILL / SIGSEGV / SIGSTOP of the
#      worker while it loads, prefills, decodes, idles, or sits behind a
#      stalled client, against a release `mlxd serve` with the tiny model
#      (crates/mlxd/tests/faults.rs);
#   2. load: 10,000 mixed requests over 64 connections (after as many to
#      warm up) against a release
#      `mlxd serve` (crates/loadgen): no error but designed 429s, p50/p99,
#      and the daemon's and worker's memory back within 5% after a settle
#      period;
#   3. the fuzzers, when scripts/fuzz.sh is there.
#
#   scripts/reliability.sh
#
# Environment:
#   MLXD_FAULT_TRIALS      fault trials (default 100)
#   MLXD_FAULT_SEED        replays a fault run (printed by each run)
#   RELIABILITY_MODEL      tiny (default) or default: the built-in
#                          SmolLM2-135M (on a CPU-only machine MLX decodes it
#                          too slowly for 10,000 requests in reasonable time)
#   RELIABILITY_REQUESTS   load requests (default 10000)
#   RELIABILITY_CONNECTIONS  load connections (default 64)
#   RELIABILITY_FUZZ_SECONDS  seconds per fuzz target (default 60; 0 skips)
#
# Figures go to $OUT (default target/reliability): faults.json, load.json,
# and the logs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

out=${OUT:-$root/target/reliability}
mkdir -p "$out"
trials=${MLXD_FAULT_TRIALS:-100}
requests=${RELIABILITY_REQUESTS:-10000}
connections=${RELIABILITY_CONNECTIONS:-64}
fuzz_seconds=${RELIABILITY_FUZZ_SECONDS:-60}
model_choice=${RELIABILITY_MODEL:-tiny}
target=${CARGO_TARGET_DIR:-$root/target}

scripts/setup.sh
cargo build --release --locked -p mlxd -p loadgen
mlxd=$target/release/mlxd

echo "== fault injection: $trials trials"
MLXD_FAULT_TRIALS=$trials MLXD_FAULT_REPORT=$out/faults.json \
  cargo test --release --locked -p mlxd --test faults -- --nocapture 2>&1 |
  tee "$out/faults.log" | grep -E '^(trial|fault injection|test result)|panicked'
test "${PIPESTATUS[0]}" -eq 0

echo "== load: $requests requests over $connections connections ($model_choice model)"
work=$(mktemp -d)
daemon=
cleanup() {
  if [ -n "$daemon" ]; then kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/empty"
case $model_choice in
  tiny)
    "$mlxd" synth --preset tiny-f32 --vocab 49152 "$work/tiny" >/dev/null
    model_args=(--model "tiny=$work/tiny")
    model=tiny
    ;;
  default)
    model_args=()
    model=SmolLM2-135M-Instruct
    ;;
  *)
    echo "RELIABILITY_MODEL must be tiny or default" >&2
    exit 2
    ;;
esac
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
admin_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The prompt cache is capped so that the warm-up fills it: what the load
# leaves behind is then what it leaked, not what the cache keeps by design.
XDG_CONFIG_HOME=$work/empty HF_HUB_CACHE=$work/empty \
  "$mlxd" serve --host 127.0.0.1 --port "$port" --admin-port "$admin_port" \
  --hf-cache "$work/empty" "${model_args[@]}" --prompt-cache 4MiB \
  >"$out/serve.log" 2>&1 &
daemon=$!
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$admin_port/admin/health" >/dev/null && break
  sleep 0.2
done
"$target/release/mlxd-loadgen" \
  --url "http://127.0.0.1:$port" --admin-url "http://127.0.0.1:$admin_port" \
  --model "$model" --requests "$requests" --concurrency "$connections" \
  --warmup "$requests" --settle 10 --max-drift 0.05 --json "$out/load.json" |
  tee "$out/load.txt"
test "${PIPESTATUS[0]}" -eq 0
kill "$daemon"
wait "$daemon" || true
daemon=

if [ -x scripts/fuzz.sh ] && [ "$fuzz_seconds" -gt 0 ]; then
  echo "== fuzzing: $fuzz_seconds s per target"
  scripts/fuzz.sh "$fuzz_seconds" | tee "$out/fuzz.txt"
  test "${PIPESTATUS[0]}" -eq 0
fi
echo "== reliability run passed; figures in $out"
