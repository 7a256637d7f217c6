"""The Mixture-of-Experts families served through the OpenAI API: tiny
random Qwen3-MoE and Mixtral checkpoints (`mlxd synth`, with SmolLM2's
tokenizer) answer chat and completion requests, streamed and whole, alone
and several at once in one batch."""

from __future__ import annotations

import subprocess

import pytest

from conftest import (
    Daemon,
    assert_answers_whole_and_streamed,
    assert_concurrent_equal_alone,
    mlxd_bin,
)

MODELS = ["tiny-moe-f32", "tiny-mixtral-f32"]


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
    assert_answers_whole_and_streamed(moe_daemon.client(), model)


@pytest.mark.parametrize("model", MODELS)
def test_concurrent_requests_to_a_mixture_of_experts_model_equal_them_alone(moe_daemon, model):
    assert_concurrent_equal_alone(moe_daemon.client(), model)