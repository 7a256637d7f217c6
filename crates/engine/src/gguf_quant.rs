//! ggml's block-quantized GGUF tensors read from the file and converted to
//! MLX affine quantization (`w = scale * q + bias` per group of 32 along a
//! row; packed `u32` weight, `scales`, `biases`), for the types MLX's own
//! GGUF reader refuses. The block layouts follow ggml's `ggml-quants.c`
//! (`dequantize_row_*`) and gguf-py's `gguf/quants.py`, which the tests use
//! as the reference.
//!
//! - Exact: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 (one scale and offset per 32
//!   weights), and Q4_K and Q5_K, whose 256-weight super-blocks hold eight
//!   sub-blocks of 32 with `w = d·sc_j·q − dmin·m_j` (6-bit `sc_j`, `m_j`):
//!   group `j` gets `scale = d·sc_j`, `bias = −dmin·m_j`, and `q` keeps its
//!   4 or 5 bits. Scales and biases are f32: the K-quants' `d·sc_j` (an
//!   f16 times a 6-bit integer) needs up to 17 significant bits, and MLX
//!   dequantizes in the scales' dtype, so f16 scales would round `scale·q`
//!   even for the legacy types. (That costs 2 bits per weight, where f16
//!   would cost 1: a Q4_K tensor of 4.5 bits per weight in the file takes 6
//!   in memory.)
//! - Q8_K (one f32 scale per 256 weights, `w = d·q`) as 8-bit groups of
//!   32 with `scale = d`, `bias = −128·d`: equal to ggml's `d·q` up to the
//!   rounding of `d·(q + 128) − 128·d` in f32 (a few ulps of `128·d`).
//! - Re-quantized: Q2_K, Q3_K and Q6_K have sixteen 16-weight sub-blocks
//!   with a scale each (Q2_K: `w = d·sc·q − dmin·m`, 4-bit `sc`, `m`, 2-bit
//!   `q`; Q3_K: `w = d·(sc − 32)·(q − 4)`, 6-bit `sc`, 3-bit `q`; Q6_K:
//!   `w = d·sc·(q − 32)`, int8 `sc`), and MLX's affine groups are 32, 64 or
//!   128 weights (its only 16-weight groups, `nvfp4`'s, hold FP4 values), so
//!   two sub-blocks share a group. Their weights are decoded to f32 and
//!   quantized again per group of 32 (`scale = (max − min)/(2^b − 1)`,
//!   `bias = min`, `q = ⌊(w − min)·(1/scale) + ½⌋`) to `b` bits: Q2_K to 4,
//!   Q3_K to 5, Q6_K to 8. Each weight moves by at most `scale/2`: for
//!   Q6_K at most 63/510 ≈ 0.124 of its own step `d·|sc|` of the coarser
//!   sub-block of its group; for Q3_K, whose group spans at most 7 steps of
//!   its coarser sub-block on each side of zero, at most 7/31 ≈ 0.23 of
//!   that step, and for Q2_K, whose sub-blocks' ranges (3 steps each) may
//!   sit apart by their minimums, half a 4-bit step of the group's range.
//!   Each width is the smallest that keeps that error well under the source
//!   format's own step; in memory (with f32 scales) they take 6, 7 and 10
//!   bits per weight, against 2.6, 3.4 and 6.6 in the file.
//! - F32, F16 and BF16 tensors are read as they are.
//!
//! MLX packs `bits`-bit values as a little-endian bit stream (value `i` at
//! bit `i·bits`) in `u32` words; 32 or 256 weights fill whole words at every
//! width, so each block packs on its own. Rows convert in parallel (rayon).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use mlx::{Array, bf16, f16};
use rayon::prelude::*;

use crate::error::{EngineError, Result};
use crate::gguf::{GgufFile, TensorInfo};

/// Weights per MLX group of every converted tensor.
pub const GROUP: usize = 32;

/// ggml types [`read_tensors`] reads without loss.
pub const EXACT_TYPES: [&str; 11] = [
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q8_K",
];

