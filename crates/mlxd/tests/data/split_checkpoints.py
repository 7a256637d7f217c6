"""Tiny random checkpoints saved by mlx-lm, for the split-model tests.

usage: split_checkpoints.py OUT_DIR TOKENIZER_DIR

Writes OUT_DIR/<name>/ (config.json and weights from mlx_lm.utils.save_model
/ save_config, plus the tokenizer files of TOKENIZER_DIR) for:
  llama_bias   Llama, 4 layers, 4 heads / 2 KV heads, biases on every
               projection (the row-parallel biases must be added once)
  llama_q4     the same without biases, 4-bit affine (group 32)
  qwen3_moe    Qwen3-MoE, 2 layers (the first dense), 4 experts, top 2
"""

import shutil
import sys
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.models import llama, qwen3_moe
from mlx_lm.utils import quantize_model, save_config, save_model

BASE = {
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 49152,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}

VARIANTS = {
    "llama_bias": (llama, {"model_type": "llama", "attention_bias": True, "mlp_bias": True}, None),
    "llama_q4": (llama, {"model_type": "llama"}, (32, 4)),
    "qwen3_moe": (
        qwen3_moe,
        {
            "model_type": "qwen3_moe",
            "num_hidden_layers": 2,
            "head_dim": 16,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [0],
            "moe_intermediate_size": 32,
            "rope_theta": 10000.0,
            "norm_topk_prob": True,
        },
        None,
    ),
}


def main(out: Path, tokenizer: Path):
    for seed, (name, (module, extra, quant)) in enumerate(VARIANTS.items()):
        config = {**BASE, **extra}
        model = module.Model(module.ModelArgs.from_dict(config))
        mx.random.seed(seed)
        params = []
        for key, p in tree_flatten(model.parameters()):
            if "norm" in key:
                value = 1.0 + 0.1 * mx.random.normal(p.shape)
            else:
                value = 0.3 * mx.random.normal(p.shape)
            params.append((key, value.astype(mx.float32)))
        model.update(tree_unflatten(params))
        mx.eval(model.parameters())
        if quant is not None:
            model, config = quantize_model(model, config, quant[0], quant[1])
        path = out / name
        save_model(path, model)
        save_config(config, path / "config.json")
        for f in tokenizer.iterdir():
            if f.name.startswith(("tokenizer", "special_tokens")):
                shutil.copy(f, path / f.name)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
