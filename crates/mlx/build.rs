//! Builds the C++ shim against the headers of MLX's binary distribution and
//! links it to that distribution's libmlx.
//!
//! MLX is found at `MLX_DIR` (the wheel's `mlx` package folder, holding
//! `include/` and `lib/`), else in the workspace's `.venv`, where
//! `scripts/setup.sh` installs the pinned wheel for this platform.

use std::path::{Path, PathBuf};

include!("rpath.rs");

fn venv_mlx_dir(workspace: &Path) -> Option<PathBuf> {
    let lib = workspace.join(".venv").join("lib");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python3"))
        })
        .map(|p| p.join("site-packages").join("mlx"))
        .filter(|p| p.join("include").join("mlx").join("mlx.h").exists())
        .collect();
    candidates.sort();
    candidates.pop()
}

fn main() {
    println!("cargo:rerun-if-env-changed=MLX_DIR");
    println!("cargo:rerun-if-changed=shim/shim.cpp");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-changed=shim/qmv.cpp");
    println!("cargo:rerun-if-changed=shim/qmv.h");
    println!("cargo:rerun-if-changed=shim/cuda_jit.cpp");
    println!("cargo:rerun-if-changed=shim/cuda_jit.h");
    println!("cargo:rerun-if-changed=shim/attention.cpp");
    println!("cargo:rerun-if-changed=shim/attention.h");
    println!("cargo:rerun-if-changed=shim/distributed.cpp");
    println!("cargo:rerun-if-changed=shim/runtime.cpp");
    println!("cargo:rerun-if-changed=shim/io.cpp");
    println!("cargo:rerun-if-changed=shim/gather.cpp");
    println!("cargo:rerun-if-changed=shim/distributed.h");
    println!("cargo:rerun-if-changed=shim/handle.h");
    println!("cargo:rerun-if-changed=rpath.rs");

    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest
        .parent()
        .and_then(Path::parent)
        .expect("the crate lives in <workspace>/crates/mlx")
        .to_path_buf();
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join(".venv").display()
    );

    let mlx_dir = match std::env::var_os("MLX_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => venv_mlx_dir(&workspace).unwrap_or_else(|| {
            panic!(
                "MLX not found: run scripts/setup.sh (installs the pinned MLX wheel into \
                 {}/.venv) or set MLX_DIR to a folder holding include/mlx and lib/libmlx",
                workspace.display()
            )
        }),
    };
    let include = mlx_dir.join("include");
    let lib = mlx_dir.join("lib");
    assert!(
        include.join("mlx").join("mlx.h").exists(),
        "{} has no include/mlx/mlx.h",
        mlx_dir.display()
    );

    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .file("shim/shim.cpp")
        .file("shim/qmv.cpp")
        .file("shim/cuda_jit.cpp")
        .file("shim/attention.cpp")
        .file("shim/distributed.cpp")
        .file("shim/runtime.cpp")
        .file("shim/io.cpp")
        .file("shim/gather.cpp")
        .include(&include)
        .include("shim")
        .warnings(false)
        .opt_level(2)
        .compile("mlxshim");

    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=mlx");
    println!("cargo:lib_dir={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());

    // The CUDA build of libmlx needs CUDA libraries that exist only on the GPU
    // machine; they resolve there at run time.
    let site = mlx_dir.parent().unwrap_or(&mlx_dir);
    let is_cuda = std::fs::read_dir(site)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("mlx_cuda"))
        })
        .unwrap_or(false);
    // The target's system, not the one the build script runs on (they
    // differ when cross-checking for macOS: scripts/macos-check.sh).
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if is_cuda && linux {
        println!("cargo:allow_shlib_undefined=1");
        println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
    }
    println!("cargo::rustc-check-cfg=cfg(mlx_openblas)");
    if !is_cuda && linux {
        link_openblas();
    }
}

/// The Linux CPU wheel of MLX does its dense matrix products through the
/// reference (Netlib) BLAS it ships, which runs a `[16, 576] x [576, 1536]`
/// product no faster per row than sixteen vector products. When OpenBLAS
/// is installed, the binary links it as a direct dependency: the dynamic
/// linker then resolves libmlx's `cblas_*` calls to OpenBLAS (a direct
/// dependency is searched before libmlx's own), and the `mlx_openblas` cfg
/// tells the engine that batched products are fast on this build.
fn link_openblas() {
    println!("cargo:rerun-if-env-changed=OPENBLAS_DIR");
    let dirs: Vec<PathBuf> = match std::env::var_os("OPENBLAS_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => [
            "/usr/lib/x86_64-linux-gnu/openblas-pthread",
            "/usr/lib/aarch64-linux-gnu/openblas-pthread",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
        ]
        .iter()
        .map(PathBuf::from)
        .collect(),
    };
    let Some(dir) = dirs
        .into_iter()
        .find(|d| d.join("libopenblas.so.0").exists())
    else {
        println!(
            "cargo:warning=OpenBLAS not found (scripts/setup.sh installs it): batched CPU \
             products use MLX's reference BLAS"
        );
        return;
    };
    let lib = dir.join("libopenblas.so.0");
    println!("cargo:rerun-if-changed={}", lib.display());
    println!("cargo:openblas={}", lib.display());
    println!(
        "cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,{},--pop-state",
        lib.display()
    );
    println!("cargo:rustc-cfg=mlx_openblas");
}