/// ggml types [`read_tensors`] re-quantizes, with the bits each takes
/// (within half a step of that width over each group's range).
pub const REQUANTIZED_TYPES: [(&str, usize); 3] = [("Q2_K", 4), ("Q3_K", 5), ("Q6_K", 8)];

/// A ggml tensor type this module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    F32,
    F16,
    Bf16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

impl Kind {
    fn of(info: &TensorInfo) -> Option<Kind> {
        Some(match info.type_name()? {
            "F32" => Kind::F32,
            "F16" => Kind::F16,
            "BF16" => Kind::Bf16,
            "Q4_0" => Kind::Q4_0,
            "Q4_1" => Kind::Q4_1,
            "Q5_0" => Kind::Q5_0,
            "Q5_1" => Kind::Q5_1,
            "Q8_0" => Kind::Q8_0,
            "Q2_K" => Kind::Q2K,
            "Q3_K" => Kind::Q3K,
            "Q4_K" => Kind::Q4K,
            "Q5_K" => Kind::Q5K,
            "Q6_K" => Kind::Q6K,
            "Q8_K" => Kind::Q8K,
            _ => return None,
        })
    }

    /// Weights per block and bytes per block.
    fn block(self) -> (usize, usize) {
        match self {
            Kind::F32 => (1, 4),
            Kind::F16 | Kind::Bf16 => (1, 2),
            Kind::Q4_0 => (32, 18),
            Kind::Q4_1 => (32, 20),
            Kind::Q5_0 => (32, 22),
            Kind::Q5_1 => (32, 24),
            Kind::Q8_0 => (32, 34),
            Kind::Q2K => (256, 84),
            Kind::Q3K => (256, 110),
            Kind::Q4K => (256, 144),
            Kind::Q5K => (256, 176),
            Kind::Q6K => (256, 210),
            Kind::Q8K => (256, 292),
        }
    }

    /// Bits per weight in MLX, `None` for the float types.
    fn bits(self) -> Option<usize> {
        match self {
            Kind::F32 | Kind::F16 | Kind::Bf16 => None,
            Kind::Q4_0 | Kind::Q4_1 | Kind::Q4K | Kind::Q2K => Some(4),
            Kind::Q5_0 | Kind::Q5_1 | Kind::Q5K | Kind::Q3K => Some(5),
            Kind::Q8_0 | Kind::Q6K | Kind::Q8K => Some(8),
        }
    }
}

/// Whether [`read_tensors`] reads tensors of `info`'s type.
pub fn converts(info: &TensorInfo) -> bool {
    Kind::of(info).is_some()
}

/// Bytes a tensor of `info`'s type takes in memory once read, with
/// `scale_bytes` per scale and bias (4 here, 2 from MLX's reader); `None`
/// for a type not read.
pub fn loaded_bytes(info: &TensorInfo, scale_bytes: u64) -> Option<u64> {
    let kind = Kind::of(info)?;
    let elements = info.shape.iter().try_fold(1u64, |n, d| n.checked_mul(*d))?;
    Some(match kind.bits() {
        None => elements * kind.block().1 as u64,
        Some(bits) => elements * bits as u64 / 8 + elements / GROUP as u64 * 2 * scale_bytes,
    })
}

