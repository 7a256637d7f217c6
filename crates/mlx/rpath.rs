// Shared by the build scripts of crates that link libmlx (`include!`d):
// libmlx lives in the MLX wheel's folder, so every binary and test that links
// it gets an rpath to that folder and runs without LD_LIBRARY_PATH. The `mlx`
// crate's build script exports the folder as `DEP_MLX_LIB_DIR` to its direct
// dependents, and OpenBLAS (when the build links it, see `link_openblas`
// in the `mlx` build script) as `DEP_MLX_OPENBLAS`.

/// Emits the link arguments that let this package's binaries and tests find libmlx.
#[allow(dead_code)]
fn emit_mlx_rpath() {
    println!("cargo:rerun-if-env-changed=DEP_MLX_LIB_DIR");
    if let Ok(dir) = std::env::var("DEP_MLX_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    if std::env::var("DEP_MLX_ALLOW_SHLIB_UNDEFINED").is_ok() {
        println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
    }
    // Nothing in the binary calls OpenBLAS itself (libmlx does), so it is
    // kept as a dependency explicitly.
    println!("cargo:rerun-if-env-changed=DEP_MLX_OPENBLAS");
    if let Ok(lib) = std::env::var("DEP_MLX_OPENBLAS") {
        println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,{lib},--pop-state");
    }
}
