"""GGUF files of random but valid ggml quantized blocks, with gguf-py's
dequantization of every tensor as the reference.

Usage: gguf_kquant.py OUT_DIR. Writes:

- tensors.gguf: one 3x512 tensor `t.<TYPE>.weight` per quantized type (and
  a 2x64 F16 and BF16 one), and tensors.safetensors: each one dequantized
  by gguf-py (`gguf.quants`), f32 (Q8_K, which gguf-py does not decode, as
  ggml does: `d * q`).
- llama31.gguf: an f32 tiny Llama with Llama 3.1's `rope_freqs` tensor
  (the factors llama.cpp's converter computes from LLAMA3 below).
- <variant>.gguf for each tiny Llama variant (2 layers, hidden 256, 4 heads /
  2 KV heads, vocab 256), <variant>_f32.gguf: the same model with every
  tensor replaced by gguf-py's f32 dequantization of it, and
  <variant>_requantized.gguf: that with the Q2_K, Q3_K and Q6_K tensors
  re-quantized to 4, 5 and 8 bits (the engine's rule, written again here in
  numpy). `exact` mixes every type converted without loss; `q4_k_m` is
  laid out as llama.cpp's Q4_K_M (Q4_K, with Q6_K for attn_v, ffn_down and
  output); `q3_k_m` as its Q3_K_M (Q3_K, with Q4_K/Q5_K for attn_v and
  ffn_down, Q6_K for the output), with Q2_K in one layer's ffn_gate.
"""

import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

RNG = np.random.default_rng(7)
# The draws of the types added later (Q2_K, Q3_K, Q8_K) in tensors.gguf,
# apart, so the earlier tensors and models keep their values.
LATER_RNG = np.random.default_rng(8)
LATER_TYPES = (T.Q2_K, T.Q3_K)

# Byte offsets of each block's f16 fields (d, and dmin or m), and the
# largest integer factor a weight's f16 scale is multiplied by, so that
# weights stay near ±0.1.
F16_FIELDS = {
    T.Q4_0: ([0], 8),
    T.Q4_1: ([0, 2], 15),
    T.Q5_0: ([0], 16),
    T.Q5_1: ([0, 2], 31),
    T.Q8_0: ([0], 128),
    T.Q4_K: ([0, 2], 63 * 15),
    T.Q5_K: ([0, 2], 63 * 31),
    T.Q6_K: ([208], 128 * 32),
    T.Q2_K: ([80, 82], 15 * 3),
    T.Q3_K: ([108], 32 * 4),
}

# Bits each re-quantized type takes in the engine.
REQUANTIZED = {T.Q2_K: 4, T.Q3_K: 5, T.Q6_K: 8}

HIDDEN, FFN, HEADS, KV_HEADS, LAYERS, VOCAB = 256, 512, 4, 2, 2, 256


