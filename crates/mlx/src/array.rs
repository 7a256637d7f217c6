//! `Array`: an owned handle to one MLX array (a node of MLX's lazy graph).
//!
//! Cloning is cheap (MLX reference-counts the node); dropping releases the
//! handle. Reading values evaluates the graph that produces them.

use std::fmt;
use std::ptr::NonNull;

use crate::error::{MlxError, Result, check};
use crate::{Dtype, Element, ffi};

/// An MLX array.
pub struct Array {
    raw: NonNull<ffi::mlxs_array>,
}

// SAFETY: the handle is a heap-allocated `mlx::core::array`, whose node is
// shared through an atomically reference-counted pointer, so it may be moved
// to and dropped on another thread. It is not `Sync`: MLX does not allow two
// threads to build or evaluate graphs over the same arrays at once.
unsafe impl Send for Array {}

/// Calls a shim function that writes one new array handle into its last
/// argument and wraps the result.
macro_rules! call_array {
    ($f:ident($($arg:expr),* $(,)?)) => {{
        let mut out: *mut $crate::ffi::mlxs_array = ::std::ptr::null_mut();
        // SAFETY: shim entry points take handles borrowed from live `Array`s
        // (or null where optional) and pointers to live buffers of the lengths
        // passed with them; on success they write one new, owned handle to
        // `out`. They never unwind: exceptions are caught in the shim.
        let rc = unsafe { $crate::ffi::$f($($arg,)* &mut out) };
        $crate::array::Array::from_call(rc, out)
    }};
}
pub(crate) use call_array;

impl Array {
    /// Wraps the result of a shim call that produced one handle.
    pub(crate) fn from_call(rc: std::ffi::c_int, out: *mut ffi::mlxs_array) -> Result<Array> {
        check(rc)?;
        Array::from_owned(out)
    }

    /// Takes ownership of a handle the shim allocated.
    pub(crate) fn from_owned(raw: *mut ffi::mlxs_array) -> Result<Array> {
        NonNull::new(raw)
            .map(|raw| Array { raw })
            .ok_or_else(|| MlxError::Mlx("the shim returned no array".into()))
    }

    pub(crate) fn as_ptr(&self) -> ffi::Handle {
        self.raw.as_ptr()
    }

    /// An array of `shape` holding a copy of `data` (row-major).
    pub fn from_slice<T: Element>(data: &[T], shape: &[i32]) -> Result<Array> {
        let count = element_count(shape)?;
        if count != data.len() {
            return Err(MlxError::InvalidArgument(format!(
                "{} values do not fill shape {shape:?}",
                data.len()
            )));
        }
        call_array!(mlxs_array_from_data(
            data.as_ptr().cast::<u8>(),
            shape.as_ptr(),
            shape.len(),
            T::DTYPE as i32,
        ))
    }

    /// An array of `shape` and `dtype` holding a copy of raw little-endian
    /// element bytes.
    pub fn from_bytes(bytes: &[u8], shape: &[i32], dtype: Dtype) -> Result<Array> {
        let count = element_count(shape)?;
        if count * dtype.size() != bytes.len() {
            return Err(MlxError::InvalidArgument(format!(
                "{} bytes do not fill shape {shape:?} of {dtype:?}",
                bytes.len()
            )));
        }
        call_array!(mlxs_array_from_data(
            bytes.as_ptr(),
            shape.as_ptr(),
            shape.len(),
            dtype as i32,
        ))
    }

    /// A 0-dimensional array holding `value`.
    pub fn scalar<T: Element>(value: T) -> Result<Array> {
        Array::from_slice(&[value], &[])
    }

    /// A 0-dimensional array of `value` converted to this array's dtype, for
    /// arithmetic that must not promote the dtype (MLX promotes a bf16 array
    /// times an f32 scalar to f32).
    pub fn scalar_like(&self, value: f32) -> Result<Array> {
        Array::scalar(value)?.astype(self.dtype())
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        // SAFETY: `self.raw` is a live handle.
        unsafe { ffi::mlxs_array_ndim(self.as_ptr()) }
    }

    /// The dimensions.
    pub fn shape(&self) -> Vec<i32> {
        let mut shape = vec![0i32; self.ndim()];
        // SAFETY: `shape` has room for exactly `ndim` dimensions.
        unsafe { ffi::mlxs_array_shape(self.as_ptr(), shape.as_mut_ptr()) };
        shape
    }

    /// The size of dimension `axis` (negative counts from the end).
    pub fn dim(&self, axis: i32) -> Result<i32> {
        let shape = self.shape();
        let ndim = shape.len() as i32;
        let idx = if axis < 0 { axis + ndim } else { axis };
        if !(0..ndim).contains(&idx) {
            return Err(MlxError::InvalidArgument(format!(
                "axis {axis} out of range for shape {shape:?}"
            )));
        }
        Ok(shape[idx as usize])
    }

    /// Number of elements.
    pub fn size(&self) -> usize {
        // SAFETY: `self.raw` is a live handle.
        unsafe { ffi::mlxs_array_size(self.as_ptr()) }
    }

