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
from mlx_lm.utils import load_model, quantize_model, save_config, save_model

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

# name: (model_type, extra config, quantization (group, bits[, mode]) or None)
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
    # YaRN: a context stretched 4 times past 128 positions, with both
    # attention factors.
    "llama_f32_yarn": (
        "llama",
        {"tie_word_embeddings": False,
         "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                          "original_max_position_embeddings": 128, "beta_fast": 16.0,
                          "beta_slow": 1.0, "mscale": 1.2, "mscale_all_dim": 0.4}},
        None,
    ),
    # Sliding-window layers: a window of 8 over the 64-token prompt.
    "llama_f32_sliding8": (
        "llama",
        {"tie_word_embeddings": False, "sliding_window": 8,
         "layer_types": ["sliding_attention", "full_attention"]},
        None,
    ),
    "llama_q8_g64_untied": ("llama", {"tie_word_embeddings": False}, (64, 8)),
    "mistral_f32_untied": ("mistral", {"tie_word_embeddings": False, "rope_theta": 1e6}, None),
    "qwen2_f32_tied": ("qwen2", {"tie_word_embeddings": True}, None),
    "qwen2_q4_g64_mixed": ("qwen2", {"tie_word_embeddings": False}, (64, 4)),
    "qwen3_f32_untied": ("qwen3", {"tie_word_embeddings": False, "head_dim": 32, "rope_theta": 1e6}, None),
    "qwen3_q8_g32_tied": ("qwen3", {"tie_word_embeddings": True, "head_dim": 32, "rope_theta": 1e6}, (32, 8)),
    # The microscaling modes (floating-point codes, no biases).
    "qwen3_mxfp4_g32_untied": (
        "qwen3", {"tie_word_embeddings": False, "head_dim": 32, "rope_theta": 1e6}, (32, 4, "mxfp4")
    ),
    "llama_nvfp4_g16_tied": ("llama", {"tie_word_embeddings": True}, (16, 4, "nvfp4")),
    "qwen2_mxfp8_g32_untied": ("qwen2", {"tie_word_embeddings": False}, (32, 8, "mxfp8")),
}

# Phi-3: fused qkv and gate_up projections; LongRoPE over a partial
# rotary (a context stretched 4 times, so the attention factor is not 1)
# and plain RoPE, quantized with its head untied and tied.
PHI3_LONGROPE = {
    "partial_rotary_factor": 0.5,
    "original_max_position_embeddings": 128,
    "rope_scaling": {
        "type": "longrope",
        "long_factor": [1.0, 1.5, 3.0, 9.0],
        "short_factor": [1.0, 1.1, 1.2, 1.3],
    },
}
VARIANTS.update(
    {
        "phi3_f32_longrope_partial": ("phi3", {**PHI3_LONGROPE, "tie_word_embeddings": False}, None),
        "phi3_q4_g32_tied": ("phi3", {"tie_word_embeddings": True, "rope_theta": 5e5}, (32, 4)),
    }
)

# GLM-4.5/4.7 MoE: a dense first layer, then sigmoid routing with a
# selection bias, expert groups, renormalized and scaled weights and a
# shared expert, per-head q/k norms, q/k/v biases and partial rotary; and a
# flat 4-bit one (one group, no renormalization, no shared expert).
GLM4_MOE = {
    "num_hidden_layers": 3,
    "head_dim": 16,
    "moe_intermediate_size": 32,
    "rope_theta": 1e6,
    "rope_scaling": None,
    "partial_rotary_factor": 0.5,
    "tie_word_embeddings": False,
}
VARIANTS.update(
    {
        "glm4_moe_f32_e8_g4_k3": (
            "glm4_moe",
            {**GLM4_MOE, "n_routed_experts": 8, "num_experts_per_tok": 3, "n_group": 4,
             "topk_group": 2, "norm_topk_prob": True, "routed_scaling_factor": 2.5,
             "n_shared_experts": 1, "first_k_dense_replace": 1, "use_qk_norm": True,
             "attention_bias": True},
            None,
        ),
        "glm4_moe_q4_g32_e6_k2": (
            "glm4_moe",
            {**GLM4_MOE, "n_routed_experts": 6, "num_experts_per_tok": 2, "n_group": 1,
             "topk_group": 1, "norm_topk_prob": False, "routed_scaling_factor": 1.0,
             "n_shared_experts": None, "first_k_dense_replace": 0, "use_qk_norm": False,
             "attention_bias": False},
            (32, 4),
        ),
    }
)

