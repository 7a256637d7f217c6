#!/usr/bin/env bash
# Runs on the GPU machine, from a folder holding what scripts/gpu/stage.sh
# laid out in carry-b (and carry-a's files already copied to /tmp/mlxd-gpu).
#
#   device.sh install            join and install the wheels into /tmp/mlxd-gpu/site
#   device.sh env                print the environment to `eval`
#   device.sh check              mlxd info: MLX must report the CUDA backend
#   device.sh bench PRESET...    synthetic checkpoints of real shapes, measured
#                                by mlxd (bench --engine) and by mlx-lm on the
#                                same files, side by side; JSON into $OUT
#   device.sh suite PRESET...    the benchmark suite (engine, mlxd serve over
#                                HTTP, mlx_lm.server) on synthetic checkpoints;
#                                report into $OUT/suite
#   device.sh batch PRESET...    continuous batching in-process: tok/s and
#                                TTFT at 1/4/16/64 streams, prompt-cache TTFT;
#                                JSON into $OUT
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=/tmp/mlxd-gpu
site=$base/site

env_lines() {
  local nvidia
  nvidia=$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])')
  local libs="$site/mlx/lib:$site/mlx_cuda_13.libs"
  for d in "$nvidia"/*/lib; do libs="$libs:$d"; done
  echo "export LD_LIBRARY_PATH=$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
  echo "export PYTHONPATH=$site"
  # Compiled kernels persist across processes (the first compile takes a minute).
  echo "export MLX_PTX_CACHE_DIR=$base/ptx"
}

case "${1:-}" in
  install)
    mkdir -p "$base"
    cat "$base/part.aa" "$here/part.ab" > "$base/mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl"
    python3 -m pip install --quiet --no-index --no-deps --target "$site" \
      "$base"/mlx_cuda_13-*.whl "$here"/wheels/*.whl
    ln -sfn "$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])')" "$site/nvidia"
    gunzip -c "$here/mlxd.gz" > "$base/mlxd" && chmod +x "$base/mlxd"
    cp -r "$here/tok" "$base/tok"
    echo "installed into $site"
    ;;
  env) env_lines ;;
  check)
    eval "$(env_lines)"
    "$base/mlxd" --version
    info=$("$base/mlxd" info)
    echo "$info"
    grep -q "CUDA backend" <<<"$info" || { echo "MLX does not report the CUDA backend" >&2; exit 1; }
    python3 -c 'import mlx.core as mx; print("python mlx", mx.__version__, mx.default_device(), mx.cuda.is_available())'
    ;;
  bench)
    shift
    eval "$(env_lines)"
    out=${OUT:-$base/out}
    mkdir -p "$out" "$base/models"
    for preset in "$@"; do
      dir=$base/models/$preset
      [ -f "$dir/config.json" ] || "$base/mlxd" synth --preset "$preset" --tokenizer-from "$base/tok" "$dir"
      "$base/mlxd" bench --engine -m "$dir" --prompt-tokens "${PROMPT:-512}" --gen-tokens "${GEN:-200}" \
        --repeats "${REPEATS:-5}" --json "$out/$preset-mlxd.json"
      python3 "$here/mlx_lm_bench.py" "$dir" "${PROMPT:-512}" "${GEN:-200}" "${REPEATS:-5}" > "$out/$preset-mlxlm.json"
      python3 - "$out/$preset-mlxd.json" "$out/$preset-mlxlm.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
print(f"{a['model']}: mlxd decode {a['decode_tps']['median']:.1f} tok/s, prefill {a['prefill_tps']['median']:.0f} tok/s"
      f" | mlx-lm decode {b['decode_tps']['median']:.1f} tok/s, prefill {b['prefill_tps']['median']:.0f} tok/s"
      f" | ratio decode {a['decode_tps']['median'] / b['decode_tps']['median']:.2f}")
PY
    done
    ;;
  suite)
    shift
    eval "$(env_lines)"
    out=${OUT:-$base/out}
    mkdir -p "$out" "$base/models"
    dirs=()
    for preset in "$@"; do
      dir=$base/models/$preset
      [ -f "$dir/config.json" ] || "$base/mlxd" synth --preset "$preset" --tokenizer-from "$base/tok" "$dir"
      dirs+=("$dir")
    done
    models=$(IFS=,; echo "${dirs[*]}")
    HOME=$base "$base/mlxd" bench --suite -m "$models" --tokens "${TOKENS:-50,100,200}" \
      --runs "${RUNS:-5}" --concurrency "${STREAMS:-1,4,16,64}" --python python3 --out "$out/suite"
    ;;
  batch)
    shift
    eval "$(env_lines)"
    out=${OUT:-$base/out}
    mkdir -p "$out"
    for preset in "$@"; do
      "$base/batch_throughput" --synthetic "$preset" --concurrency "${STREAMS:-1,4,16,64}" \
        --prompt "${PROMPT:-512}" --tokens "${GEN:-200}" --history "${HISTORY:-2000}" \
        --arrivals "${ARRIVALS:-64}" --every-ms "${EVERY_MS:-50}" \
        --json "$out/$preset-batch.json"
    done
    ;;
  *) echo "usage: device.sh install|env|check|bench|suite|batch PRESET..." >&2; exit 2 ;;
esac
