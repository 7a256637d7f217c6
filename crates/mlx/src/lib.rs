//! A safe Rust binding to [MLX](https://github.com/ml-explore/mlx), Apple's
//! array framework, through a small C++ shim of the project's own
//! (`shim/shim.cpp`) compiled against the headers of MLX's official binary
//! wheel and linked to its `libmlx`.
//!
//! # Why not `mlx-rs`
//! The crates.io binding links Apple frameworks unconditionally in its build
//! script and builds mlx-c by downloading MLX's sources from GitHub, so it
//! cannot build on Linux, nor anywhere without network access. The same
//! pinned MLX release (0.32.4) ships as a wheel for every platform the daemon
//! runs on — `mlx` (Metal) on macOS, `mlx-cuda-13` on Linux with NVIDIA GPUs
//! and `mlx-cpu` elsewhere — and this crate builds against whichever one
//! `scripts/setup.sh` installed.
//!
//! # Errors
//! Every C++ exception MLX throws is caught in the shim and returned as
//! [`MlxError::Mlx`] with its message; nothing unwinds across the FFI.
//!
//! # Threading
//! An [`Array`] is `Send` (its graph node is reference-counted atomically)
//! but not `Sync`. MLX keeps the default stream per thread and ties streams
//! to the thread that made them, and its graph building is not safe to run
//! from two threads over the same arrays: build and evaluate each graph on
//! one thread. Moving evaluated arrays (such as loaded weights) to another
//! thread is fine. The daemon runs all MLX work of a model on its worker's
//! single engine thread.
//!
//! # Laziness
//! Operations only record graph nodes; work happens on [`eval`],
//! [`async_eval`] or when values are read ([`Array::to_vec`],
//! [`Array::item`]).

mod array;
mod dtype;
mod error;
mod ffi;

pub mod device;
pub mod distributed;
pub mod fast;
pub mod io;
pub mod memory;
pub mod ops;
pub mod quantized;
pub mod random;

pub use array::{Array, async_eval, eval, graph_census};
pub use device::{Backend, Device, DeviceKind, Stream, backend, fast_cpu_gemm, version};
pub use dtype::{Dtype, Element};
pub use error::{MlxError, Result};
pub use half::{bf16, f16};
pub use ops::{Gather, arange, concatenate, full, gather_mm, ones, stack, where_, zeros};
pub use quantized::{
    Epilogue, QuantMode, QuantizedWeight, custom_qmv_available, quantize, quantize_mode,
    set_custom_qmv, set_custom_qmv_max_rows,
};
