"""The Mixture-of-Experts families served through the OpenAI API: tiny
random Qwen3-MoE and Mixtral checkpoints (`mlxd synth`, with SmolLM2's
tokenizer) answer chat and completion requests, streamed and whole, alone
and several at once in one batch."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Daemon, mlxd_bin

MODELS = ["tiny-moe-f32", "tiny-mixtral-f32"]
IGNORE_EOS = {"ignore_eos": True}


@pytest.fixture(scope="module")
def moe_daemon(workdir):
    args = []
    for preset in MODELS:
        path = workdir / preset
        subprocess.run(
            [str(mlxd_bin()), "synth", "--preset", preset, "--vocab", "49152", str(path)],
            check=True,
            capture_output=True,
        )
        args += ["--model", f"{preset}={path}"]
    d = Daemon(workdir, args, name="moe")
    yield d
    d.stop()


@pytest.mark.parametrize("model", MODELS)
def test_a_mixture_of_experts_model_answers_whole_and_streamed(moe_daemon, model):
    client = moe_daemon.client()
    messages = [{"role": "user", "content": "Name three colours."}]
    whole = client.chat.completions.create(
        model=model, messages=messages, max_tokens=8, temperature=0, extra_body=IGNORE_EOS
    )
    assert whole.model == model
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 8
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=8,
        temperature=0,
        stream=True,
        extra_body=IGNORE_EOS,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == whole.choices[0].message.content


@pytest.mark.parametrize("model", MODELS)
def test_concurrent_requests_to_a_mixture_of_experts_model_equal_them_alone(moe_daemon, model):
    client = moe_daemon.client()
    prompts = ["Once upon a time", "def fibonacci(n):", "The capital of France is", "In 1492,"]

    def complete(prompt):
        return client.completions.create(
            model=model, prompt=prompt, max_tokens=10, temperature=0, extra_body=IGNORE_EOS
        ).choices[0].text

    alone = [complete(p) for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(complete, prompts))
    assert together == alone
