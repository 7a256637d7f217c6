"""A tiny random Qwen3 checkpoint saved by mlx-lm, and embeddings computed
from mlx-lm's model on it.

usage: mlx_lm_embed_reference.py OUT_DIR

OUT_DIR holds the checkpoint (mlx_lm.utils.save_model/save_config) and
reference.json: the inputs (token ids, of different lengths, one longer than
the engine's 512-token chunk) and, per pooling (last, mean, cls), each
input's vector: the hidden states of `model.model(ids[None])` (the inner
transformer's output after the final norm, without the LM head) pooled and
scaled to unit L2 norm in float64; `last_raw` is last-token pooling without
the normalization.
"""

import json
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.models import qwen3
from mlx_lm.utils import save_config, save_model

VOCAB = 256
LENGTHS = [1, 7, 64, 700]
CONFIG = {
    "model_type": "qwen3",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "rms_norm_eps": 1e-5,
    "vocab_size": VOCAB,
    "max_position_embeddings": 2048,
    "rope_theta": 1e6,
    "tie_word_embeddings": False,
}


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    model = qwen3.Model(qwen3.ModelArgs.from_dict(CONFIG))
    mx.random.seed(7)
    params = []
    for name, p in tree_flatten(model.parameters()):
        scale = 0.1 if "norm" in name else 0.3
        base = 1.0 if "norm" in name else 0.0
        params.append((name, (base + scale * mx.random.normal(p.shape)).astype(mx.float32)))
    model.update(tree_unflatten(params))
    mx.eval(model.parameters())
    save_model(out, model)
    save_config(CONFIG, out / "config.json")

    inputs = [mx.random.randint(0, VOCAB, (n,)).astype(mx.int32) for n in LENGTHS]
    pooled = {"last": [], "mean": [], "cls": [], "last_raw": []}
    for ids in inputs:
        hidden = np.array(model.model(ids[None])[0].astype(mx.float32), dtype=np.float64)
        unit = lambda v: v / max(np.linalg.norm(v), 1e-12)
        pooled["last"].append(unit(hidden[-1]).tolist())
        pooled["mean"].append(unit(hidden.mean(axis=0)).tolist())
        pooled["cls"].append(unit(hidden[0]).tolist())
        pooled["last_raw"].append(hidden[-1].tolist())
    reference = {"inputs": [i.tolist() for i in inputs], **pooled}
    (out / "reference.json").write_text(json.dumps(reference))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