/// Reads every tensor of the GGUF `file` (parsed from `path`) into MLX
/// arrays under its GGUF name: float tensors as `{name}` with the shape
/// reversed (ggml lists the innermost dimension first), quantized tensors
/// as `{prefix}.weight` (packed), `{prefix}.scales` and `{prefix}.biases`
/// with groups of [`GROUP`] along the last axis.
pub fn read_tensors(path: &Path, file: &GgufFile) -> Result<HashMap<String, Array>> {
    let io = |e| EngineError::io(path, e);
    let mut reader = File::open(path).map_err(io)?;
    let len = reader.metadata().map_err(io)?.len();
    let mut out = HashMap::with_capacity(file.tensors.len() * 3);
    for info in &file.tensors {
        let bad = |why: &str| EngineError::Weights(format!("GGUF tensor {}: {why}", info.name));
        let kind = Kind::of(info).ok_or_else(|| bad("type not converted"))?;
        let (block_len, block_bytes) = kind.block();
        let cols = usize::try_from(*info.shape.first().ok_or_else(|| bad("no dimensions"))?)
            .map_err(|_| bad("too large"))?;
        if cols == 0 || cols % block_len != 0 {
            return Err(bad(&format!(
                "rows of {cols} weights are not whole blocks of {block_len}"
            )));
        }
        let elements = info
            .shape
            .iter()
            .try_fold(1u64, |n, d| n.checked_mul(*d))
            .ok_or_else(|| bad("size overflows"))?;
        let bytes = elements / block_len as u64 * block_bytes as u64;
        let start = file
            .data_offset
            .checked_add(info.offset)
            .filter(|s| s.checked_add(bytes).is_some_and(|end| end <= len))
            .ok_or_else(|| bad("data lies past the end of the file"))?;
        let mut data = vec![0u8; usize::try_from(bytes).map_err(|_| bad("too large"))?];
        reader.seek(SeekFrom::Start(start)).map_err(io)?;
        reader.read_exact(&mut data).map_err(io)?;
        let mut shape = info
            .shape
            .iter()
            .rev()
            .map(|d| i32::try_from(*d).map_err(|_| bad("dimension too large")))
            .collect::<Result<Vec<i32>>>()?;
        match kind.bits() {
            None => {
                out.insert(info.name.clone(), float_array(kind, &data, &shape)?);
            }
            Some(bits) => {
                let prefix = info
                    .name
                    .strip_suffix(".weight")
                    .ok_or_else(|| bad("a quantized tensor's name must end in .weight"))?;
                let q = quantized(kind, bits, &data);
                let last = shape.len() - 1;
                shape[last] = i32::try_from(cols * bits / 32).map_err(|_| bad("too large"))?;
                out.insert(info.name.clone(), Array::from_slice(&q.words, &shape)?);
                shape[last] = i32::try_from(cols / GROUP).map_err(|_| bad("too large"))?;
                out.insert(
                    format!("{prefix}.scales"),
                    Array::from_slice(&q.scales, &shape)?,
                );
                out.insert(
                    format!("{prefix}.biases"),
                    Array::from_slice(&q.biases, &shape)?,
                );
            }
        }
    }
    Ok(out)
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

fn float_array(kind: Kind, data: &[u8], shape: &[i32]) -> Result<Array> {
    let halves = || {
        data.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    };
    Ok(match kind {
        Kind::F16 => {
            let v: Vec<f16> = halves().map(f16::from_bits).collect();
            Array::from_slice(&v, shape)?
        }
        Kind::Bf16 => {
            let v: Vec<bf16> = halves().map(bf16::from_bits).collect();
            Array::from_slice(&v, shape)?
        }
        _ => {
            let v: Vec<f32> = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Array::from_slice(&v, shape)?
        }
    })
}

/// A tensor in MLX's affine layout, rows concatenated.
struct Quantized {
    words: Vec<u32>,
    scales: Vec<f32>,
    biases: Vec<f32>,
}

/// Converts the blocks in `data` (whole rows) to `bits`-bit MLX groups,
/// batches of blocks in parallel.
fn quantized(kind: Kind, bits: usize, data: &[u8]) -> Quantized {
    let (block_len, block_bytes) = kind.block();
    let blocks = data.len() / block_bytes;
    let words_per_block = block_len * bits / 32;
    let groups_per_block = block_len / GROUP;
    let mut q = Quantized {
        words: vec![0; blocks * words_per_block],
        scales: vec![0.0; blocks * groups_per_block],
        biases: vec![0.0; blocks * groups_per_block],
    };
    // Batches of blocks, so that each task does a useful amount of work.
    let batch = 64;
    q.words
        .par_chunks_mut(words_per_block * batch)
        .zip(q.scales.par_chunks_mut(groups_per_block * batch))
        .zip(q.biases.par_chunks_mut(groups_per_block * batch))
        .zip(data.par_chunks(block_bytes * batch))
        .for_each(|(((words, scales), biases), src)| {
            let mut values = [0u8; 256];
            for (i, block) in src.chunks_exact(block_bytes).enumerate() {
                let g = i * groups_per_block;
                decode_block(
                    kind,
                    block,
                    &mut values[..block_len],
                    &mut scales[g..g + groups_per_block],
                    &mut biases[g..g + groups_per_block],
                );
                let w = i * words_per_block;
                pack(
                    &values[..block_len],
                    bits,
                    &mut words[w..w + words_per_block],
                );
            }
        });
    q
}

/// Packs `values` of `bits` bits each into `words`, least significant bit
/// first.
fn pack(values: &[u8], bits: usize, words: &mut [u32]) {
    match bits {
        4 => {
            for (w, v) in words.iter_mut().zip(values.chunks_exact(8)) {
                *w = v
                    .iter()
                    .enumerate()
                    .fold(0, |w, (i, x)| w | (u32::from(*x) << (4 * i)));
            }
        }
        8 => {
            for (w, v) in words.iter_mut().zip(values.chunks_exact(4)) {
                *w = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
            }
        }
        _ => {
            let mut acc = 0u64;
            let mut filled = 0;
            let mut out = words.iter_mut();
            for v in values {
                acc |= u64::from(*v) << filled;
                filled += bits;
                if filled >= 32 {
                    if let Some(w) = out.next() {
                        *w = acc as u32;
                    }
                    acc >>= 32;
                    filled -= 32;
                }
            }
        }
    }
}

/// Sub-block scale and min `j` (0..8) of Q4_K/Q5_K's 12 packed bytes.
fn scale_min_k4(j: usize, s: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    };
    (f32::from(sc), f32::from(m))
}

