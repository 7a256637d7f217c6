#!/usr/bin/env bash
# Runs on the GPU machine, from a folder holding what scripts/gpu/stage.sh
# laid out in carry-b (and carry-a's files already copied to /tmp/mlxd-gpu).
#
#   device.sh install            join and install the wheels into /tmp/mlxd-gpu/site
#   device.sh env                print the environment to `eval`
#   device.sh check              mlxd info: MLX must report the CUDA backend;
#                                the project's CUDA kernels against MLX's
#   device.sh bench PRESET...    synthetic checkpoints of real shapes, measured
#                                by mlxd (bench --engine) and by mlx-lm on the
#                                same files, side by side; JSON into $OUT
#                                (TAG names the files, MLXD_ARGS goes to mlxd
#                                bench, SKIP_MLXLM=1 measures mlxd alone)
#   device.sh suite PRESET...    the benchmark suite (engine, mlxd serve over
#                                HTTP, mlx_lm.server) on synthetic checkpoints;
#                                report.md and results.json into $OUT (the
#                                plots and logs stay in /tmp/mlxd-gpu/suite;
#                                SUITE_ARGS goes to mlxd bench, e.g.
#                                --no-peers; with MLXD_LOG=info,worker=debug
#                                the workers' busy stretches are summarized;
#                                PIN_WORKER=CPUS PIN_REST=CPUS run the workers
#                                on CPUS of their own, everything else on the
#                                rest, through taskset)
#   device.sh profile PRESET...  GPU time per kernel (Nsight Compute) of a window
#                                of mlxd's and of mlx-lm's decode on the same
#                                checkpoint
#   device.sh coldstart PRESET...  load-to-first-token of `mlxd serve` with an
#                                empty kernel cache, then with a warm one
#   device.sh batch PRESET...    continuous batching in-process: tok/s and
#                                TTFT at 1/4/16/64 streams, prompt-cache TTFT;
#                                JSON into $OUT (TAG names the files,
#                                BATCH_ARGS goes to the example, e.g.
#                                --qmv-max-rows 8 for the project's kernel
#                                up to 8 rows)
#   device.sh qmm                4- and 8-bit products of Qwen2.5 shapes at 1-64
#                                rows: MLX's, the project's kernel, the default
#                                choice; table and JSON into $OUT (ROWS=1,2,..)
#   device.sh machine            the GPU's memory bandwidth (the decode floor)
#                                and the ring's latencies on this host (the
#                                transport benchmark, --quick); into $OUT
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

# The environment, and $out for results.
prepare() {
  eval "$(env_lines)"
  out=${OUT:-$base/out}
  mkdir -p "$out"
}

# The synthetic checkpoint of a preset, written on first use: the Qwen2.5
# shapes with Qwen2.5's tokenizer, the others with SmolLM2's.
model_dir() {
  local dir=$base/models/$1 tok=$base/tok
  case $1 in qwen2.5-*) tok=$base/tok-qwen2 ;; esac
  mkdir -p "$base/models"
  [ -f "$dir/config.json" ] || "$base/mlxd" synth --preset "$1" --tokenizer-from "$tok" "$dir" >&2
  echo "$dir"
}

