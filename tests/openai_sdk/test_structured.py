"""Structured outputs through the official OpenAI SDK: `response_format`
(`json_object`, a strict `json_schema`, `chat.completions.parse` with a
Pydantic model) and forced tool calls (`tool_choice` naming a function,
`required`), enforced by a grammar on the default model and on a tiny
random-weight checkpoint with Qwen3's tokenizer and chat template, where
only the grammar can make the output hold. Bad schemas and tool choices are
400s naming the parameter."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Annotated, Literal

import openai
import pytest
from pydantic import BaseModel, Field, StringConstraints

from conftest import DEFAULT_MODEL, ROOT, Daemon, default_model_path, mlxd_bin

QWEN = "qwen-tiny"
MODELS = [QWEN, DEFAULT_MODEL]
# The default model decodes at a few tokens a second on a CPU: its
# schemas are small and its limits short.
MAX_TOKENS = {QWEN: 400, DEFAULT_MODEL: 120}


@pytest.fixture(scope="module")
def qwen_dir(workdir):
    """A tiny random f32 model with Qwen3's tokenizer and chat template."""
    path = workdir / "qwen-tiny"
    tokenizer = ROOT / ".cache/test-data/npm/qwen3"
    assert (tokenizer / "tokenizer.json").is_file(), "run scripts/test-data.sh"
    subprocess.run(
        [str(mlxd_bin()), "synth", "--preset", "tiny-f32", "--vocab", "151936",
         "--tokenizer-from", str(tokenizer), "--seed", "3", str(path)],
        check=True, capture_output=True,
    )
    return path


@pytest.fixture(scope="module")
def structured(workdir, qwen_dir):
    d = Daemon(
        workdir,
        ["--model", f"{QWEN}={qwen_dir}", "--model", f"{DEFAULT_MODEL}={default_model_path()}"],
        name="structured",
    )
    yield d.client()
    d.stop()


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


class Widget(BaseModel):
    color: Literal["red", "green", "blue"]
    count: int = Field(ge=1, le=9)
    tags: list[Annotated[str, StringConstraints(max_length=6)]] = Field(max_length=2)
    ok: bool


@pytest.mark.parametrize("model", MODELS)
def test_parse_with_a_pydantic_model_returns_a_valid_instance(structured, model):
    r = structured.chat.completions.parse(
        model=model,
        messages=ask("Describe a widget: its color, a count from 1 to 9, tags, ok."),
        response_format=Widget,
        max_tokens=MAX_TOKENS[model],
        temperature=0,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    widget = choice.message.parsed
    assert isinstance(widget, Widget), choice.message.content
    assert 1 <= widget.count <= 9 and len(widget.tags) <= 2


SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"enum": ["yes", "no", "unsure"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
        "scores": {
            "type": "array",
            "items": {"type": "integer", "minimum": -3, "maximum": 3},
            "minItems": 1,
            "maxItems": 3,
        },
    },
    "required": ["answer", "confidence", "scores"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("model", MODELS)
def test_a_strict_json_schema_holds_enums_bounds_and_arrays(structured, model):
    for seed in (1, 2):
        r = structured.chat.completions.create(
            model=model,
            messages=ask("Is the sky blue? Answer with a confidence and scores."),
            response_format={"type": "json_schema",
                             "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}},
            max_tokens=MAX_TOKENS[model],
            temperature=0.8,
            seed=seed,
        )
        choice = r.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        v = json.loads(choice.message.content)
        assert set(v) == {"answer", "confidence", "scores"}
        assert v["answer"] in ("yes", "no", "unsure")
        assert 0 <= v["confidence"] <= 100
        assert 1 <= len(v["scores"]) <= 3 and all(-3 <= s <= 3 for s in v["scores"])


def test_a_streamed_schema_response_is_the_same_json(structured):
    args = dict(
        model=QWEN,
        messages=ask("Verdict?"),
        response_format={"type": "json_schema",
                         "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}},
        max_tokens=MAX_TOKENS[QWEN],
        temperature=0,
    )
    whole = structured.chat.completions.create(**args).choices[0].message.content
    text = "".join(
        c.choices[0].delta.content or ""
        for c in structured.chat.completions.create(stream=True, **args)
        if c.choices
    )
    assert text == whole and json.loads(text)["answer"] in ("yes", "no", "unsure")


@pytest.mark.parametrize("model", MODELS)
def test_json_object_output_is_a_json_object(structured, model):
    r = structured.chat.completions.create(
        model=model,
        messages=ask('Reply with a JSON object such as {"city": "Paris"}.'),
        response_format={"type": "json_object"},
        max_tokens=MAX_TOKENS[model] // 4,
        temperature=0,
    )
    choice = r.choices[0]
    text = choice.message.content
    assert text.startswith("{"), text
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:
        # Any object may be as long as it likes: cut at max_tokens, it is
        # still the start of one (no whitespace before the brace).
        assert choice.finish_reason == "length"


def test_completions_take_a_response_format(structured):
    r = structured.completions.create(
        model=QWEN,
        prompt="Verdict:",
        max_tokens=MAX_TOKENS[QWEN],
        temperature=0,
        extra_body={"response_format": {"type": "json_schema",
                                        "json_schema": {"name": "v", "schema": SCHEMA}}},
    )
    assert r.choices[0].finish_reason == "stop"
    assert json.loads(r.choices[0].text)["answer"] in ("yes", "no", "unsure")


TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"enum": ["Paris", "Oslo", "Lima"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    }},
    {"type": "function", "function": {
        "name": "get_time",
        "description": "Local time of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Paris", "Oslo", "Lima"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    }},
]

CALL = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.S)


def calls_of(message) -> list[tuple[str, dict]]:
    """(name, arguments) of each call: from `tool_calls` when the server
    parsed them, else from the Hermes envelope in the text."""
    if message.tool_calls:
        return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]
    found = CALL.findall(message.content or "")
    assert found, message.content
    assert CALL.sub("", message.content).strip() == "", message.content
    out = []
    for body in found:
        call = json.loads(body)
        assert set(call) == {"name", "arguments"}, body
        out.append((call["name"], call["arguments"]))
    return out


