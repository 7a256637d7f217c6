//! The mlxd front-end: the worker supervisor (and, on top of it, the HTTP
//! API). Nothing in this crate calls MLX: models run in worker processes.

pub mod http;
pub mod supervisor;