/// One block's unsigned values and its groups' scales and biases.
fn decode_block(kind: Kind, b: &[u8], q: &mut [u8], scales: &mut [f32], biases: &mut [f32]) {
    match kind {
        Kind::Q4_0 | Kind::Q4_1 => {
            let d = f16_at(b, 0);
            let (bias, qs) = match kind {
                Kind::Q4_0 => (-8.0 * d, &b[2..18]),
                _ => (f16_at(b, 2), &b[4..20]),
            };
            for (j, x) in qs.iter().enumerate() {
                q[j] = x & 0xF;
                q[j + 16] = x >> 4;
            }
            scales[0] = d;
            biases[0] = bias;
        }
        Kind::Q5_0 | Kind::Q5_1 => {
            let d = f16_at(b, 0);
            let (bias, rest) = match kind {
                Kind::Q5_0 => (-16.0 * d, &b[2..22]),
                _ => (f16_at(b, 2), &b[4..24]),
            };
            let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            for (j, x) in rest[4..20].iter().enumerate() {
                q[j] = (x & 0xF) | ((((qh >> j) << 4) & 0x10) as u8);
                q[j + 16] = (x >> 4) | (((qh >> (j + 12)) & 0x10) as u8);
            }
            scales[0] = d;
            biases[0] = bias;
        }
        Kind::Q8_0 => {
            let d = f16_at(b, 0);
            for (j, x) in b[2..34].iter().enumerate() {
                q[j] = x.wrapping_add(128);
            }
            scales[0] = d;
            biases[0] = -128.0 * d;
        }
        Kind::Q4K | Kind::Q5K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let s = &b[4..16];
            let (qh, ql) = match kind {
                Kind::Q5K => (Some(&b[16..48]), &b[48..176]),
                _ => (None, &b[16..144]),
            };
            for c in 0..4 {
                let ql = &ql[32 * c..32 * c + 32];
                for l in 0..32 {
                    let (hi0, hi1) = qh.map_or((0, 0), |h| {
                        (
                            ((h[l] >> (2 * c)) & 1) << 4,
                            ((h[l] >> (2 * c + 1)) & 1) << 4,
                        )
                    });
                    q[64 * c + l] = (ql[l] & 0xF) | hi0;
                    q[64 * c + 32 + l] = (ql[l] >> 4) | hi1;
                }
            }
            for (j, (scale, bias)) in scales.iter_mut().zip(biases.iter_mut()).enumerate() {
                let (sc, m) = scale_min_k4(j, s);
                *scale = d * sc;
                *bias = -(dmin * m);
            }
        }
        Kind::Q8K => {
            let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            for (j, x) in b[4..260].iter().enumerate() {
                q[j] = x.wrapping_add(128);
            }
            scales.fill(d);
            biases.fill(-128.0 * d);
        }
        Kind::Q2K | Kind::Q3K | Kind::Q6K => {
            let mut w = [0f32; 256];
            let bits = match kind {
                Kind::Q2K => {
                    decode_q2_k(b, &mut w);
                    4
                }
                Kind::Q3K => {
                    decode_q3_k(b, &mut w);
                    5
                }
                _ => {
                    decode_q6_k(b, &mut w);
                    8
                }
            };
            for (g, group) in w.chunks_exact(GROUP).enumerate() {
                requantize(
                    group,
                    bits,
                    &mut q[g * GROUP..(g + 1) * GROUP],
                    &mut scales[g],
                    &mut biases[g],
                );
            }
        }
        Kind::F32 | Kind::F16 | Kind::Bf16 => {}
    }
}

