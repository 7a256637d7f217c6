"""Tool calls and reasoning through the official SDK against a real daemon
whose model is a tiny random checkpoint with the real Qwen3 tokenizer and
chat template (`mlxd synth --tokenizer-from`).

Random weights call no tools of their own accord, so these tests make the
output certain honestly: `tool_choice: "required"` forces a call through
grammar-constrained sampling, and the call comes back as `tool_calls`,
whole and assembled from streamed deltas; a `<think>` token forced by
`logit_bias` shows reasoning reaching `reasoning_content`; a tool-result
round trip is rendered by the template; bad tool definitions are 400s. The
parsers themselves are proven by the engine's tests on real templates.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import openai
import pytest

from conftest import ROOT, Daemon, mlxd_bin

QWEN3_TOKENIZER = ROOT / ".cache/test-data/npm/qwen3"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def qwen_dir(workdir) -> Path:
    if not (QWEN3_TOKENIZER / "tokenizer.json").is_file():
        pytest.exit("the Qwen3 tokenizer is missing: run scripts/test-data.sh", returncode=2)
    path = workdir / "tiny-qwen3"
    subprocess.run(
        [str(mlxd_bin()), "synth", "--preset", "tiny-f32", "--vocab", "151936",
         "--tokenizer-from", str(QWEN3_TOKENIZER), str(path)],
        check=True, capture_output=True,
    )
    return path


@pytest.fixture(scope="module")
def qwen(workdir, qwen_dir):
    d = Daemon(workdir, ["--model", f"qwen={qwen_dir}"], name="tools")
    yield d.client()
    d.stop()


def token_id(model_dir: Path, text: str) -> int:
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    return next(t["id"] for t in tokenizer["added_tokens"] if t["content"] == text)


def test_a_think_block_reaches_reasoning_content_whole_and_streamed(qwen, qwen_dir):
    think = token_id(qwen_dir, "<think>")
    forced = {"logit_bias": {str(think): 100}, "max_tokens": 4, "temperature": 0,
              "extra_body": {"ignore_eos": True}}
    r = qwen.chat.completions.create(model="qwen", messages=QUESTION, **forced)
    message = r.choices[0].message
    # The first <think> opens the block; the rest is its text.
    assert message.reasoning_content == "<think>" * 3
    assert message.content == ""
    assert r.choices[0].finish_reason == "length"
    chunks = list(qwen.chat.completions.create(model="qwen", messages=QUESTION, stream=True,
                                               **forced))
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or ""
                        for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert (reasoning, content) == ("<think>" * 3, "")


def test_a_tool_result_round_trip_is_rendered_by_the_template(qwen):
    def ask(result: str):
        return qwen.chat.completions.create(
            model="qwen",
            tools=TOOLS,
            max_tokens=2,
            temperature=0,
            messages=[
                *QUESTION,
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": result},
            ],
        )

    short = ask("sunny")
    long = ask("sunny, 24 degrees, a light breeze from the west and no rain until Friday")
    assert short.choices[0].message.role == "assistant"
    # The tool's result is in the prompt the model read.
    assert long.usage.prompt_tokens > short.usage.prompt_tokens + 10


def test_malformed_tools_and_an_unknown_tool_choice_are_bad_requests(qwen):
    bad = [{"type": "function", "function": {"name": "f", "parameters": "not a schema"}}]
    with pytest.raises(openai.BadRequestError) as e:
        qwen.chat.completions.create(model="qwen", messages=QUESTION, tools=bad)
    assert e.value.param == "tools[0].function.parameters"
    with pytest.raises(openai.BadRequestError) as e:
        qwen.chat.completions.create(
            model="qwen", messages=QUESTION, tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        )
    assert e.value.param == "tool_choice"


def test_tool_choice_none_gives_text_without_tool_calls(qwen):
    r = qwen.chat.completions.create(model="qwen", messages=QUESTION, tools=TOOLS,
                                     tool_choice="none", max_tokens=4, temperature=0)
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason in ("stop", "length")


def test_streamed_tool_calls_assemble_from_deltas(qwen):
    # The grammar forces a call whatever the weights; an enum keeps its
    # arguments short.
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "The current weather in a city.",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["city"],
                       "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}}}}}]
    request = {"model": "qwen", "messages": QUESTION, "tools": tools,
               "tool_choice": "required", "parallel_tool_calls": False, "max_tokens": 200,
               "temperature": 0}
    whole = qwen.chat.completions.create(**request)
    calls = whole.choices[0].message.tool_calls
    assert whole.choices[0].finish_reason == "tool_calls", whole.choices[0]
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments)["city"] in ("Paris", "Rome")
    assert calls[0].id.startswith("call_")
    assembled: dict[int, dict] = {}
    finish = None
    for chunk in qwen.chat.completions.create(stream=True, **request):
        if not chunk.choices:
            continue
        finish = chunk.choices[0].finish_reason or finish
        for d in chunk.choices[0].delta.tool_calls or []:
            call = assembled.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = call["id"] or d.id
            call["name"] += d.function.name or ""
            call["arguments"] += d.function.arguments or ""
    assert finish == "tool_calls"
    assert list(assembled) == [0]
    got = assembled[0]
    assert got["name"] == "get_weather" and got["id"].startswith("call_")
    assert json.loads(got["arguments"]) == json.loads(calls[0].function.arguments)
