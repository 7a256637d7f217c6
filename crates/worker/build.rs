//! Gives the worker's tests an rpath to libmlx.

include!("../mlx/rpath.rs");

fn main() {
    emit_mlx_rpath();
}