# Gemma 3: sandwich norms with the (1 + w) offset, GELU MLPs, scaled
# embeddings, q/k norms, query_pre_attn_scalar, local layers with a window
# of 8 and their own RoPE base, global layers with linearly scaled RoPE; and
# the multimodal wrapper's text model, 4-bit with the head tied and the
# sizes mlx-lm's defaults give (head_dim 256, query_pre_attn_scalar 256).
VARIANTS.update(
    {
        "gemma3_text_f32_pattern3": (
            "gemma3_text",
            {"num_hidden_layers": 4, "head_dim": 16, "query_pre_attn_scalar": 24,
             "sliding_window": 8, "sliding_window_pattern": 3, "rope_theta": 1e6,
             "rope_local_base_freq": 1e4, "rope_scaling": {"factor": 8.0, "rope_type": "linear"}},
            None,
        ),
        "gemma3_q4_g32_nested_tied": (
            "gemma3",
            {"nest": True, "top": {"vocab_size": VOCAB}, "tie_head": True,
             "sliding_window": 16, "sliding_window_pattern": 2},
            (32, 4),
        ),
    }
)

# gpt-oss: attention sinks, biases everywhere, YaRN, sliding and full layers
# alternating, biased experts with the clipped SwiGLU under top-k-then-softmax
# routing; and the same with mxfp4 experts beside an 8-bit router (the
# family's quant_predicate), as mlx-community stores it.
GPT_OSS = {
    "num_hidden_layers": 4,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "head_dim": 16,
    "sliding_window": 8,
    "rope_theta": 150000.0,
    "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                     "original_max_position_embeddings": 128, "truncate": False},
}
VARIANTS.update(
    {
        "gpt_oss_f32": ("gpt_oss", GPT_OSS, None),
        "gpt_oss_mxfp4_g32": ("gpt_oss", GPT_OSS, (32, 4, "mxfp4")),
    }
)

