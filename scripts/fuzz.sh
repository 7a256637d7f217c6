#!/usr/bin/env bash
# Fuzzes the decoders that read untrusted bytes, with cargo-fuzz (libFuzzer,
# coverage-guided): the shared-memory ring's frames (ring_frames), the worker
# protocol's messages and prompt reassembly (protocol_messages), and the
# OpenAI request parsers (api_request). The quick form, every corpus file
# through the same functions, is part of `cargo test`.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default: 60 s, all)
#
# Runs on a stable toolchain: without a sanitizer (`-s none`, which needs
# no nightly flag; the harnesses' own assertions, and the overflow checks
# and debug assertions that `-a` turns on, find the bugs), with libFuzzer's
# coverage instrumentation as usual. One process per target (libFuzzer's
# default, -jobs is not used), one target after the other. Prints each target's executions, coverage and crashes; a crash's
# input is kept under $FUZZ_WORK/artifacts/<target>/ and the script exits 1.
#
# FUZZ_UPDATE_CORPUS=1 adds what the run found that reaches new code to
# fuzz/corpus/<target>/, minimized with `cargo fuzz cmin` on edge coverage
# (the seed-* files are always kept).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(ring_frames protocol_messages api_request)
fi

if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$root/target/fuzz}
work=${FUZZ_WORK:-$root/target/fuzz-work}
mkdir -p "$work"
fuzz=(cargo fuzz)
flags=(-s none -O -a --fuzz-dir "$root/fuzz")

"${fuzz[@]}" build "${flags[@]}"

summary=()
failed=0
for t in "${targets[@]}"; do
  found="$work/$t/found"
  artifacts="$work/artifacts/$t/"
  log="$work/$t.log"
  rm -rf "$found"
  mkdir -p "$found" "$artifacts"
  echo "== $t: ${seconds} s"
  status=0
  "${fuzz[@]}" run "${flags[@]}" "$t" "$found" "$root/fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -artifact_prefix="$artifacts" -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  execs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+)\/.*/cov \1, features \2, corpus \3/p' <<<"$last")
  crashes=$(find "$artifacts" -type f | wc -l)
  echo "   ${execs:-?} executions, ${cov:-no coverage line}, $crashes crash file(s), exit $status"
  if [ "$status" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    failed=1
    grep -m1 -A3 'panicked at' "$log" || tail -20 "$log"
    find "$artifacts" -type f -printf '   crash input: %p\n'
  elif [ "${FUZZ_UPDATE_CORPUS:-0}" = 1 ]; then
    merged="$work/$t/merged"
    rm -rf "$merged"
    mkdir -p "$merged"
    cp "$root/fuzz/corpus/$t"/* "$found"/* "$merged"/ 2>/dev/null || true
    # Edges only (no hit counts), a small set that covers them all.
    "${fuzz[@]}" cmin "${flags[@]}" "$t" "$merged" -- -use_counters=0 -set_cover_merge=1 >"$work/$t.cmin.log" 2>&1
    find "$root/fuzz/corpus/$t" -type f ! -name 'seed-*' -delete
    find "$merged" -type f ! -name 'seed-*' -exec cp {} "$root/fuzz/corpus/$t"/ \;
    echo "   corpus: $(find "$root/fuzz/corpus/$t" -type f | wc -l) files, $(du -sh "$root/fuzz/corpus/$t" | cut -f1)"
  fi
  summary+=("$t ${seconds}s ${execs:-?} execs ${cov:-} crashes=$crashes exit=$status")
done

echo
echo "target seconds executions coverage crashes"
printf '%s\n' "${summary[@]}"
exit "$failed"
