#!/usr/bin/env bash
# Compiles mlxd for Apple Silicon without a Mac:
#   1. the C++ shim (crates/mlx/shim/*.cpp) for aarch64-macos 14 with zig's
#      clang, against the headers of the pinned macOS wheels (mlx and
#      mlx-metal 0.32.4; the headers are mlx-metal's), with the flags
#      crates/mlx/build.rs gives cc (C++20, -O2, no warnings flags);
#   2. `cargo check --target aarch64-apple-darwin` of every crate and its
#      tests, so that each `cfg(target_os = "macos")` branch type-checks,
#      with the same zig as the C and C++ compiler of the build scripts
#      (the shim again, and the dependencies that compile C).
# Downloads are pinned by hash (scripts/requirements/{macos-check,zig}.txt)
# and kept in .cache/macos-check (or $MACOS_CHECK_CACHE); a second run
# fetches nothing. Needs .venv (scripts/setup.sh), unzip, rustup.
#
#   scripts/macos-check.sh [shim|cargo]   one step only (default: both)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${MACOS_CHECK_CACHE:-$ROOT/.cache/macos-check}"
PY="$ROOT/.venv/bin/python"
TARGET_ZIG=aarch64-macos.14.0
TARGET_RUST=aarch64-apple-darwin
step="${1:-all}"
log() { printf 'macos-check: %s\n' "$*" >&2; }

# The wheels and zig, once per pin: the stamp names the requirement files'
# contents, so a changed pin fetches again.
fetch() {
  local stamp="$CACHE/stamp" want
  want="$(cat scripts/requirements/macos-check.txt scripts/requirements/zig.txt | sha256sum | cut -c1-64)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  log "fetching the pinned macOS wheels and zig into $CACHE"
  rm -rf "$CACHE" && mkdir -p "$CACHE/wheels"
  "$PY" -m pip download --quiet --no-deps --require-hashes --only-binary :all: \
    --platform macosx_14_0_arm64 --python-version 3.12 \
    -r scripts/requirements/macos-check.txt -d "$CACHE/wheels"
  "$PY" -m pip download --quiet --no-deps --require-hashes --only-binary :all: \
    -r scripts/requirements/zig.txt -d "$CACHE/wheels"
  unzip -q -o "$CACHE"/wheels/mlx_metal-*.whl 'mlx/include/*' -d "$CACHE"
  unzip -q -o "$CACHE"/wheels/ziglang-*.whl 'ziglang/*' -d "$CACHE/zig"
  echo "$want" >"$stamp"
}

# zig as the C and C++ compiler and archiver for the target (written on
# every run: they name this checkout's paths).
wrappers() {
  mkdir -p "$CACHE/bin"
  # cc-rs adds Apple's own spelling of the target; zig takes its own.
  for tool in cc c++; do
    cat >"$CACHE/bin/zig-$tool" <<WRAP
#!/usr/bin/env bash
args=()
skip=0
for a in "\$@"; do
  if ((skip)); then skip=0; continue; fi
  case "\$a" in
    -arch) skip=1 ;;
    # zig writes an empty a.o where it is asked its version (cc-rs asks).
    --version) cd "$CACHE" && args+=("\$a") ;;
    --target=*|-mmacosx-version-min=*|-mmacos-version-min=*) ;;
    *) args+=("\$a") ;;
  esac
done
PYTHONPATH="$CACHE/zig" exec "$PY" -m ziglang $tool -target $TARGET_ZIG "\${args[@]}"
WRAP
  done
  cat >"$CACHE/bin/zig-ar" <<WRAP
#!/usr/bin/env bash
PYTHONPATH="$CACHE/zig" exec "$PY" -m ziglang ar "\$@"
WRAP
  chmod +x "$CACHE"/bin/zig-*
}

shim() {
  local out="$CACHE/shim-objects"
  mkdir -p "$out"
  for src in crates/mlx/shim/*.cpp; do
    log "compiling $src for $TARGET_ZIG"
    "$CACHE/bin/zig-c++" -std=c++20 -O2 -fPIC -I "$CACHE/mlx/include" -I crates/mlx/shim \
      -c "$src" -o "$out/$(basename "$src" .cpp).o"
  done
}

cargo_check() {
  # The target's standard library comes from rustup's server, which not
  # every machine reaches (it is no package registry); without it the
  # shim's compile above and the test inventory of the macOS branches
  # (crates/mlxd/tests/macos_paths.rs) still stand.
  if ! rustup target list --installed | grep -qx "$TARGET_RUST" &&
    ! rustup target add "$TARGET_RUST"; then
    log "the $TARGET_RUST standard library cannot be installed here: cargo check skipped"
    return 0
  fi
  local t="${TARGET_RUST//-/_}"
  log "cargo check --target $TARGET_RUST"
  # Warnings are errors, as clippy makes them on Linux (the target's
  # flags only: build scripts and the host's crates are left as they are).
  env "CC_$t=$CACHE/bin/zig-cc" "CXX_$t=$CACHE/bin/zig-c++" "AR_$t=$CACHE/bin/zig-ar" \
    "CARGO_TARGET_${t^^}_RUSTFLAGS=-D warnings" MLX_DIR="$CACHE/mlx" \
    cargo check --workspace --all-targets --locked --target "$TARGET_RUST"
}

fetch
wrappers
case "$step" in
  shim) shim ;;
  cargo) cargo_check ;;
  all) shim; cargo_check ;;
  *) echo "usage: scripts/macos-check.sh [shim|cargo]" >&2; exit 2 ;;
esac
log "ok"
