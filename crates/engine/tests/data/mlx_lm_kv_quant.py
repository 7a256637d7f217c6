"""Tiny random checkpoints and mlx-lm's greedy decoding of them with a
quantized KV cache (mlx_lm.generate.generate_step with kv_bits 8 and 4,
quantized_kv_start=0), for the engine's quantized-KV parity tests.

usage: mlx_lm_kv_quant.py OUT_DIR

For each variant OUT_DIR/<name>/ holds a checkpoint written with
mlx_lm.utils.save_model/save_config, plus
  reference.json         prompt ids, the prefill chunk size, the KV group
                         size, and per run ("fp", "8", "4") its greedy tokens
  reference.safetensors  per run, "logprobs_<run>": the log-probabilities
                         generate_step gave with its last token
and OUT_DIR/variants.json lists the variants. OUT_DIR/llama_sliding/ is a
checkpoint only (a sliding-window layer, whose rotating cache mlx-lm does
not quantize).
"""

import json
import sys
from pathlib import Path

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.utils import save_config, save_model

sys.path.insert(0, str(Path(__file__).parent))
from mlx_lm_reference import QWEN3_NEXT_DENSE, build  # noqa: E402

VOCAB = 256
PROMPT_LEN = 40
GREEDY_TOKENS = 32
# Prefill chunks of 16: the second and third chunks attend over a cache
# already quantized (a causal mask over packed keys).
PREFILL_STEP = 16

BASE = {
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "rms_norm_eps": 1e-5,
    "vocab_size": VOCAB,
    "max_position_embeddings": 512,
}

# name: (model_type, extra config, kv_group_size)
VARIANTS = {
    # Grouped queries (4 query heads on 2 KV heads) of 32 dims, groups of 32.
    "llama_gqa_d32": (
        "llama",
        {**BASE, "hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
         "tie_word_embeddings": True},
        32,
    ),
    # One query head per KV head, 64 dims with per-head q/k norms, groups of 64.
    "qwen3_d64": (
        "qwen3",
        {**BASE, "hidden_size": 64, "num_attention_heads": 2, "num_key_value_heads": 2,
         "head_dim": 64, "rope_theta": 1e6, "tie_word_embeddings": False},
        64,
    ),
    # A hybrid: Gated DeltaNet layers (their recurrent state stays as it
    # is) between gated full-attention layers of 32 dims (quantized).
    "qwen3_next_d32": (
        "qwen3_next",
        {**QWEN3_NEXT_DENSE, "hidden_size": 64, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 32, "full_attention_interval": 2,
         "intermediate_size": 128, "tie_word_embeddings": False, "vocab_size": VOCAB,
         "rms_norm_eps": 1e-5, "max_position_embeddings": 512},
        32,
    ),
}


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    mx.random.seed(4321)
    prompt = mx.random.randint(0, VOCAB, (PROMPT_LEN,)).astype(mx.int32)
    for seed, (name, (model_type, extra, group)) in enumerate(VARIANTS.items()):
        model, config = build(model_type, extra, 100 + seed)
        path = out / name
        save_model(path, model)
        save_config(config, path / "config.json")
        runs, logprobs = {}, {}
        for run, bits in (("fp", None), ("8", 8), ("4", 4)):
            tokens, last = [], None
            for t, lp in generate_step(
                prompt,
                model,
                max_tokens=GREEDY_TOKENS,
                sampler=lambda x: mx.argmax(x, axis=-1),
                prefill_step_size=PREFILL_STEP,
                kv_bits=bits,
                kv_group_size=group,
                quantized_kv_start=0,
            ):
                tokens.append(int(t))
                last = lp
            runs[run] = tokens
            logprobs[f"logprobs_{run}"] = last
        mx.save_safetensors(str(path / "reference.safetensors"), logprobs)
        (path / "reference.json").write_text(
            json.dumps(
                {
                    "prompt": prompt.tolist(),
                    "prefill_step": PREFILL_STEP,
                    "kv_group_size": group,
                    "greedy": runs,
                }
            )
        )
    (out / "variants.json").write_text(json.dumps(sorted(VARIANTS)))
    model, config = build(
        "llama",
        {**VARIANTS["llama_gqa_d32"][1], "sliding_window": 8,
         "layer_types": ["sliding_attention", "full_attention"]},
        200,
    )
    save_model(out / "llama_sliding", model)
    save_config(config, out / "llama_sliding" / "config.json")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
