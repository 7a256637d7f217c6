//! GGUF header, metadata and tensor-info reader, in pure Rust.
//!
//! Reads what precedes the tensor data of a GGUF file (versions 2 and 3,
//! little-endian): the metadata key/value pairs, with every value type
//! including nested arrays, and the tensor-info table. The layout follows
//! the GGUF specification in the ggml repository (`docs/gguf.md`) and
//! llama.cpp's `gguf.cpp`. Tensor data is not read.
//!
//! Corrupt or truncated input never panics and never makes the reader
//! allocate more than the file could hold: every length and count is checked
//! against the bytes left in the file before anything is reserved, and
//! metadata arrays are capped (4 Mi elements each, 8 Mi in all) so that a
//! corrupt length inside a multi-gigabyte model cannot cost gigabytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// The file magic, `GGUF` read as a little-endian `u32`.
const MAGIC: u32 = u32::from_le_bytes(*b"GGUF");
/// Alignment of the tensor data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Arrays nested deeper than this are rejected (the format allows nesting,
/// real files use at most one level).
const MAX_ARRAY_DEPTH: u32 = 8;
/// Longest metadata array accepted. Real files' longest arrays are the
/// vocabulary and merges (a few hundred thousand entries); the cap keeps a
/// corrupt length in a multi-gigabyte file from costing gigabytes of memory.
const MAX_ARRAY_LEN: u64 = 1 << 22;
/// Most array elements accepted over the whole metadata section.
const MAX_ARRAY_VALUES: u64 = 1 << 23;
/// ggml tensors have at most four dimensions; a little slack for new ones.
const MAX_TENSOR_DIMS: u32 = 8;

/// Errors from reading a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("i/o error reading GGUF: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a GGUF file (magic {0:#010x})")]
    BadMagic(u32),
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    #[error("truncated GGUF: {0}")]
    Truncated(String),
    #[error("corrupt GGUF: {0}")]
    Corrupt(String),
}

/// A metadata value. Arrays keep their declared element type, so an empty
/// array still says what it would hold.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array {
        elem_type: u32,
        values: Vec<GgufValue>,
    },
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// The value as an unsigned integer, for any integer type holding a
    /// non-negative value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(u64::from(v)),
            GgufValue::U16(v) => Some(u64::from(v)),
            GgufValue::U32(v) => Some(u64::from(v)),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a token id (`u32`), for any integer type in range.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_u64().and_then(|v| u32::try_from(v).ok())
    }

    /// The value as a float, for the float and integer types.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(f64::from(v)),
            GgufValue::F64(v) => Some(v),
            GgufValue::I8(v) => Some(f64::from(v)),
            GgufValue::I16(v) => Some(f64::from(v)),
            GgufValue::I32(v) => Some(f64::from(v)),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array { values, .. } => Some(values),
            _ => None,
        }
    }
}

/// One entry of the tensor-info table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as stored: innermost (contiguous) first, as ggml orders them.
    pub shape: Vec<u64>,
    /// The raw `ggml_type` number.
    pub ggml_type: u32,
    /// Offset of the tensor's data, relative to [`GgufFile::data_offset`].
    pub offset: u64,
}

impl TensorInfo {
    /// The name of the tensor's ggml type (`"Q4_1"`, `"F32"`, ...), or
    /// `None` for a type number this reader does not know.
    pub fn type_name(&self) -> Option<&'static str> {
        ggml_type_name(self.ggml_type)
    }
}

/// Name of a `ggml_type` number, as ggml spells it.
pub fn ggml_type_name(ty: u32) -> Option<&'static str> {
    const NAMES: [&str; 40] = [
        "F32", "F16", "Q4_0", "Q4_1", "", "", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K",
        "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
        "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16", "", "", "", "TQ1_0",
        "TQ2_0", "", "", "", "MXFP4",
    ];
    NAMES
        .get(usize::try_from(ty).ok()?)
        .copied()
        .filter(|n| !n.is_empty())
}

