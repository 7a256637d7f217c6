//! The file of one on-disk prompt-cache entry:
//!
//! ```text
//! magic      8 bytes  "MLXDPC01"
//! checksum  32 bytes  SHA-256 of everything after it
//! length     4 bytes  the header's length, little-endian
//! header              JSON: model identity, token ids, the position its
//!                     arrays start at and the entry before it, per layer
//!                     its kind and its named arrays (dtype, shape, bytes)
//! payload             the arrays' bytes, in the header's order
//! ```
//!
//! Each layer is a list of named arrays, not a fixed pair, so that a layer
//! kept as more arrays (a quantized KV's scales and biases) fits the same
//! format. The checksum covers the header too: a file whose token ids or
//! shapes were changed is as corrupt as one whose values were.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use mlx::{Array, Dtype};

use crate::model::{KvArray, LayerSnapshot};

pub const MAGIC: &[u8; 8] = b"MLXDPC01";
/// Bytes before the header: magic, checksum, header length.
pub const PREAMBLE: usize = 8 + 32 + 4;
/// A header larger than this is not one this format wrote.
const MAX_HEADER: usize = 64 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    /// The model identity, hex.
    pub model: String,
    /// Every token id of the sequence.
    pub tokens: Vec<u32>,
    /// The first position the arrays hold: 0 for a whole entry; else the
    /// first `start` positions are those of `parent` (the file name of an
    /// entry whose tokens begin with `tokens[..start]`) and the arrays hold
    /// the keys and values of positions `start..`.
    #[serde(default)]
    pub start: usize,
    #[serde(default)]
    pub parent: Option<String>,
    pub layers: Vec<LayerHeader>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LayerHeader {
    /// `kv` (keys and values of positions `0..tokens`) or `recurrent` (the
    /// state at exactly `tokens`).
    pub kind: String,
    pub arrays: Vec<ArrayHeader>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ArrayHeader {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i32>,
    pub bytes: u64,
}

impl Header {
    /// Bytes of the payload the header describes.
    pub fn payload_bytes(&self) -> u64 {
        self.layers
            .iter()
            .flat_map(|l| &l.arrays)
            .fold(0u64, |sum, a| sum.saturating_add(a.bytes))
    }
}

/// The names of a layer's kind and arrays.
fn names(layer: &LayerSnapshot) -> (&'static str, [&'static str; 2]) {
    match layer {
        LayerSnapshot::Kv(..) => ("kv", ["keys", "values"]),
        LayerSnapshot::Recurrent(..) => ("recurrent", ["conv", "state"]),
    }
}

/// An entry's header, from its arrays' shapes and dtypes (nothing is
/// evaluated).
pub fn header(
    model: &str,
    tokens: &[u32],
    start: usize,
    parent: Option<&str>,
    layers: &[LayerSnapshot],
) -> mlx::Result<Vec<u8>> {
    let layers = layers
        .iter()
        .map(|layer| {
            let (kind, names) = names(layer);
            let arrays = names
                .iter()
                .zip(layer.arrays())
                .map(|(name, a)| ArrayHeader {
                    name: (*name).to_owned(),
                    dtype: a.dtype().name().to_owned(),
                    shape: a.shape(),
                    bytes: a.nbytes() as u64,
                })
                .collect();
            LayerHeader {
                kind: kind.to_owned(),
                arrays,
            }
        })
        .collect();
    let header = Header {
        model: model.to_owned(),
        tokens: tokens.to_vec(),
        start,
        parent: parent.map(str::to_owned),
        layers,
    };
    serde_json::to_vec(&header)
        .map_err(|e| mlx::MlxError::Format(format!("prompt-cache header: {e}")))
}

/// The start of an entry's file: the preamble (with the checksum over the
/// header and `payload`) and the header; the payload follows it.
pub fn frame(header: &[u8], payload: &[Vec<u8>]) -> Vec<u8> {
    let len = (header.len() as u32).to_le_bytes();
    let mut hasher = Sha256::new();
    hasher.update(len);
    hasher.update(header);
    for p in payload {
        hasher.update(p);
    }
    let mut pre = Vec::with_capacity(PREAMBLE + header.len());
    pre.extend_from_slice(MAGIC);
    pre.extend_from_slice(&hasher.finalize());
    pre.extend_from_slice(&len);
    pre.extend_from_slice(header);
    pre
}

/// The length of a file's header, from its first [`PREAMBLE`] bytes.
pub fn header_len(start: &[u8]) -> Result<usize, String> {
    if start.len() < PREAMBLE || &start[..8] != MAGIC {
        return Err("not a prompt-cache file (bad magic)".into());
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&start[40..44]);
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_HEADER {
        return Err(format!("header of {len} bytes"));
    }
    Ok(len)
}

