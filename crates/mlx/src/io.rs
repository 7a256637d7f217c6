//! Loading and saving arrays: safetensors (with string metadata) and GGUF
//! (arrays plus typed metadata), through MLX's own readers and writer.
//!
//! MLX's GGUF reader turns Q4_0, Q4_1 and Q8_0 tensors into MLX affine
//! quantization (group size 32): a quantized `name` comes back as
//! `name` (packed), `name.scales` and `name.biases` — see its loader for the
//! exact naming; F16/F32 tensors come back as they are.

use std::collections::HashMap;
use std::ffi::CString;
use std::path::Path;

use crate::error::{MlxError, Result, check};
use crate::{Array, ffi};

/// The contents of a safetensors file.
#[derive(Debug, Default)]
pub struct Safetensors {
    pub arrays: HashMap<String, Array>,
    pub metadata: HashMap<String, String>,
}

/// A GGUF metadata value as MLX reads it: numbers and numeric lists are
/// arrays, strings and string lists are strings.
#[derive(Debug, Clone)]
pub enum GgufValue {
    Array(Array),
    String(String),
    Strings(Vec<String>),
    /// A value type MLX does not convert (e.g. nested lists).
    Unsupported,
}

/// The contents of a GGUF file.
#[derive(Debug, Default)]
pub struct Gguf {
    pub arrays: HashMap<String, Array>,
    pub metadata: HashMap<String, GgufValue>,
}

/// Owns a map returned by the shim.
struct Map(*mut ffi::mlxs_map);

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: the map was allocated by the shim and is freed once.
        unsafe { ffi::mlxs_map_free(self.0) }
    }
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| MlxError::InvalidArgument(format!("path {} contains NUL", path.display())))
}

fn utf8(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| MlxError::Format(format!("{what} is not valid UTF-8")))
}

/// Copies `len` bytes at `ptr` (which the shim keeps alive with its map).
fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: the shim returned a pointer to `len` bytes of a string owned by
    // a live map; the slice is copied before the map is dropped.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

impl Map {
    fn load(
        path: &Path,
        f: unsafe extern "C" fn(
            *const std::ffi::c_char,
            *mut *mut ffi::mlxs_map,
        ) -> std::ffi::c_int,
    ) -> Result<Map> {
        let cpath = c_path(path)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `cpath` is a NUL-terminated path live for the call; on
        // success the shim writes a new, owned map to `raw`.
        check(unsafe { f(cpath.as_ptr(), &mut raw) })
            .map_err(|e| MlxError::Format(format!("{}: {e}", path.display())))?;
        if raw.is_null() {
            return Err(MlxError::Mlx("the shim returned no map".into()));
        }
        Ok(Map(raw))
    }

    fn arrays(&self) -> Result<HashMap<String, Array>> {
        // SAFETY (all calls below): `self.0` is a live map and every index is
        // below the length the map reports.
        let n = unsafe { ffi::mlxs_map_len(self.0) };
        let mut out = HashMap::with_capacity(n);
        for i in 0..n {
            let mut len = 0;
            let name = bytes(unsafe { ffi::mlxs_map_name(self.0, i, &mut len) }, len);
            let name = utf8(name, "a tensor name")?;
            let array = Array::from_owned(unsafe { ffi::mlxs_map_array(self.0, i) })?;
            out.insert(name, array);
        }
        Ok(out)
    }

    fn meta_len(&self) -> usize {
        // SAFETY: `self.0` is a live map.
        unsafe { ffi::mlxs_map_meta_len(self.0) }
    }

    fn meta_key(&self, i: usize) -> Result<String> {
        let mut len = 0;
        // SAFETY: `self.0` is a live map and `i < meta_len()`.
        let key = bytes(unsafe { ffi::mlxs_map_meta_key(self.0, i, &mut len) }, len);
        utf8(key, "a metadata key")
    }

    fn meta_str(&self, i: usize, j: usize) -> Result<String> {
        let mut len = 0;
        // SAFETY: `self.0` is a live map and `i < meta_len()`; an index `j`
        // past the end yields null, which `bytes` maps to "".
        let s = bytes(
            unsafe { ffi::mlxs_map_meta_str(self.0, i, j, &mut len) },
            len,
        );
        utf8(s, "a metadata string")
    }

    fn meta_value(&self, i: usize) -> Result<GgufValue> {
        // SAFETY: `self.0` is a live map and `i < meta_len()`.
        let kind = unsafe { ffi::mlxs_map_meta_kind(self.0, i) };
        Ok(match kind {
            // SAFETY: as above; kind 1 holds an array.
            1 => GgufValue::Array(Array::from_owned(unsafe {
                ffi::mlxs_map_meta_array(self.0, i)
            })?),
            2 => GgufValue::String(self.meta_str(i, 0)?),
            3 => {
                // SAFETY: as above.
                let n = unsafe { ffi::mlxs_map_meta_str_len(self.0, i) };
                GgufValue::Strings((0..n).map(|j| self.meta_str(i, j)).collect::<Result<_>>()?)
            }
            _ => GgufValue::Unsupported,
        })
    }
}

/// Loads every tensor and the metadata of a safetensors file.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<Safetensors> {
    let map = Map::load(path.as_ref(), ffi::mlxs_load_safetensors)?;
    let mut metadata = HashMap::new();
    for i in 0..map.meta_len() {
        metadata.insert(map.meta_key(i)?, map.meta_str(i, 0)?);
    }
    Ok(Safetensors {
        arrays: map.arrays()?,
        metadata,
    })
}

/// Loads every tensor and the metadata of a GGUF file.
pub fn load_gguf(path: impl AsRef<Path>) -> Result<Gguf> {
    let map = Map::load(path.as_ref(), ffi::mlxs_load_gguf)?;
    let mut metadata = HashMap::new();
    for i in 0..map.meta_len() {
        metadata.insert(map.meta_key(i)?, map.meta_value(i)?);
    }
    Ok(Gguf {
        arrays: map.arrays()?,
        metadata,
    })
}

/// Writes `arrays` (evaluating them) and string `metadata` to a safetensors
/// file.
pub fn save_safetensors<'a>(
    path: impl AsRef<Path>,
    arrays: impl IntoIterator<Item = (&'a str, &'a Array)>,
    metadata: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<()> {
    let cstr = |s: &str| {
        CString::new(s).map_err(|_| MlxError::InvalidArgument(format!("{s:?} contains NUL")))
    };
    let path = c_path(path.as_ref())?;
    let (mut names, mut handles) = (Vec::new(), Vec::new());
    for (name, array) in arrays {
        names.push(cstr(name)?);
        handles.push(array.as_ptr());
    }
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    for (k, v) in metadata {
        keys.push(cstr(k)?);
        values.push(cstr(v)?);
    }
    let name_ptrs: Vec<_> = names.iter().map(|s| s.as_ptr()).collect();
    let key_ptrs: Vec<_> = keys.iter().map(|s| s.as_ptr()).collect();
    let value_ptrs: Vec<_> = values.iter().map(|s| s.as_ptr()).collect();
    // SAFETY: every pointer array has the length passed with it and points to
    // NUL-terminated strings and live handles that outlive the call.
    check(unsafe {
        ffi::mlxs_save_safetensors(
            path.as_ptr(),
            name_ptrs.as_ptr(),
            handles.as_ptr(),
            handles.len(),
            key_ptrs.as_ptr(),
            value_ptrs.as_ptr(),
            key_ptrs.len(),
        )
    })
}