/// Q2_K's 256 weights as f32, computed as ggml does (`(d·sc)·q − dmin·m`):
/// 16 scale bytes (scale in the low nibble, min in the high), 64 bytes of
/// 2-bit values (four 32-weight runs per 32 bytes, by bit pairs), `d` and
/// `dmin`.
fn decode_q2_k(b: &[u8], w: &mut [f32; 256]) {
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let scales = &b[..16];
    for half in 0..2 {
        let qs = &b[16 + 32 * half..16 + 32 * half + 32];
        for j in 0..4 {
            for part in 0..2 {
                let sc = scales[8 * half + 2 * j + part];
                let dl = d * f32::from(sc & 0xF);
                let ml = dmin * f32::from(sc >> 4);
                for l in 0..16 {
                    let v = (qs[16 * part + l] >> (2 * j)) & 3;
                    w[128 * half + 32 * j + 16 * part + l] = dl * f32::from(v) - ml;
                }
            }
        }
    }
}

/// Q3_K's sixteen 6-bit scales from their 12 packed bytes (low nibbles in
/// bytes 0..8, the high bit pairs in bytes 8..12), as signed `sc − 32`.
fn q3_k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, v) in out.iter_mut().enumerate() {
        let low = if i < 8 { s[i] & 0xF } else { s[i - 8] >> 4 };
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        *v = ((low | (high << 4)) as i8) - 32;
    }
    out
}

/// Q3_K's 256 weights as f32, computed as ggml does (`(d·sc)·(q − 4)`, the
/// high bit of `q` from `hmask`): 32 bytes of high bits, 64 of 2-bit low
/// values, 12 of scales, `d`.
fn decode_q3_k(b: &[u8], w: &mut [f32; 256]) {
    let d = f16_at(b, 108);
    let hmask = &b[..32];
    let scales = q3_k_scales(&b[96..108]);
    for half in 0..2 {
        let qs = &b[32 + 32 * half..32 + 32 * half + 32];
        for j in 0..4 {
            let bit = 4 * half + j;
            for part in 0..2 {
                let dl = d * f32::from(scales[8 * half + 2 * j + part]);
                for l in 0..16 {
                    let at = 16 * part + l;
                    let low = ((qs[at] >> (2 * j)) & 3) as i8;
                    let high = if hmask[at] & (1 << bit) != 0 { 0 } else { 4 };
                    w[128 * half + 32 * j + at] = dl * f32::from(low - high);
                }
            }
        }
    }
}