def valid_arguments(name: str, args: dict) -> bool:
    if name == "get_weather":
        return set(args) == {"city", "days"} and args["city"] in ("Paris", "Oslo", "Lima") \
            and 1 <= args["days"] <= 7
    return name == "get_time" and args == {"city": args.get("city")} \
        and args["city"] in ("Paris", "Oslo", "Lima")


@pytest.mark.parametrize("model", MODELS)
def test_a_named_tool_choice_forces_a_valid_call_to_that_function(structured, model):
    r = structured.chat.completions.create(
        model=model,
        messages=ask("What is the weather in Oslo for the next 3 days?"),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=MAX_TOKENS[model],
        temperature=0,
    )
    choice = r.choices[0]
    assert choice.finish_reason in ("stop", "tool_calls"), choice.message
    calls = calls_of(choice.message)
    assert len(calls) == 1 and calls[0][0] == "get_weather", calls
    assert valid_arguments(*calls[0]), calls


@pytest.mark.parametrize("model", MODELS)
def test_required_tool_choice_forces_exactly_one_valid_call_without_parallel_calls(
    structured, model
):
    r = structured.chat.completions.create(
        model=model,
        messages=ask("What time is it in Lima?"),
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=MAX_TOKENS[model],
        temperature=0.7,
        seed=4,
    )
    choice = r.choices[0]
    assert choice.finish_reason in ("stop", "tool_calls"), choice.message
    calls = calls_of(choice.message)
    assert len(calls) == 1, calls
    assert valid_arguments(*calls[0]), calls


def bad_request(call) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as e:
        call()
    assert e.value.status_code == 400
    return e.value


def test_an_invalid_schema_is_a_bad_request_naming_it(structured):
    for schema in ({"type": "strng"}, {"type": "integer", "minimum": 5, "maximum": 1}):
        e = bad_request(lambda: structured.chat.completions.create(
            model=QWEN, messages=ask("x"), max_tokens=4,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "bad", "schema": schema}},
        ))
        assert e.param == "response_format.json_schema.schema", e.message
    e = bad_request(lambda: structured.chat.completions.create(
        model=QWEN, messages=ask("x"), max_tokens=4,
        response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}},
    ))
    assert e.param == "response_format.json_schema.name"
    e = bad_request(lambda: structured.chat.completions.create(
        model=QWEN, messages=ask("x"), max_tokens=4, response_format={"type": "yaml"},
    ))
    assert e.param == "response_format.type"


def test_a_tool_choice_naming_an_unknown_function_is_a_bad_request(structured):
    e = bad_request(lambda: structured.chat.completions.create(
        model=QWEN, messages=ask("x"), max_tokens=4, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_stock_price"}},
    ))
    assert e.param == "tool_choice" and "get_stock_price" in e.message
    e = bad_request(lambda: structured.chat.completions.create(
        model=QWEN, messages=ask("x"), max_tokens=4, tool_choice="required",
    ))
    assert e.param == "tool_choice"


def test_a_forced_call_to_a_tool_with_a_malformed_schema_is_a_bad_request(structured):
    tools = [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "nmber"}}}}}]
    e = bad_request(lambda: structured.chat.completions.create(
        model=QWEN, messages=ask("x"), max_tokens=4, tools=tools, tool_choice="required",
    ))
    assert e.param == "tools[0].function.parameters", e.message
