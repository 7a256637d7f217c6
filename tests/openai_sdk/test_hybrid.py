"""The Gated DeltaNet hybrids served through the OpenAI API: tiny random
Qwen3-Next and Qwen3.5 checkpoints written by mlx-lm itself (the latter
nested under `text_config`, its tensors under `language_model.`), with
SmolLM2's tokenizer (copied from a `mlxd synth` checkpoint), answer chat and
completion requests, streamed and whole, alone and several at once in one
batch; a follow-up turn that resends the conversation answers the same with
the prompt cache on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import (
    IGNORE_EOS,
    ROOT,
    Daemon,
    assert_answers_whole_and_streamed,
    assert_concurrent_equal_alone,
    mlxd_bin,
)

VOCAB = 49152
MODELS = {
    "tiny-qwen3-next": ("qwen3_next", {"full_attention_interval": 2, "rope_theta": 10000.0,
                                        "partial_rotary_factor": 0.5, "num_experts": 0,
                                        "num_experts_per_tok": 0, "decoder_sparse_step": 1,
                                        "shared_expert_intermediate_size": 0,
                                        "mlp_only_layers": [], "moe_intermediate_size": 0}),
    "tiny-qwen3.5": ("qwen3_5", {"full_attention_interval": 4, "nest": True}),
}

WRITE = """
import json, sys
import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.utils import save_config, save_model
import importlib
out, model_type, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
base = {"hidden_size": 64, "num_hidden_layers": 4, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "rms_norm_eps": 1e-5, "vocab_size": %d, "max_position_embeddings": 2048,
        "tie_word_embeddings": True, "linear_num_value_heads": 4, "linear_num_key_heads": 2,
        "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_conv_kernel_dim": 4}
if extra.pop("nest", False):
    config = {"model_type": model_type,
              "text_config": {"model_type": model_type + "_text", **base, **extra}}
else:
    config = {"model_type": model_type, **base, **extra}
module = importlib.import_module("mlx_lm.models." + model_type)
model = module.Model(module.ModelArgs.from_dict(config))
mx.random.seed(3)
params = [(n, (1.0 + 0.1 * mx.random.normal(p.shape)) if "norm" in n else 0.3 * mx.random.normal(p.shape))
          for n, p in tree_flatten(model.parameters())]
model.update(tree_unflatten(params))
save_model(out, model)
save_config(config, out + "/config.json")
""" % VOCAB


@pytest.fixture(scope="module")
def hybrid_daemon(workdir):
    tokenizer = workdir / "tokenizer-source"
    subprocess.run(
        [str(mlxd_bin()), "synth", "--preset", "tiny-f32", "--vocab", str(VOCAB), str(tokenizer)],
        check=True,
        capture_output=True,
    )
    python = ROOT / ".venv/bin/python"
    args = []
    for name, (model_type, extra) in MODELS.items():
        path = workdir / name
        subprocess.run(
            [str(python if python.exists() else sys.executable), "-c", WRITE, str(path),
             model_type, json.dumps(extra)],
            check=True,
            capture_output=True,
        )
        for f in tokenizer.iterdir():
            if f.name.startswith(("tokenizer", "generation_config", "special_tokens")):
                shutil.copy(f, path / f.name)
        args += ["--model", f"{name}={path}"]
    d = Daemon(workdir, args, name="hybrid")
    yield d
    d.stop()


@pytest.mark.parametrize("model", list(MODELS))
def test_a_hybrid_model_answers_whole_and_streamed(hybrid_daemon, model):
    assert_answers_whole_and_streamed(hybrid_daemon.client(), model)


@pytest.mark.parametrize("model", list(MODELS))
def test_concurrent_requests_to_a_hybrid_model_equal_them_alone(hybrid_daemon, model):
    assert_concurrent_equal_alone(hybrid_daemon.client(), model)


@pytest.mark.parametrize("model", list(MODELS))
def test_a_follow_up_turn_answers_the_same_from_the_prompt_cache(hybrid_daemon, model):
    client = hybrid_daemon.client()
    history = [{"role": "user", "content": "Tell me a short story about a lighthouse keeper."}]
    first = client.chat.completions.create(
        model=model, messages=history, max_tokens=12, temperature=0, extra_body=IGNORE_EOS
    )
    follow = history + [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And then?"},
    ]
    again = [
        client.chat.completions.create(
            model=model, messages=follow, max_tokens=8, temperature=0, extra_body=IGNORE_EOS
        ).choices[0].message.content
        for _ in range(2)
    ]
    assert again[0] == again[1]