case "${1:-}" in
  install)
    mkdir -p "$base"
    cat "$base/part.aa" "$here/part.ab" > "$base/mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl"
    python3 -m pip install --quiet --no-index --no-deps --target "$site" \
      "$base"/mlx_cuda_13-*.whl "$here"/wheels/*.whl
    ln -sfn "$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])')" "$site/nvidia"
    # A kernels-only stage (STAGE=kernels) has no mlxd and no tokenizers.
    if [ -f "$here/mlxd.gz" ]; then
      gunzip -c "$here/mlxd.gz" > "$base/mlxd" && chmod +x "$base/mlxd"
      rm -rf "$base/tok" "$base/tok-qwen2" && mkdir -p "$base/tok-qwen2"
      cp -r "$here/tok" "$base/tok"
      gunzip -c "$here/tok-qwen2/tokenizer.json.gz" > "$base/tok-qwen2/tokenizer.json"
      cp "$here/tok-qwen2/tokenizer_config.json" "$base/tok-qwen2/"
    fi
    echo "installed into $site"
    ;;
  env) env_lines ;;
  check)
    eval "$(env_lines)"
    if [ -x "$base/mlxd" ]; then
      "$base/mlxd" --version
      info=$("$base/mlxd" info)
      echo "$info"
      grep -q "CUDA backend" <<<"$info" || { echo "MLX does not report the CUDA backend" >&2; exit 1; }
    fi
    "$base/qmv_test" --test-threads 1
    python3 -c 'import mlx.core as mx; print("python mlx", mx.__version__, mx.default_device(), mx.cuda.is_available())'
    ;;
  bench)
    shift
    prepare
    for preset in "$@"; do
      dir=$(model_dir "$preset")
      name=$out/${TAG:+$TAG-}$preset
      # shellcheck disable=SC2086 # MLXD_ARGS is a list of arguments
      "$base/mlxd" bench --engine -m "$dir" --prompt-tokens "${PROMPT:-512}" --gen-tokens "${GEN:-200}" \
        --repeats "${REPEATS:-5}" --json "$name-mlxd.json" ${MLXD_ARGS:-} > "$name-mlxd.txt" 2>&1
      reference=$name-mlxlm.json
      if [ "${SKIP_MLXLM:-0}" = 1 ]; then
        reference=
      else
        python3 "$here/mlx_lm_bench.py" "$dir" "${PROMPT:-512}" "${GEN:-200}" "${REPEATS:-5}" > "$reference"
      fi
      python3 - "$name-mlxd.json" "$reference" "${TAG:-}" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
m = lambda r, k: r[k]["median"]
line = (f"{sys.argv[3] or '-'} {a['model'].split('/')[-1]}: mlxd decode {m(a, 'decode_tps'):.1f} tok/s"
        f" prefill {m(a, 'prefill_tps'):.0f}; per step build {m(a, 'build_us'):.0f} us,"
        f" dispatch {m(a, 'dispatch_us'):.0f} us, wait {m(a, 'wait_us'):.0f} us;"
        f" {sum(n for _, n in a['step_ops'])} ops; TTFT {m(a, 'ttft_ms'):.1f} ms,"
        f" new lengths {m(a, 'fresh_ttft_ms'):.1f} ms")
if "scheduler" in a:
    s = a["scheduler"]
    line += (f" | scheduler decode {m(s, 'decode_tps'):.1f}, TTFT {m(s, 'ttft_ms'):.1f} ms"
             f" (generator {m(a, 'ttft_ms'):.1f}); scheduler/generator decode {s['decode_ratio']:.3f}")
if sys.argv[2]:
    b = json.load(open(sys.argv[2]))
    line += (f" | mlx-lm decode {m(b, 'decode_tps'):.1f} prefill {m(b, 'prefill_tps'):.0f}"
             f" TTFT {m(b, 'ttft_ms'):.1f} ms, new lengths {m(b, 'fresh_ttft_ms'):.1f} ms"
             f" | ratio {m(a, 'decode_tps') / m(b, 'decode_tps'):.2f}")
print(line, flush=True)
PY
    done
    ;;
  suite)
    shift
    prepare
    dirs=()
    for preset in "$@"; do
      dir=$(model_dir "$preset")
      dirs+=("$dir")
    done
    models=$(IFS=,; echo "${dirs[*]}")
    # Only a few files come back from the machine: the report and the data.
    rm -rf "$base/suite"
    # Whether the worker's host work slows when the front-end and the
    # bench's client share its cores: the workers on PIN_WORKER alone (each
    # re-pinned, every thread, as it appears), everything else on PIN_REST.
    pin=() pinner=
    if [ -n "${PIN_WORKER:-}" ]; then
      pin=(taskset -c "${PIN_REST:?PIN_REST: the CPUs for everything but the workers}")
      (while sleep 0.2; do
        for p in $(pgrep -f "$base/mlxd worker"); do taskset -a -cp "$PIN_WORKER" "$p" >/dev/null 2>&1 || true; done
      done) &
      pinner=$!
    fi
    # shellcheck disable=SC2086 # SUITE_ARGS is a list of arguments
    HOME=$base "${pin[@]}" "$base/mlxd" bench --suite -m "$models" --tokens "${TOKENS:-50,100,200}" \
      --runs "${RUNS:-5}" --concurrency "${STREAMS:-1,4,16,64}" --python python3 --out "$base/suite" \
      ${SUITE_ARGS:-}
    [ -z "$pinner" ] || kill "$pinner"
    cp "$base/suite/report.md" "$base/suite/results.json" "$out/"
    python3 "$here/stretches.py" "$base"/suite/logs/mlxd-*.log | tee "$out/stretches.txt"
    ;;
  profile)
    # Nsight Compute times each kernel alone (serialized): a window of
    # KERNELS launches after SKIP, well inside the warm-up run's decode.
    shift
    prepare
    ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1 || true)
    [ -n "$ncu" ] || { echo "no ncu on this machine" >&2; exit 1; }
    for preset in "$@"; do
      dir=$(model_dir "$preset")
      for engine in mlxd mlxlm; do
        if [ "$engine" = mlxd ]; then
          cmd=("$base/mlxd" bench --engine -m "$dir" --prompt-tokens "${PROMPT:-512}" --gen-tokens "${GEN:-200}" --repeats 1)
        else
          cmd=(python3 "$here/mlx_lm_bench.py" "$dir" "${PROMPT:-512}" "${GEN:-200}" 1)
        fi
        "$ncu" --metrics gpu__time_duration.sum --csv --graph-profiling node \
          --launch-skip "${SKIP:-20000}" --launch-count "${KERNELS:-3000}" "${cmd[@]}" \
          > "$out/$preset-$engine-ncu.csv" 2> "$out/$preset-$engine-ncu.err" || true
        echo "== $preset $engine: GPU time per kernel over ${KERNELS:-3000} decode kernels"
        python3 - "$out/$preset-$engine-ncu.csv" <<'PY'
import csv, collections, sys
lines = [l for l in open(sys.argv[1]) if l.startswith('"')]
rows = [r for r in csv.DictReader(lines) if r.get("Metric Name") == "gpu__time_duration.sum"]
if not rows:
    sys.exit("no kernel timings (see the .err file)")
unit = rows[0]["Metric Unit"]
scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}[unit]
time, count = collections.Counter(), collections.Counter()
for r in rows:
    name = r["Kernel Name"].split("(")[0].split("<")[0][:70]
    time[name] += float(r["Metric Value"].replace(",", "")) * scale
    count[name] += 1
print(f"total {sum(time.values()) / 1e3:.2f} ms in {len(rows)} kernels")
for name, t in time.most_common(14):
    print(f"{t / 1e3:8.2f} ms {count[name]:6d} x {t / count[name]:7.1f} us  {name}")
PY
      done
    done
    ;;
  coldstart)
    shift
    prepare
    for preset in "$@"; do
      dir=$(model_dir "$preset")
      python3 "$here/coldstart.py" "$base/mlxd" "$dir" "${WARM_RUNS:-3}" | tee "$out/$preset-coldstart.json"
    done
    ;;
  batch)
    shift
    prepare
    for preset in "$@"; do
      # As mlxd runs the engine (it sets this for itself; the example does not).
      # shellcheck disable=SC2086 # BATCH_ARGS is a list of arguments
      MLX_CUDA_USE_CUDNN_SDPA=${MLX_CUDA_USE_CUDNN_SDPA:-0} "$base/batch_throughput" --synthetic "$preset" --concurrency "${STREAMS:-1,4,16,64}" \
        --prompt "${PROMPT:-512}" --tokens "${GEN:-200}" --history "${HISTORY:-2000}" \
        --arrivals "${ARRIVALS:-64}" --every-ms "${EVERY_MS:-50}" \
        --json "$out/${TAG:+$TAG-}$preset-batch.json" ${BATCH_ARGS:-}
    done
    ;;
  qmm)
    prepare
    for dtype in ${DTYPES:-bf16}; do
      for bits in ${BITS:-4 8}; do
        "$base/qmm_rows" --dtype "$dtype" --bits "$bits" --reps "${REPS:-30}" ${ROWS:+--rows "$ROWS"} \
          --json "$out/qmm-$dtype-$bits.json" | tee "$out/qmm-$dtype-$bits.txt"
      done
    done
    ;;
  machine)
    prepare
    python3 "$here/bandwidth.py" | tee "$out/bandwidth.txt"
    # Which CPUs share a core (for PIN_WORKER).
    lscpu --extended=CPU,CORE,SOCKET,NODE | tee "$out/cpus.txt"
    "$base/transport" --quick --json "$out/transport.json" | tee "$out/transport.txt"
    ;;
  *) echo "usage: device.sh install|env|check|bench|suite|profile|coldstart|batch|qmm|machine PRESET..." >&2; exit 2 ;;
esac
