//! Devices, streams and the backend this libmlx was built for.
//!
//! MLX 0.32 keeps the default stream per thread and binds streams made with
//! `new_stream` to the thread that made them: build and evaluate a graph on
//! one thread.

use std::ffi::CStr;

use crate::error::{Result, check};
use crate::ffi;

/// A kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    Cpu,
    Gpu,
}

impl DeviceKind {
    fn code(self) -> i32 {
        match self {
            DeviceKind::Cpu => 0,
            DeviceKind::Gpu => 1,
        }
    }
}

/// One device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Device {
    pub kind: DeviceKind,
    pub index: i32,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
        };
        write!(f, "{kind}:{}", self.index)
    }
}

impl Device {
    /// The CPU.
    pub const CPU: Device = Device {
        kind: DeviceKind::Cpu,
        index: 0,
    };
    /// The first GPU.
    pub const GPU: Device = Device {
        kind: DeviceKind::Gpu,
        index: 0,
    };

    /// A numeric entry of the device's info (`"total_memory"`,
    /// `"max_recommended_working_set_size"` on Metal, ...), if the backend
    /// reports it.
    pub fn info_size(self, key: &str) -> Result<Option<usize>> {
        let key = std::ffi::CString::new(key)
            .map_err(|_| crate::MlxError::InvalidArgument("key contains NUL".into()))?;
        let (mut value, mut found) = (0usize, false);
        // SAFETY: `key` is NUL-terminated and both out-pointers are live locals.
        check(unsafe {
            ffi::mlxs_device_info_size(
                self.kind.code(),
                self.index,
                key.as_ptr(),
                &mut value,
                &mut found,
            )
        })?;
        Ok(found.then_some(value))
    }

    /// The device name MLX reports (e.g. "NVIDIA H100 80GB HBM3", "Apple M4 Max").
    pub fn name(self) -> Result<String> {
        let mut buf = [0 as std::ffi::c_char; 256];
        // SAFETY: `buf` has room for `buf.len()` bytes; the shim writes a
        // NUL-terminated string truncated to fit.
        check(unsafe {
            ffi::mlxs_device_name(self.kind.code(), self.index, buf.as_mut_ptr(), buf.len())
        })?;
        // SAFETY: the shim NUL-terminated `buf`.
        let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
        Ok(name.to_string_lossy().into_owned())
    }
}

/// The device new arrays are computed on by default.
pub fn default_device() -> Result<Device> {
    let (mut kind, mut index) = (0, 0);
    // SAFETY: both out-pointers are live locals.
    check(unsafe { ffi::mlxs_default_device(&mut kind, &mut index) })?;
    Ok(Device {
        kind: if kind == 0 {
            DeviceKind::Cpu
        } else {
            DeviceKind::Gpu
        },
        index,
    })
}

/// Makes `device` the default.
pub fn set_default_device(device: Device) -> Result<()> {
    // SAFETY: plain values.
    check(unsafe { ffi::mlxs_set_default_device(device.kind.code(), device.index) })
}

/// Whether this libmlx can compute on a device of `kind`.
pub fn is_available(kind: DeviceKind) -> bool {
    let mut available = false;
    // SAFETY: the out-pointer is a live local.
    let rc = unsafe { ffi::mlxs_device_available(kind.code(), &mut available) };
    rc == 0 && available
}

/// The accelerator backend of this libmlx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Metal,
    Cuda,
    Cpu,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Metal => "Metal",
            Backend::Cuda => "CUDA",
            Backend::Cpu => "CPU",
        })
    }
}

/// Whether dense matrix products with many rows are fast on the CPU: true
/// when this build links OpenBLAS ahead of the reference BLAS of MLX's
/// Linux CPU wheel (see the crate's build script), and on macOS
/// (Accelerate).
pub fn fast_cpu_gemm() -> bool {
    cfg!(any(mlx_openblas, target_os = "macos"))
}

/// The backend that computes on the default GPU, or `Cpu` when there is none.
pub fn backend() -> Backend {
    if !is_available(DeviceKind::Gpu) {
        Backend::Cpu
    } else if cfg!(target_os = "macos") {
        Backend::Metal
    } else {
        Backend::Cuda
    }
}

/// The MLX version of the loaded libmlx, e.g. "0.32.4".
pub fn version() -> String {
    // SAFETY: MLX returns a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(ffi::mlxs_version()) };
    v.to_string_lossy().into_owned()
}

/// A queue of work on one device, owned by the thread that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    pub index: i32,
    pub kind: DeviceKind,
}

impl Stream {
    /// This thread's default stream on a device of `kind`.
    pub fn default_for(kind: DeviceKind) -> Result<Stream> {
        let mut index = 0;
        // SAFETY: the out-pointer is a live local.
        check(unsafe { ffi::mlxs_default_stream(kind.code(), &mut index) })?;
        Ok(Stream { index, kind })
    }

    /// A new stream on a device of `kind`.
    pub fn new(kind: DeviceKind) -> Result<Stream> {
        let mut index = 0;
        // SAFETY: the out-pointer is a live local.
        check(unsafe { ffi::mlxs_new_stream(kind.code(), &mut index) })?;
        Ok(Stream { index, kind })
    }

    /// Makes this the current thread's default stream for its device.
    pub fn set_default(self) -> Result<()> {
        // SAFETY: plain values.
        check(unsafe { ffi::mlxs_set_default_stream(self.index, self.kind.code()) })
    }

    /// Waits until every operation queued on this stream has finished.
    pub fn synchronize(self) -> Result<()> {
        // SAFETY: plain values.
        check(unsafe { ffi::mlxs_synchronize(self.index, self.kind.code()) })
    }
}