def random_blocks(qtype, rows, cols, rng=RNG):
    """Random block bytes of a `rows x cols` tensor with finite scales."""
    block_len, block_bytes = GGML_QUANT_SIZES[qtype]
    blocks = rows * cols // block_len
    raw = rng.integers(0, 256, size=(blocks, block_bytes), dtype=np.uint8)
    fields, factor = F16_FIELDS[qtype]
    for at in fields:
        d = rng.uniform(0.3, 1.0, size=blocks) * 0.1 / factor
        # The min/offset fields of Q4_1 and Q5_1 may be negative.
        if at == 2 and qtype in (T.Q4_1, T.Q5_1):
            d = -d * rng.integers(1, factor, size=blocks)
        raw[:, at : at + 2] = d.astype(np.float16).view(np.uint8).reshape(blocks, 2)
    return raw.reshape(rows, cols // block_len * block_bytes)


def q8_k_blocks(rows, cols):
    """Random Q8_K blocks (f32 d, 256 int8 values, 16 int16 sums of 16) and
    ggml's dequantization of them, `d * q`."""
    blocks = rows * cols // 256
    d = (LATER_RNG.uniform(0.3, 1.0, size=blocks) * 0.1 / 128).astype(np.float32)
    q = LATER_RNG.integers(-128, 128, size=(blocks, 256)).astype(np.int8)
    sums = q.reshape(blocks, 16, 16).astype(np.int16).sum(axis=2, dtype=np.int16)
    raw = np.concatenate(
        [d.view(np.uint8).reshape(blocks, 4), q.view(np.uint8), sums.view(np.uint8)], axis=1
    )
    w = (d[:, None] * q.astype(np.float32)).astype(np.float32)
    return raw.reshape(rows, -1), w.reshape(rows, cols)


def tensors_file(out):
    writer = GGUFWriter(str(out / "tensors.gguf"), "llama")
    reference = {}
    for qtype in F16_FIELDS:
        name = f"t.{qtype.name}.weight"
        raw = random_blocks(qtype, 3, 512, LATER_RNG if qtype in LATER_TYPES else RNG)
        writer.add_tensor(name, raw, raw_dtype=qtype)
        reference[name] = mx.array(dequantize(raw, qtype).astype(np.float32))
    raw, w = q8_k_blocks(3, 512)
    writer.add_tensor("t.Q8_K.weight", raw, raw_dtype=T.Q8_K)
    reference["t.Q8_K.weight"] = mx.array(w)
    half = RNG.normal(size=(2, 64)).astype(np.float16)
    writer.add_tensor("t.F16.weight", half)
    reference["t.F16.weight"] = mx.array(half.astype(np.float32))
    # BF16 as raw bytes: the upper halves of f32 values.
    upper = (RNG.normal(size=(2, 64)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    writer.add_tensor("t.BF16.weight", upper.view(np.uint8), raw_dtype=T.BF16)
    reference["t.BF16.weight"] = mx.array((upper.astype(np.uint32) << 16).view(np.float32))
    write(writer)
    mx.save_safetensors(str(out / "tensors.safetensors"), reference)


def write(writer):
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def model_tensors(types):
    """(name, qtype or None, shape [rows, cols]) of the tiny Llama."""
    yield "token_embd.weight", types["token_embd"], [VOCAB, HIDDEN]
    yield "output_norm.weight", None, [HIDDEN]
    yield "output.weight", types["output"], [VOCAB, HIDDEN]
    head_dim = HIDDEN // HEADS
    for i in range(LAYERS):
        for part, shape in [
            ("attn_q", [HEADS * head_dim, HIDDEN]),
            ("attn_k", [KV_HEADS * head_dim, HIDDEN]),
            ("attn_v", [KV_HEADS * head_dim, HIDDEN]),
            ("attn_output", [HIDDEN, HEADS * head_dim]),
            ("ffn_gate", [FFN, HIDDEN]),
            ("ffn_up", [FFN, HIDDEN]),
            ("ffn_down", [HIDDEN, FFN]),
        ]:
            yield f"blk.{i}.{part}.weight", types[part][i], shape
        yield f"blk.{i}.attn_norm.weight", None, [HIDDEN]
        yield f"blk.{i}.ffn_norm.weight", None, [HIDDEN]


def model_writer(path):
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(512)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(VOCAB)
    return writer


def requantized(w, bits):
    """`w` quantized to `bits` bits per group of 32 between each group's min
    and max, and dequantized: the engine's rule for Q2_K, Q3_K and Q6_K."""
    top = np.float32(2**bits - 1)
    groups = w.astype(np.float32).reshape(-1, 32)
    lo = groups.min(axis=1, keepdims=True)
    step = (groups.max(axis=1, keepdims=True) - lo) / top
    inv = np.float32(1) / np.where(step > 0, step, np.float32(1))
    q = np.clip(np.floor((groups - lo) * inv + np.float32(0.5)), 0, top)
    q = np.where(step > 0, q, 0).astype(np.float32)
    return (step * q + lo).astype(np.float32).reshape(w.shape)


def model_files(out, variant, types):
    """The quantized model, its gguf-py dequantization (`_f32`), and that
    with the Q2_K, Q3_K and Q6_K tensors re-quantized as the engine does
    (`_requantized`)."""
    quant = model_writer(out / f"{variant}.gguf")
    dense = model_writer(out / f"{variant}_f32.gguf")
    requant = model_writer(out / f"{variant}_requantized.gguf")
    for name, qtype, shape in model_tensors(types):
        if qtype is None:
            w = (1.0 + 0.1 * RNG.normal(size=shape)).astype(np.float32)
            for writer in (quant, dense, requant):
                writer.add_tensor(name, w)
            continue
        raw = random_blocks(qtype, *shape)
        quant.add_tensor(name, raw, raw_dtype=qtype)
        w = dequantize(raw, qtype).astype(np.float32)
        dense.add_tensor(name, w)
        bits = REQUANTIZED.get(qtype)
        requant.add_tensor(name, requantized(w, bits) if bits else w)
    for writer in (quant, dense, requant):
        write(writer)


# Llama 3.1's scaling, with a short original context so that the three
# regions (kept, stretched, blended) all hold pairs of the 64-wide heads.
LLAMA3 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}


def rope_freqs(head_dim, base):
    """llama.cpp's converter's `rope_freqs` for LLAMA3: per pair, the factor
    its period is multiplied by."""
    factor, low, high = LLAMA3["factor"], LLAMA3["low_freq_factor"], LLAMA3["high_freq_factor"]
    old = LLAMA3["original_max_position_embeddings"]
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * np.pi * base ** (i / head_dim)
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def llama31_file(out):
    """An f32 tiny Llama with Llama 3.1's `rope_freqs` tensor."""
    writer = model_writer(out / "llama31.gguf")
    for name, _, shape in model_tensors(dict.fromkeys(
            ["token_embd", "output"], None) | {p: [None] * LAYERS for p in [
                "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]}):
        scale = 1.0 if name.endswith("norm.weight") else 0.1
        w = RNG.normal(size=shape).astype(np.float32) * scale
        if name.endswith("norm.weight"):
            w = 1.0 + 0.1 * w
        writer.add_tensor(name, w.astype(np.float32))
    writer.add_tensor("rope_freqs.weight", rope_freqs(HIDDEN // HEADS, 10000.0))
    write(writer)


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    tensors_file(out)
    llama31_file(out)
    model_files(
        out,
        "exact",
        {
            "token_embd": T.Q8_0,
            "output": T.Q5_K,
            "attn_q": [T.Q4_K, T.Q5_K],
            "attn_k": [T.Q5_K, T.Q4_0],
            "attn_v": [T.Q5_0, T.Q4_K],
            "attn_output": [T.Q4_1, T.Q5_1],
            "ffn_gate": [T.Q4_K, T.Q8_0],
            "ffn_up": [T.Q5_1, T.Q4_K],
            "ffn_down": [T.Q4_0, T.Q4_K],
        },
    )
    model_files(
        out,
        "q4_k_m",
        {
            "token_embd": T.Q4_K,
            "output": T.Q6_K,
            "attn_q": [T.Q4_K] * 2,
            "attn_k": [T.Q4_K] * 2,
            "attn_v": [T.Q6_K] * 2,
            "attn_output": [T.Q4_K] * 2,
            "ffn_gate": [T.Q4_K] * 2,
            "ffn_up": [T.Q4_K] * 2,
            "ffn_down": [T.Q6_K, T.Q4_K],
        },
    )
    model_files(
        out,
        "q3_k_m",
        {
            "token_embd": T.Q3_K,
            "output": T.Q6_K,
            "attn_q": [T.Q3_K] * 2,
            "attn_k": [T.Q3_K] * 2,
            "attn_v": [T.Q5_K, T.Q4_K],
            "attn_output": [T.Q3_K] * 2,
            "ffn_gate": [T.Q3_K, T.Q2_K],
            "ffn_up": [T.Q3_K] * 2,
            "ffn_down": [T.Q5_K, T.Q4_K],
        },
    )


if __name__ == "__main__":
    main()