/// The parsed front matter of a GGUF file.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section (`general.alignment`, default 32).
    pub alignment: u64,
    /// Absolute file offset where tensor data starts.
    pub data_offset: u64,
}

impl GgufFile {
    /// Reads the header, metadata and tensor infos of the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let file = File::open(path.as_ref())?;
        let len = file.metadata()?.len();
        Self::read(BufReader::new(file), len)
    }

    /// Parses from `reader`, which holds `len` bytes in total (the bound that
    /// every count and length is checked against).
    pub fn read<R: Read>(reader: R, len: u64) -> Result<Self, GgufError> {
        let mut r = Reader {
            inner: reader,
            remaining: len,
            array_values_left: MAX_ARRAY_VALUES,
        };
        let magic = r.u32()?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;
        // Each key/value pair takes at least 8 (key length) + 4 (type) +
        // 1 (smallest value) bytes; each tensor info at least 8 + 4 + 4 + 8.
        let mut metadata = BTreeMap::new();
        for _ in 0..r.bounded_count(n_kv, 13, "metadata count")? {
            let key = r.string("metadata key")?;
            let ty = r.u32()?;
            let value = r.value(ty, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(GgufError::Corrupt(format!(
                    "duplicate metadata key {key:?}"
                )));
            }
        }
        let n_tensors = r.bounded_count(n_tensors, 24, "tensor count")?;
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            tensors.push(r.tensor_info()?);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v
                .as_u64()
                .filter(|a| *a > 0 && a.is_power_of_two())
                .ok_or_else(|| GgufError::Corrupt(format!("bad general.alignment {v:?}")))?,
        };
        let header_end = len - r.remaining;
        let data_offset = header_end
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| GgufError::Corrupt("data offset overflows".into()))?;
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(GgufValue::as_str)
    }

    pub fn get_u32(&self, key: &str) -> Option<u32> {
        self.get(key).and_then(GgufValue::as_u32)
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(GgufValue::as_bool)
    }

    pub fn get_array(&self, key: &str) -> Option<&[GgufValue]> {
        self.get(key).and_then(GgufValue::as_array)
    }

    /// `general.architecture`, e.g. `"llama"` or `"qwen2"`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }
}

