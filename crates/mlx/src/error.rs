//! The binding's one error type: what MLX threw, or what the Rust side
//! refused before calling it.

use std::ffi::CStr;

/// An error from MLX or from the binding's own argument checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MlxError {
    /// MLX threw a C++ exception; the shim caught it and kept its message.
    #[error("MLX: {0}")]
    Mlx(String),
    /// The data handed in or asked for does not fit the array.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The array's element type is not the one asked for.
    #[error("dtype mismatch: the array holds {actual:?}, {expected:?} was asked for")]
    DtypeMismatch {
        expected: crate::Dtype,
        actual: crate::Dtype,
    },
    /// A file's contents are not what the loader expects.
    #[error("{0}")]
    Format(String),
}

/// The binding's result type.
pub type Result<T> = std::result::Result<T, MlxError>;

/// Turns a shim return code into a `Result`, taking the thread's last error.
pub(crate) fn check(rc: std::ffi::c_int) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a pointer to its thread-local, NUL-terminated
    // message, valid until the next failing call on this thread; it is copied
    // at once.
    let msg = unsafe { CStr::from_ptr(crate::ffi::mlxs_last_error()) };
    Err(MlxError::Mlx(msg.to_string_lossy().into_owned()))
}
