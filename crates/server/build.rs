//! Gives the server's tests an rpath to libmlx (linked through the engine's
//! tokenizer crate; the front-end never calls MLX).

include!("../mlx/rpath.rs");

fn main() {
    emit_mlx_rpath();
}
