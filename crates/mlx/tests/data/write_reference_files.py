"""Writes files with the Python `mlx` package for the binding's I/O tests.

usage: write_reference_files.py OUT_DIR

OUT_DIR/reference.safetensors and OUT_DIR/reference.gguf hold the arrays
below (with metadata); OUT_DIR/reference.json describes them independently:
name, dtype, shape and the values as a flat list of numbers.
"""

import json
import sys
from pathlib import Path

import mlx.core as mx


def arrays():
    return {
        "model.embed.weight": mx.arange(12, dtype=mx.float32).reshape(3, 4) / 8 - 0.5,
        "layers.0.norm.weight": mx.array([1.5, -2.25, 3.0], dtype=mx.float16),
        "layers.0.proj.weight": mx.array([[0.5, -1.0], [2.0, 1024.0]], dtype=mx.bfloat16),
        "positions": mx.array([0, -7, 1 << 20], dtype=mx.int32),
        "packed": mx.array([0, 1, 255, 128], dtype=mx.uint8),
        "flags": mx.array([True, False, True]),
        "scalar": mx.array(3.25, dtype=mx.float32),
    }


DTYPES = {
    mx.float32: "F32",
    mx.float16: "F16",
    mx.bfloat16: "Bf16",
    mx.int32: "I32",
    mx.uint8: "U8",
    mx.bool_: "Bool",
}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tensors = arrays()
    mx.save_safetensors(
        str(out / "reference.safetensors"),
        tensors,
        metadata={"format": "mlx", "written_by": "write_reference_files.py"},
    )
    gguf_tensors = {k: v for k, v in tensors.items() if v.dtype in (mx.float32, mx.float16)}
    mx.save_gguf(
        str(out / "reference.gguf"),
        gguf_tensors,
        {
            "general.architecture": "llama",
            "tokenizer.ggml.tokens": ["<s>", "hello", "wörld", "🙂"],
            "llama.context_length": mx.array(2048, dtype=mx.uint32),
            "llama.rope.freq_base": mx.array(10000.0, dtype=mx.float32),
        },
    )
    described = {
        name: {
            "dtype": DTYPES[a.dtype],
            "shape": list(a.shape),
            "values": a.astype(mx.float32).reshape(-1).tolist(),
        }
        for name, a in tensors.items()
    }
    (out / "reference.json").write_text(json.dumps(described, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
