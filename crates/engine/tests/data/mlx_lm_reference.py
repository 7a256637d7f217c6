"""Tiny random checkpoints saved by mlx-lm itself, and mlx-lm's outputs on them.

usage: mlx_lm_reference.py OUT_DIR

For each variant (family x dtype/quantization x tied/untied), OUT_DIR/<name>/
holds a checkpoint written with mlx_lm.utils.save_model/save_config, plus
  reference.safetensors  "logits": model(prompt[None]) for the 64-token prompt
  reference.json         prompt ids and the 48 greedy tokens of
                         mlx_lm.generate.generate_step
and OUT_DIR/variants.json lists the variants.
"""

import importlib
import json
import sys
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.generate import generate_step
from mlx_lm.utils import quantize_model, save_config, save_model

VOCAB = 256
PROMPT_LEN = 64
GREEDY_TOKENS = 48

BASE = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": VOCAB,
    "max_position_embeddings": 512,
}

# name: (model_type, extra config, quantization (group, bits) or None)
VARIANTS = {
    "llama_f32_tied": ("llama", {"tie_word_embeddings": True}, None),
    "llama_f32_untied_llama3_rope": (
        "llama",
        {
            "tie_word_embeddings": False,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        },
        None,
    ),
    "llama_q4_g32_tied": ("llama", {"tie_word_embeddings": True}, (32, 4)),
    "llama_q8_g64_untied": ("llama", {"tie_word_embeddings": False}, (64, 8)),
    "mistral_f32_untied": ("mistral", {"tie_word_embeddings": False, "rope_theta": 1e6}, None),
    "qwen2_f32_tied": ("qwen2", {"tie_word_embeddings": True}, None),
    "qwen2_q4_g64_mixed": ("qwen2", {"tie_word_embeddings": False}, (64, 4)),
    "qwen3_f32_untied": ("qwen3", {"tie_word_embeddings": False, "head_dim": 32, "rope_theta": 1e6}, None),
    "qwen3_q8_g32_tied": ("qwen3", {"tie_word_embeddings": True, "head_dim": 32, "rope_theta": 1e6}, (32, 8)),
}


def build(model_type, extra, seed):
    module = importlib.import_module(
        f"mlx_lm.models.{'llama' if model_type == 'mistral' else model_type}"
    )
    config = {"model_type": model_type, **BASE, **extra}
    args = module.ModelArgs.from_dict(config)
    model = module.Model(args)
    # Random values everywhere (norms near 1) so every tensor matters.
    mx.random.seed(seed)
    params = []
    for name, p in tree_flatten(model.parameters()):
        if "norm" in name:
            value = 1.0 + 0.1 * mx.random.normal(p.shape)
        else:
            value = 0.3 * mx.random.normal(p.shape)
        params.append((name, value.astype(mx.float32)))
    model.update(tree_unflatten(params))
    mx.eval(model.parameters())
    return model, config


def mixed_predicate(path, module):
    # One layer at 8 bits through a per-layer override, the rest at the default.
    if path == "model.layers.0.mlp.down_proj":
        return {"group_size": 32, "bits": 8}
    return True


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    mx.random.seed(1234)
    prompt = mx.random.randint(0, VOCAB, (PROMPT_LEN,)).astype(mx.int32)
    for seed, (name, (model_type, extra, quant)) in enumerate(VARIANTS.items()):
        model, config = build(model_type, extra, seed)
        if quant is not None:
            group, bits = quant
            predicate = mixed_predicate if name.endswith("mixed") else None
            model, config = quantize_model(
                model, config, group, bits, quant_predicate=predicate
            )
        path = out / name
        save_model(path, model)
        save_config(config, path / "config.json")
        logits = model(prompt[None])
        mx.save_safetensors(str(path / "reference.safetensors"), {"logits": logits})
        greedy = [
            int(t)
            for t, _ in generate_step(
                prompt, model, max_tokens=GREEDY_TOKENS, sampler=lambda x: mx.argmax(x, axis=-1)
            )
        ]
        (path / "reference.json").write_text(
            json.dumps({"prompt": prompt.tolist(), "greedy": greedy})
        )
    (out / "variants.json").write_text(json.dumps(sorted(VARIANTS)))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