    /// Element type.
    pub fn dtype(&self) -> Dtype {
        // SAFETY: `self.raw` is a live handle.
        let code = unsafe { ffi::mlxs_array_dtype(self.as_ptr()) };
        Dtype::from_code(code).expect("the shim maps every MLX dtype to a known code")
    }

    /// Bytes the elements take.
    pub fn nbytes(&self) -> usize {
        self.size() * self.dtype().size()
    }

    /// Evaluates the array (and the graph it depends on).
    pub fn eval(&self) -> Result<()> {
        crate::eval(&[self])
    }

    /// Evaluates the array and copies its elements out, row-major.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        let actual = self.dtype();
        if actual != T::DTYPE {
            return Err(MlxError::DtypeMismatch {
                expected: T::DTYPE,
                actual,
            });
        }
        let mut out = vec![T::default(); self.size()];
        // SAFETY: `out` holds `size` elements of `T`, whose width equals the
        // array's element width (checked above), so the shim writes exactly
        // `nbytes` bytes into it, all valid values of `T` (`Element`'s contract).
        check(unsafe {
            ffi::mlxs_array_read(
                self.as_ptr(),
                out.as_mut_ptr().cast::<u8>(),
                out.len() * std::mem::size_of::<T>(),
            )
        })?;
        Ok(out)
    }

    /// Copies the elements out as raw bytes (row-major, little-endian, any
    /// dtype): what a file holding the array stores, read back by
    /// [`Array::from_bytes`]. An array already scheduled (`async_eval`) and
    /// row-contiguous is waited for and copied as it is, so that reading it
    /// never waits for work queued after it (a decode step in flight); any
    /// other is evaluated as by [`Array::to_vec`].
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.nbytes()];
        // SAFETY: `out` holds `nbytes` bytes, exactly what the shim writes
        // (it checks the length against the array's).
        check(unsafe {
            ffi::mlxs_array_read_scheduled(self.as_ptr(), out.as_mut_ptr(), out.len())
        })?;
        Ok(out)
    }

    /// The single element of a one-element array.
    pub fn item<T: Element>(&self) -> Result<T> {
        if self.size() != 1 {
            return Err(MlxError::InvalidArgument(format!(
                "item() on an array of shape {:?}",
                self.shape()
            )));
        }
        Ok(self.to_vec::<T>()?[0])
    }
}

fn element_count(shape: &[i32]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d)
            .ok()
            .and_then(|d| acc.checked_mul(d))
            .ok_or_else(|| MlxError::InvalidArgument(format!("invalid shape {shape:?}")))
    })
}

impl Clone for Array {
    fn clone(&self) -> Array {
        // SAFETY: `self.raw` is a live handle; the clone is a new owned handle.
        let raw = unsafe { ffi::mlxs_array_clone(self.as_ptr()) };
        Array {
            raw: NonNull::new(raw).expect("operator new does not return null"),
        }
    }
}

impl Drop for Array {
    fn drop(&mut self) {
        // SAFETY: `self.raw` was allocated by the shim and is released once.
        unsafe { ffi::mlxs_array_free(self.raw.as_ptr()) }
    }
}

impl fmt::Debug for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("shape", &self.shape())
            .field("dtype", &self.dtype())
            .finish()
    }
}

/// Evaluates the arrays together.
pub fn eval(arrays: &[&Array]) -> Result<()> {
    let handles: Vec<ffi::Handle> = arrays.iter().map(|a| a.as_ptr()).collect();
    // SAFETY: `handles` holds live handles borrowed for the call.
    check(unsafe { ffi::mlxs_eval(handles.as_ptr(), handles.len()) })
}

/// The primitives an evaluation of `arrays` would run (those not computed
/// yet), counted by name, most frequent first: what one step of a model
/// costs in operations, each a kernel launch or more on a GPU.
pub fn graph_census(arrays: &[&Array]) -> Result<Vec<(String, usize)>> {
    let handles: Vec<ffi::Handle> = arrays.iter().map(|a| a.as_ptr()).collect();
    let mut buf = vec![0u8; 4096];
    loop {
        let mut len = 0usize;
        // SAFETY: `handles` holds live handles borrowed for the call; the
        // shim writes at most `buf.len()` bytes into `buf` and the full
        // length into `len`.
        check(unsafe {
            ffi::mlxs_graph_census(
                handles.as_ptr(),
                handles.len(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut len,
            )
        })?;
        if len > buf.len() {
            buf.resize(len, 0);
            continue;
        }
        let text = String::from_utf8_lossy(&buf[..len]);
        let mut counts: Vec<(String, usize)> = text
            .lines()
            .filter_map(|line| {
                let (name, count) = line.split_once('\t')?;
                Some((name.to_string(), count.parse().ok()?))
            })
            .collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        return Ok(counts);
    }
}

/// Schedules the arrays' evaluation and returns at once; reading them later
/// waits for it. This overlaps building the next step's graph with the
/// device computing this one.
pub fn async_eval(arrays: &[&Array]) -> Result<()> {
    let handles: Vec<ffi::Handle> = arrays.iter().map(|a| a.as_ptr()).collect();
    // SAFETY: `handles` holds live handles borrowed for the call.
    check(unsafe { ffi::mlxs_async_eval(handles.as_ptr(), handles.len()) })
}