/// A little-endian reader that knows how many bytes are left in the file.
struct Reader<R> {
    inner: R,
    remaining: u64,
    /// Array elements that may still be decoded (see [`MAX_ARRAY_VALUES`]).
    array_values_left: u64,
}

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let n = N as u64;
        if self.remaining < n {
            return Err(GgufError::Truncated(format!(
                "needed {n} more bytes, {} left",
                self.remaining
            )));
        }
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(truncated)?;
        self.remaining -= n;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// Checks that `count` items of at least `min_size` bytes each fit in
    /// what is left of the file, and returns the count as `usize`.
    fn bounded_count(&self, count: u64, min_size: u64, what: &str) -> Result<usize, GgufError> {
        let fits = count
            .checked_mul(min_size)
            .is_some_and(|need| need <= self.remaining);
        if !fits {
            return Err(GgufError::Truncated(format!(
                "{what} {count} cannot fit in the {} bytes left",
                self.remaining
            )));
        }
        usize::try_from(count).map_err(|_| GgufError::Corrupt(format!("{what} {count} too large")))
    }

    fn raw_string(&mut self, what: &str) -> Result<Vec<u8>, GgufError> {
        let len = self.u64()?;
        let len = self.bounded_count(len, 1, what)?;
        let mut buf = vec![0u8; len];
        self.inner.read_exact(&mut buf).map_err(truncated)?;
        self.remaining -= len as u64;
        Ok(buf)
    }

    /// A string that must be valid UTF-8 (keys, tensor names).
    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        String::from_utf8(self.raw_string(what)?)
            .map_err(|_| GgufError::Corrupt(format!("{what} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<GgufValue, GgufError> {
        Ok(match ty {
            0 => GgufValue::U8(u8::from_le_bytes(self.bytes()?)),
            1 => GgufValue::I8(i8::from_le_bytes(self.bytes()?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.bytes()?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.bytes()?)),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(i32::from_le_bytes(self.bytes()?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.bytes()?)),
            7 => match u8::from_le_bytes(self.bytes()?) {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(GgufError::Corrupt(format!("bool value {b}"))),
            },
            // Values (token texts, templates) are kept even when a byte
            // sequence is not UTF-8: invalid bytes become U+FFFD.
            8 => GgufValue::String(
                String::from_utf8_lossy(&self.raw_string("string value")?).into_owned(),
            ),
            9 => self.array(depth)?,
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.bytes()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.bytes()?)),
            other => return Err(GgufError::Corrupt(format!("unknown value type {other}"))),
        })
    }

    fn array(&mut self, depth: u32) -> Result<GgufValue, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::Corrupt("arrays nested too deeply".into()));
        }
        let elem_type = self.u32()?;
        let len = self.u64()?;
        let min_size = match elem_type {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 => 8,
            9 => 12,
            10..=12 => 8,
            other => return Err(GgufError::Corrupt(format!("unknown array type {other}"))),
        };
        if len > MAX_ARRAY_LEN || len > self.array_values_left {
            return Err(GgufError::Corrupt(format!(
                "metadata array of {len} values"
            )));
        }
        self.array_values_left -= len;
        let len = self.bounded_count(len, min_size, "array length")?;
        let mut values = Vec::with_capacity(len);
        for _ in 0..len {
            values.push(self.value(elem_type, depth + 1)?);
        }
        Ok(GgufValue::Array { elem_type, values })
    }

    fn tensor_info(&mut self) -> Result<TensorInfo, GgufError> {
        let name = self.string("tensor name")?;
        let n_dims = self.u32()?;
        if n_dims > MAX_TENSOR_DIMS {
            return Err(GgufError::Corrupt(format!(
                "tensor {name:?} has {n_dims} dims"
            )));
        }
        let mut shape = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            shape.push(self.u64()?);
        }
        let ggml_type = self.u32()?;
        let offset = self.u64()?;
        Ok(TensorInfo {
            name,
            shape,
            ggml_type,
            offset,
        })
    }
}