pub fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("bad header: {e}"))
}

/// The header and layers of a whole file, checked against its checksum.
pub fn decode(file: &[u8]) -> Result<(Header, Vec<LayerSnapshot>), String> {
    let len = header_len(file)?;
    if file.len() < PREAMBLE + len {
        return Err("truncated header".into());
    }
    let digest = Sha256::digest(&file[40..]);
    if digest[..] != file[8..40] {
        return Err("checksum mismatch".into());
    }
    let header = parse_header(&file[PREAMBLE..PREAMBLE + len])?;
    let mut at = PREAMBLE + len;
    if (file.len() - at) as u64 != header.payload_bytes() {
        return Err("payload length differs from its header".into());
    }
    let mut layers = Vec::with_capacity(header.layers.len());
    for layer in &header.layers {
        let mut arrays = Vec::with_capacity(layer.arrays.len());
        for a in &layer.arrays {
            let dtype = Dtype::from_name(&a.dtype).ok_or_else(|| format!("dtype {}", a.dtype))?;
            let end = at + a.bytes as usize;
            let array = Array::from_bytes(&file[at..end], &a.shape, dtype)
                .map_err(|e| format!("array {}: {e}", a.name))?;
            arrays.push((a.name.as_str(), array));
            at = end;
        }
        layers.push(snapshot(&layer.kind, arrays)?);
    }
    Ok((header, layers))
}

/// A layer from its named arrays.
fn snapshot(kind: &str, arrays: Vec<(&str, Array)>) -> Result<LayerSnapshot, String> {
    let names: Vec<&str> = arrays.iter().map(|(n, _)| *n).collect();
    let mut it = arrays.into_iter().map(|(_, a)| a);
    match (kind, names.as_slice(), it.next(), it.next()) {
        ("kv", ["keys", "values"], Some(k), Some(v)) => {
            Ok(LayerSnapshot::Kv(KvArray::Full(k), KvArray::Full(v), None))
        }
        ("recurrent", ["conv", "state"], Some(c), Some(s)) => Ok(LayerSnapshot::Recurrent(c, s)),
        _ => Err(format!("a {kind} layer of arrays {names:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(layers: &[LayerSnapshot]) -> Vec<u8> {
        let head = header("m", &[1, 2, 3], 0, None, layers).unwrap();
        let payload: Vec<Vec<u8>> = layers
            .iter()
            .flat_map(|l| l.arrays())
            .map(|a| a.to_bytes().unwrap())
            .collect();
        let mut out = frame(&head, &payload);
        payload.iter().for_each(|p| out.extend_from_slice(p));
        out
    }

    #[test]
    fn layers_of_any_dtype_round_trip_and_any_change_is_caught() {
        let k = Array::from_slice(&[1.0f32, -2.0, 3.5, 4.0], &[1, 1, 2, 2])
            .unwrap()
            .astype(Dtype::Bf16)
            .unwrap();
        let conv = Array::from_slice(&[0.5f32; 6], &[1, 3, 2]).unwrap();
        let state = Array::from_slice(&[7.0f32; 8], &[1, 2, 2, 2]).unwrap();
        let layers = [
            LayerSnapshot::Kv(KvArray::Full(k.clone()), KvArray::Full(k), None),
            LayerSnapshot::Recurrent(conv, state),
        ];
        let bytes = file(&layers);
        let (header, back) = decode(&bytes).unwrap();
        assert_eq!(header.tokens, [1, 2, 3]);
        assert_eq!(header.layers[0].arrays[1].name, "values");
        let LayerSnapshot::Kv(KvArray::Full(k), _, None) = &back[0] else {
            panic!("a KV layer comes back as one");
        };
        assert_eq!(k.dtype(), Dtype::Bf16);
        let k = k.astype(Dtype::F32).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(k, [1.0, -2.0, 3.5, 4.0]);
        let LayerSnapshot::Recurrent(_, s) = &back[1] else {
            panic!("a recurrent layer comes back as one");
        };
        assert_eq!(s.shape(), [1, 2, 2, 2]);
        // A token id in the header, a value, the length: all caught.
        let at = PREAMBLE
            + String::from_utf8_lossy(&bytes[PREAMBLE..])
                .find("[1,2,3]")
                .unwrap();
        let mut tampered = bytes.clone();
        tampered[at + 1] = b'9';
        assert!(decode(&tampered).unwrap_err().contains("checksum"));
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(decode(&flipped).is_err());
        assert!(decode(&bytes[..bytes.len() - 4]).is_err());
        assert!(decode(&bytes[..20]).is_err());
    }
}