/// Q6_K's 256 weights as f32, computed as ggml does (`(d·sc)·(q − 32)`).
fn decode_q6_k(b: &[u8], w: &mut [f32; 256]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut w[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let quad = [
                (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, v) in quad.iter().enumerate() {
                let scale = d * f32::from(sc[is + 2 * k] as i8);
                y[l + 32 * k] = scale * f32::from(i16::from(*v) - 32);
            }
        }
    }
}

/// One group of weights quantized to `bits` bits between its min and max.
fn requantize(w: &[f32], bits: usize, q: &mut [u8], scale: &mut f32, bias: &mut f32) {
    let (lo, hi) = w
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        });
    let top = ((1u32 << bits) - 1) as u8;
    let step = (hi - lo) / f32::from(top);
    let inv = if step > 0.0 { 1.0 / step } else { 0.0 };
    for (v, x) in q.iter_mut().zip(w) {
        // Round half up; `as` saturates at 0, `min` caps at the top.
        *v = (((x - lo) * inv + 0.5) as u8).min(top);
    }
    *scale = step;
    *bias = lo;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_is_a_little_endian_bit_stream() {
        for bits in [4, 5, 8] {
            let values: Vec<u8> = (0..32).map(|i| (i * 7 % (1 << bits)) as u8).collect();
            let mut words = vec![0u32; bits];
            pack(&values, bits, &mut words);
            for (i, v) in values.iter().enumerate() {
                let bit = i * bits;
                let both = u64::from(words[bit / 32])
                    | (words.get(bit / 32 + 1).map_or(0, |w| u64::from(*w)) << 32);
                let mask = (1u64 << bits) - 1;
                assert_eq!(
                    (both >> (bit % 32)) & mask,
                    u64::from(*v),
                    "{bits} bits, value {i}"
                );
            }
        }
    }

    #[test]
    fn requantizing_moves_each_weight_by_at_most_half_a_step() {
        let w: Vec<f32> = (0..32)
            .map(|i| ((i * 37 % 64) as f32 - 32.0) * 0.013)
            .collect();
        for bits in [4, 5, 8] {
            let (mut q, mut scale, mut bias) = ([0u8; 32], 0.0, 0.0);
            requantize(&w, bits, &mut q, &mut scale, &mut bias);
            assert!(q.iter().all(|&v| u32::from(v) < 1 << bits), "{bits} bits");
            assert_eq!(q.iter().max(), Some(&(((1u32 << bits) - 1) as u8)));
            for (x, v) in w.iter().zip(q) {
                assert!((scale * f32::from(v) + bias - x).abs() <= scale * 0.5 + 1e-6);
            }
            let flat = [0.25f32; 32];
            requantize(&flat, bits, &mut q, &mut scale, &mut bias);
            assert_eq!((scale, bias, q[0]), (0.0, 0.25, 0));
        }
    }

    #[test]
    fn q3_k_scales_unpack_as_ggml_does() {
        // ggml's `dequantize_row_q3_K`: the 12 bytes as three u32 words,
        // rebuilt into four with the 0x0f0f0f0f / 0x03030303 masks.
        let s: [u8; 12] = [
            0x1f,
            0x2e,
            0x3d,
            0x4c,
            0x5b,
            0x6a,
            0x79,
            0x88,
            0b1110_0100,
            0b0001_1011,
            0xff,
            0,
        ];
        let word =
            |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
        let (a0, a1, tmp) = (word(0), word(1), word(2));
        let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
        let aux = [
            (a0 & k2) | ((tmp & k1) << 4),
            (a1 & k2) | (((tmp >> 2) & k1) << 4),
            ((a0 >> 4) & k2) | (((tmp >> 4) & k1) << 4),
            ((a1 >> 4) & k2) | (((tmp >> 6) & k1) << 4),
        ];
        let want: Vec<i8> = aux
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .map(|b| b as i8 - 32)
            .collect();
        assert_eq!(q3_k_scales(&s).to_vec(), want);
    }
}
