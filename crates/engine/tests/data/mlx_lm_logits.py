"""Logits of mlx-lm on a checkpoint directory (no tokenizer needed).

usage: mlx_lm_logits.py MODEL_DIR IDS OUT

IDS: comma-separated token ids of one prompt. Writes the logits of the
whole prompt, f32 `[1, len, vocab]`, as `logits` in the safetensors OUT.
"""

import sys
from pathlib import Path

import mlx.core as mx
from mlx_lm.utils import load_model


def main(model_dir, ids, out):
    model, _ = load_model(Path(model_dir))
    prompt = mx.array([[int(t) for t in ids.split(",")]])
    mx.save_safetensors(out, {"logits": model(prompt).astype(mx.float32)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