fn truncated(e: std::io::Error) -> GgufError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        GgufError::Truncated("unexpected end of file".into())
    } else {
        GgufError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds GGUF bytes by hand.
    #[derive(Default)]
    struct Builder(Vec<u8>);

    impl Builder {
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn str(self, s: &str) -> Self {
            let mut b = self.u64(s.len() as u64);
            b.0.extend_from_slice(s.as_bytes());
            b
        }
        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
        fn header(n_tensors: u64, n_kv: u64) -> Self {
            Builder::default()
                .raw(b"GGUF")
                .u32(3)
                .u64(n_tensors)
                .u64(n_kv)
        }
    }

    fn parse(bytes: &[u8]) -> Result<GgufFile, GgufError> {
        GgufFile::read(bytes, bytes.len() as u64)
    }

    fn sample() -> Vec<u8> {
        Builder::header(1, 5)
            .str("general.architecture")
            .u32(8)
            .str("llama")
            .str("a.u8")
            .u32(0)
            .raw(&[7])
            .str("a.f64")
            .u32(12)
            .raw(&1.5f64.to_le_bytes())
            .str("a.nested")
            .u32(9)
            .u32(9)
            .u64(2)
            .u32(5)
            .u64(1)
            .raw(&(-3i32).to_le_bytes())
            .u32(8)
            .u64(1)
            .str("x")
            .str("a.bool")
            .u32(7)
            .raw(&[1])
            .str("tok_embd.weight")
            .u32(2)
            .u64(576)
            .u64(49152)
            .u32(8)
            .u64(0)
            .0
    }

    #[test]
    fn parses_all_value_kinds_and_tensor_infos() {
        let bytes = sample();
        let f = parse(&bytes).expect("valid file");
        assert_eq!(f.version, 3);
        assert_eq!(f.architecture(), Some("llama"));
        assert_eq!(f.get("a.u8"), Some(&GgufValue::U8(7)));
        assert_eq!(f.get("a.f64").and_then(GgufValue::as_f64), Some(1.5));
        assert_eq!(f.get_bool("a.bool"), Some(true));
        let nested = f.get_array("a.nested").expect("array");
        assert_eq!(nested.len(), 2);
        assert_eq!(
            nested[0],
            GgufValue::Array {
                elem_type: 5,
                values: vec![GgufValue::I32(-3)]
            }
        );
        assert_eq!(nested[1].as_array().map(|a| a[0].as_str()), Some(Some("x")));
        assert_eq!(f.tensors.len(), 1);
        assert_eq!(f.tensors[0].name, "tok_embd.weight");
        assert_eq!(f.tensors[0].shape, vec![576, 49152]);
        assert_eq!(f.tensors[0].type_name(), Some("Q8_0"));
        assert_eq!(f.data_offset, (bytes.len() as u64).next_multiple_of(32));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            assert!(
                parse(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes parsed"
            );
        }
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        let bytes = Builder::header(0, 1)
            .str("k")
            .u32(9)
            .u32(8)
            .u64(u64::MAX / 2)
            .0;
        assert!(matches!(parse(&bytes), Err(GgufError::Corrupt(_))));
        let bytes = Builder::header(0, 1).str("k").u32(9).u32(0).u64(1000).0;
        assert!(matches!(parse(&bytes), Err(GgufError::Truncated(_))));
        let bytes = Builder::header(u64::MAX, 0).0;
        assert!(matches!(parse(&bytes), Err(GgufError::Truncated(_))));
        let bytes = Builder::header(0, 1).u64(u64::MAX).0;
        assert!(matches!(parse(&bytes), Err(GgufError::Truncated(_))));
    }

    #[test]
    fn rejects_bad_magic_version_types_and_nesting() {
        let mut bytes = sample();
        bytes[0] = b'X';
        assert!(matches!(parse(&bytes), Err(GgufError::BadMagic(_))));
        let bytes = Builder::default().raw(b"GGUF").u32(1).u64(0).u64(0).0;
        assert!(matches!(
            parse(&bytes),
            Err(GgufError::UnsupportedVersion(1))
        ));
        let bytes = Builder::header(0, 1).str("k").u32(13).u32(0).0;
        assert!(matches!(parse(&bytes), Err(GgufError::Corrupt(_))));
        let bytes = Builder::header(0, 1).str("k").u32(7).raw(&[2]).0;
        assert!(matches!(parse(&bytes), Err(GgufError::Corrupt(_))));
        let mut deep = Builder::header(0, 1).str("k").u32(9);
        for _ in 0..20 {
            deep = deep.u32(9).u64(1);
        }
        let bytes = deep.u32(0).u64(0).0;
        assert!(matches!(parse(&bytes), Err(GgufError::Corrupt(_))));
    }

    proptest::proptest! {
        #[test]
        fn corrupted_bytes_never_panic(
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..8),
        ) {
            let mut bytes = sample();
            for (at, value) in flips {
                let len = bytes.len();
                bytes[at % len] = value;
            }
            // Either outcome is fine; panicking or aborting on allocation is not.
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn honours_general_alignment() {
        let bytes = Builder::header(0, 1)
            .str("general.alignment")
            .u32(4)
            .u32(64)
            .0;
        let f = parse(&bytes).expect("valid file");
        assert_eq!(f.alignment, 64);
        assert_eq!(f.data_offset, 64);
        let bad = Builder::header(0, 1)
            .str("general.alignment")
            .u32(4)
            .u32(3)
            .0;
        assert!(matches!(parse(&bad), Err(GgufError::Corrupt(_))));
    }
}