# Gated DeltaNet hybrids (dense): linear-attention layers with every
# full_attention_interval-th layer full attention; two key heads shared by
# four value heads; partial rotary.
HYBRID = {
    "num_hidden_layers": 4,
    "head_dim": 16,
    "linear_num_value_heads": 4,
    "linear_num_key_heads": 2,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_conv_kernel_dim": 4,
}
QWEN3_NEXT_DENSE = {
    **HYBRID,
    "rope_theta": 10000.0,
    "partial_rotary_factor": 0.5,
    "num_experts": 0,
    "num_experts_per_tok": 0,
    "decoder_sparse_step": 1,
    "shared_expert_intermediate_size": 0,
    "mlp_only_layers": [],
    "moe_intermediate_size": 0,
}
QWEN3_5_ROPE = {"rope_parameters": {"type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}}
VARIANTS.update(
    {
        "qwen3_next_f32_interval2": (
            "qwen3_next",
            {**QWEN3_NEXT_DENSE, "full_attention_interval": 2, "tie_word_embeddings": False},
            None,
        ),
        "qwen3_next_q4_g64_interval3": (
            "qwen3_next",
            {**QWEN3_NEXT_DENSE, "num_hidden_layers": 3, "full_attention_interval": 3,
             "tie_word_embeddings": True},
            (64, 4),
        ),
        # Nested under text_config, as Qwen3.5 checkpoints are.
        "qwen3_5_f32_interval4_nested": (
            "qwen3_5",
            {**HYBRID, **QWEN3_5_ROPE, "full_attention_interval": 4,
             "tie_word_embeddings": False, "nest": True},
            None,
        ),
        # rope_parameters absent: mlx-lm's defaults (theta 1e5, a quarter rotates).
        "qwen3_5_q4_g32_interval2": (
            "qwen3_5",
            {**HYBRID, "full_attention_interval": 2, "tie_word_embeddings": True},
            (32, 4),
        ),
    }
)

# Mixture-of-Experts: expert counts that are not powers of two, top-k 1, 2
# and 3, norm_topk_prob on and off, dense layers by decoder_sparse_step and
# by mlp_only_layers, 4-bit experts beside an 8-bit router (the families'
# per-layer override), and checkpoints with one tensor per expert (the
# Hugging Face layout, stacked by the loader's sanitize).
QWEN3_MOE = {
    "head_dim": 16,
    "rope_theta": 1e6,
    "tie_word_embeddings": False,
    "moe_intermediate_size": 32,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
}
VARIANTS.update({
    "qwen3_moe_f32_e6_k3_norm": (
        "qwen3_moe",
        {**QWEN3_MOE, "num_experts": 6, "num_experts_per_tok": 3, "norm_topk_prob": True},
        None,
    ),
    "qwen3_moe_f32_e5_k1_step2_hf": (
        "qwen3_moe",
        {**QWEN3_MOE, "num_experts": 5, "num_experts_per_tok": 1, "norm_topk_prob": False,
         "decoder_sparse_step": 2, "num_hidden_layers": 3},
        None,
    ),
    "qwen3_moe_f32_e7_k2_mlp_only": (
        "qwen3_moe",
        {**QWEN3_MOE, "num_experts": 7, "num_experts_per_tok": 2, "norm_topk_prob": False,
         "mlp_only_layers": [1], "num_hidden_layers": 3, "tie_word_embeddings": True},
        None,
    ),
    "qwen3_moe_q4_g64_gate8": (
        "qwen3_moe",
        {**QWEN3_MOE, "num_experts": 6, "num_experts_per_tok": 2, "norm_topk_prob": True,
         "moe_intermediate_size": 64},
        (64, 4),
    ),
    # Experts in mxfp4 (gpt-oss's format), through the gathered product.
    "qwen3_moe_mxfp4_g32_e6_k2": (
        "qwen3_moe",
        {**QWEN3_MOE, "num_experts": 6, "num_experts_per_tok": 2, "norm_topk_prob": True},
        (32, 4, "mxfp4"),
    ),
    "mixtral_f32_e5_k2": ("mixtral", {"num_local_experts": 5, "num_experts_per_tok": 2}, None),
    "mixtral_f32_e6_k3_tied_hf": (
        "mixtral",
        {"num_local_experts": 6, "num_experts_per_tok": 3, "tie_word_embeddings": True},
        None,
    ),
    "mixtral_f32_e3_k1": (
        "mixtral", {"num_local_experts": 3, "num_experts_per_tok": 1, "rope_theta": 1e4}, None
    ),
    "mixtral_q4_g32_gate8_hf": ("mixtral", {"num_local_experts": 6, "num_experts_per_tok": 2}, (32, 4)),
})

# The hybrids with Mixture-of-Experts layers: Qwen3-Next's sparse layers by
# decoder_sparse_step and mlp_only_layers, Qwen3.5-MoE's in every layer, each
# with a shared expert and its gate (8 bits beside 4-bit experts when
# quantized, the families' quant_predicate); Qwen3.5-MoE's experts also in
# the Hugging Face layout (gate and up fused in one tensor per layer).
HYBRID_MOE = {"moe_intermediate_size": 32, "shared_expert_intermediate_size": 64}
VARIANTS.update({
    "qwen3_next_moe_f32_e6_k2_step2": (
        "qwen3_next",
        {**QWEN3_NEXT_DENSE, **HYBRID_MOE, "full_attention_interval": 2,
         "tie_word_embeddings": False, "num_experts": 6, "num_experts_per_tok": 2,
         "decoder_sparse_step": 2, "mlp_only_layers": [3]},
        None,
    ),
    "qwen3_next_moe_q4_g64_e5_k3_norm": (
        "qwen3_next",
        {**QWEN3_NEXT_DENSE, **HYBRID_MOE, "moe_intermediate_size": 64,
         "full_attention_interval": 2, "tie_word_embeddings": True, "num_experts": 5,
         "num_experts_per_tok": 3, "norm_topk_prob": True},
        (64, 4),
    ),
    "qwen3_5_moe_f32_e5_k2_nested_hf": (
        "qwen3_5_moe",
        {**HYBRID, **QWEN3_5_ROPE, **HYBRID_MOE, "full_attention_interval": 2,
         "tie_word_embeddings": False, "num_experts": 5, "num_experts_per_tok": 2,
         "nest": True},
        None,
    ),
    "qwen3_5_moe_q4_g32_e6_k1": (
        "qwen3_5_moe",
        {**HYBRID, **HYBRID_MOE, "full_attention_interval": 4, "tie_word_embeddings": True,
         "num_experts": 6, "num_experts_per_tok": 1, "norm_topk_prob": False},
        (32, 4),
    ),
})

# DeepSeek-V3: multi-head latent attention (a low-rank query, a compressed
# KV of 32 features and a 16-feature rotary key shared by the heads, the
# per-head projections absorbed), YaRN with its softmax factor, a dense
# first layer, then sigmoid routing with expert groups and a shared expert;
# in the Hugging Face layout (kv_b_proj whole, one tensor per expert); and
# a 4-bit one with a direct query projection and flat routing.
DEEPSEEK_V3 = {
    "num_hidden_layers": 3,
    "kv_lora_rank": 32,
    "q_lora_rank": 48,
    "qk_rope_head_dim": 16,
    "qk_nope_head_dim": 32,
    "v_head_dim": 16,
    "moe_intermediate_size": 32,
    "rope_theta": 10000.0,
}
VARIANTS.update({
    "deepseek_v3_f32_e8_g4_k3_yarn_hf": (
        "deepseek_v3",
        {**DEEPSEEK_V3, "n_routed_experts": 8, "num_experts_per_tok": 3, "n_group": 4,
         "topk_group": 2, "norm_topk_prob": True, "routed_scaling_factor": 2.5,
         "n_shared_experts": 1, "first_k_dense_replace": 1,
         "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128,
                          "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0,
                          "mscale_all_dim": 1.0}},
        None,
    ),
    "deepseek_v3_q4_g32_e6_k2": (
        "deepseek_v3",
        {**DEEPSEEK_V3, "q_lora_rank": None, "n_routed_experts": 6, "num_experts_per_tok": 2,
         "n_group": 1, "topk_group": 1, "norm_topk_prob": False, "n_shared_experts": None,
         "first_k_dense_replace": 0},
        (32, 4),
    ),
})

# Dynamic NTK: trained for 48 positions, so the 64-token prompt and every
# decoding step after it rotate with a grown θ. (New variants go last: a
# variant's seed is its place in this table.)
VARIANTS["llama_f32_dynamic48"] = (
    "llama",
    {"tie_word_embeddings": False, "max_position_embeddings": 48,
     "rope_scaling": {"type": "dynamic", "factor": 2.0}},
    None,
)

# Variants quantized with a predicate of their own (else the family's
# `quant_predicate`: qwen3_moe keeps its router at 8 bits).
QUANT_PREDICATES = {
    "mixtral_q4_g32_gate8_hf": lambda path, module: (
        {"group_size": 64, "bits": 8} if path.endswith("block_sparse_moe.gate") else True
    ),
}

# Per-expert tensor names of the Hugging Face layout, by family:
# (stacked block, per-expert prefix, [(stacked name, per-expert name)]).
EXPERT_LAYOUT = {
    "qwen3_moe": ("mlp.switch_mlp", "mlp.experts", [(n, n) for n in ("gate_proj", "up_proj", "down_proj")]),
    "deepseek_v3": ("mlp.switch_mlp", "mlp.experts", [(n, n) for n in ("gate_proj", "up_proj", "down_proj")]),
    "mixtral": (
        "block_sparse_moe.switch_mlp",
        "block_sparse_moe.experts",
        [("gate_proj", "w1"), ("down_proj", "w2"), ("up_proj", "w3")],
    ),
}


def fuse_gate_up(weights):
    """Qwen3.5-MoE's Hugging Face layout: per layer, the gate and up stacks
    as one `experts.gate_up_proj` [E, 2 * I, D] and `experts.down_proj`."""
    out = {}
    for key, value in weights.items():
        if ".mlp.switch_mlp." not in key:
            out[key] = value
            continue
        layer, name = key.split(".mlp.switch_mlp.")
        if name == "gate_proj.weight":
            up = weights[f"{layer}.mlp.switch_mlp.up_proj.weight"]
            out[f"{layer}.mlp.experts.gate_up_proj"] = mx.concatenate([value, up], axis=1)
        elif name == "down_proj.weight":
            out[f"{layer}.mlp.experts.down_proj"] = value
    return out


def unstack_experts(path, model_type, model):
    """Rewrites a saved checkpoint with one tensor per expert, as Hugging Face
    checkpoints store them, and checks that mlx-lm loads it back unchanged."""
    weights = mx.load(str(path / "model.safetensors"))
    if model_type == "qwen3_5_moe":
        out = fuse_gate_up(weights)
    else:
        out = per_expert(weights, *EXPERT_LAYOUT[model_type])
    if model_type == "deepseek_v3":
        out = join_kv_b_proj(out, model.args)
    mx.save_safetensors(str(path / "model.safetensors"), out, metadata={"format": "mlx"})
    index = path / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data["weight_map"] = {k: "model.safetensors" for k in sorted(out)}
        index.write_text(json.dumps(data, indent=4))
    want = dict(tree_flatten(model.parameters()))
    got = dict(tree_flatten(load_model(path)[0].parameters()))
    assert sorted(want) == sorted(got)
    assert all(mx.array_equal(want[k], got[k]).item() for k in want)


def join_kv_b_proj(weights, args):
    """DeepSeek-V3's Hugging Face layout: each layer's absorbed embed_q
    [H, rank, nope] and unembed_out [H, v, rank] as one kv_b_proj
    [H * (nope + v), rank]."""
    out = {}
    for key, value in weights.items():
        if key.endswith(".embed_q.weight"):
            prefix = key[: -len(".embed_q.weight")]
            wv = weights[f"{prefix}.unembed_out.weight"]
            joined = mx.concatenate([value.swapaxes(-1, -2), wv], axis=1)
            out[f"{prefix}.kv_b_proj.weight"] = joined.reshape(-1, args.kv_lora_rank)
        elif not key.endswith(".unembed_out.weight"):
            out[key] = value
    return out


def per_expert(weights, stacked, each, names):
    out = {}
    for key, value in weights.items():
        for name, expert_name in names:
            marker = f".{stacked}.{name}."
            if marker in key:
                layer, part = key.split(marker)
                for e in range(value.shape[0]):
                    out[f"{layer}.{each}.{e}.{expert_name}.{part}"] = value[e]
                break
        else:
            out[key] = value
    return out


def build(model_type, extra, seed):
    module = importlib.import_module(
        f"mlx_lm.models.{'llama' if model_type == 'mistral' else model_type}"
    )
    extra = dict(extra)
    top = extra.pop("top", {})
    tie_head = extra.pop("tie_head", False)
    if extra.pop("nest", False):
        text = {"model_type": f"{model_type}_text", **BASE, **extra}
        config = {"model_type": model_type, "text_config": text, **top}
    else:
        config = {"model_type": model_type, **BASE, **extra}
    args = module.ModelArgs.from_dict(config)
    model = module.Model(args)
    if tie_head:
        # Gemma ties its head by leaving lm_head out of the checkpoint.
        lm = getattr(model, "language_model", model)
        lm.tie_word_embeddings = True
        lm.pop("lm_head")
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
            group, bits, mode = (*quant, "affine")[:3]
            predicate = QUANT_PREDICATES.get(name) or (
                mixed_predicate if name.endswith("mixed") else None
            )
            model, config = quantize_model(
                model, config, group, bits, mode=mode, quant_predicate=predicate
            )
        path = out / name
        save_model(path, model)
        save_config(config, path / "config.json")
        if name.endswith("_hf"):
            unstack_experts(path, model_type, model)
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
