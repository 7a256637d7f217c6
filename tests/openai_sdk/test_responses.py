"""The Responses API (`/v1/responses`) through the official OpenAI SDK
against a real daemon: `responses.create` and `responses.stream` on the
default model (it knows Paris), the streamed event sequence, a function
tool round trip forced by `tool_choice` on a tiny random checkpoint with
Qwen3's tokenizer and chat template (only the grammar can make its output a
call), `text.format` json_schema (and `responses.parse` with a Pydantic
model), `previous_response_id` (its prompt equals
the same conversation sent whole), retrieve / input items / delete over a
store of four, error shapes, and a Codex-shaped request (fixture) replayed
as a well-formed stream."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field

from conftest import DEFAULT_MODEL, ROOT, Daemon, default_model_path, http_json, mlxd_bin

QWEN = "qwen-tiny"
STORE_MAX = 4
FIXTURES = Path(__file__).resolve().parent / "fixtures"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "additionalProperties": False,
        "required": ["city"],
        "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
    },
}
QUESTION = "What is the weather in Paris?"


@pytest.fixture(scope="module")
def qwen_dir(workdir) -> Path:
    """A tiny random f32 model with Qwen3's tokenizer and chat template."""
    path = workdir / "qwen-tiny-responses"
    tokenizer = ROOT / ".cache/test-data/npm/qwen3"
    assert (tokenizer / "tokenizer.json").is_file(), "run scripts/test-data.sh"
    subprocess.run(
        [str(mlxd_bin()), "synth", "--preset", "tiny-f32", "--vocab", "151936",
         "--tokenizer-from", str(tokenizer), str(path)],
        check=True, capture_output=True,
    )
    return path


@pytest.fixture(scope="module")
def daemon(workdir, qwen_dir):
    d = Daemon(
        workdir,
        ["--model", f"{QWEN}={qwen_dir}", "--model", f"{DEFAULT_MODEL}={default_model_path()}",
         "--responses-store-max", str(STORE_MAX)],
        name="responses",
    )
    yield d
    d.stop()


@pytest.fixture(scope="module")
def client(daemon) -> openai.OpenAI:
    return daemon.client()


def check_sequence(events: list) -> None:
    """Numbered from 0, opened by created/in_progress, every item added is
    done with the text its deltas add up to, and one terminal event last."""
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert sum(k in ("response.completed", "response.incomplete", "response.failed")
               for k in kinds) == 1
    added = [e.output_index for e in events if e.type == "response.output_item.added"]
    done = [e.output_index for e in events if e.type == "response.output_item.done"]
    assert added == done == list(range(len(events[-1].response.output)))
    for e in events:
        if e.type in ("response.output_text.done", "response.reasoning_text.done"):
            delta = e.type.replace(".done", ".delta")
            text = "".join(d.delta for d in events
                           if d.type == delta and d.item_id == e.item_id)
            assert text == e.text
        if e.type == "response.function_call_arguments.done":
            args = "".join(d.delta for d in events
                           if d.type == "response.function_call_arguments.delta"
                           and d.item_id == e.item_id)
            assert args == e.arguments


def test_create_answers_with_the_default_model(client):
    r = client.responses.create(model=DEFAULT_MODEL, input="What is the capital of France?",
                                temperature=0, max_output_tokens=30)
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status == "completed" and r.model == DEFAULT_MODEL
    assert "Paris" in r.output_text
    message = r.output[-1]
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    assert r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 30
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


def test_stream_sends_the_sdk_event_sequence_and_the_same_text(client):
    request = {"model": DEFAULT_MODEL, "input": "What is the capital of France?",
               "instructions": "Answer in one sentence.", "temperature": 0,
               "max_output_tokens": 30}
    with client.responses.stream(**request) as stream:
        events = list(stream)
        final = stream.get_final_response()
    check_sequence(events)
    kinds = [e.type for e in events]
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert final.status == "completed" and final.instructions == "Answer in one sentence."
    whole = client.responses.create(**request)
    assert final.output_text == whole.output_text
    assert "Paris" in final.output_text


def test_running_out_of_tokens_is_incomplete(client):
    request = {"model": DEFAULT_MODEL, "input": "Write a long story about a dragon.",
               "temperature": 0, "max_output_tokens": 5}
    r = client.responses.create(**request)
    assert r.status == "incomplete"
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 5
    events = list(client.responses.create(stream=True, **request))
    check_sequence(events)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.output_text == r.output_text


def test_a_forced_function_call_round_trip(client):
    first = client.responses.create(model=QWEN, input=QUESTION, tools=[WEATHER],
                                    tool_choice={"type": "function", "name": "get_weather"},
                                    temperature=0, max_output_tokens=100)
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather" and call.status == "completed"
    assert call.id.startswith("fc_") and call.call_id.startswith("call_")
    assert json.loads(call.arguments)["city"] in ("Paris", "Rome")
    result = {"type": "function_call_output", "call_id": call.call_id,
              "output": "sunny, 24 degrees"}
    history = [{"role": "user", "content": QUESTION},
               {"type": "function_call", "call_id": call.call_id, "name": call.name,
                "arguments": call.arguments}]
    answer = client.responses.create(model=QWEN, input=[*history, result], tools=[WEATHER],
                                     temperature=0, max_output_tokens=8)
    assert answer.output
    # The call and its result are in the prompt the model read.
    assert answer.usage.input_tokens > first.usage.input_tokens + 10
    # The same turn continued from the stored response reads the same prompt.
    continued = client.responses.create(model=QWEN, previous_response_id=first.id,
                                        input=[result], tools=[WEATHER], temperature=0,
                                        max_output_tokens=8)
    assert continued.previous_response_id == first.id
    assert continued.usage.input_tokens == answer.usage.input_tokens
    assert continued.output_text == answer.output_text


def test_a_streamed_function_call(client):
    with client.responses.stream(model=QWEN, input=QUESTION, tools=[WEATHER],
                                 tool_choice="required", parallel_tool_calls=False,
                                 temperature=0, max_output_tokens=100) as stream:
        events = list(stream)
        final = stream.get_final_response()
    check_sequence(events)
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    [call] = [o for o in final.output if o.type == "function_call"]
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == call.arguments and done.name == "get_weather"
    assert json.loads(call.arguments)["city"] in ("Paris", "Rome")


def test_text_format_json_schema_holds(client):
    schema = {"type": "object", "additionalProperties": False, "required": ["city", "rank"],
              "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]},
                             "rank": {"type": "integer", "enum": [1, 2, 3]}}}
    fmt = {"type": "json_schema", "name": "city", "schema": schema, "strict": True}
    r = client.responses.create(model=QWEN, input="Name a city.", text={"format": fmt},
                                temperature=0, max_output_tokens=200)
    value = json.loads(r.output_text)
    assert value["city"] in ("Paris", "Rome") and value["rank"] in (1, 2, 3)
    assert set(value) == {"city", "rank"}
    assert r.text.format.type == "json_schema" and r.text.format.name == "city"


class Widget(BaseModel):
    color: Literal["red", "green", "blue"]
    count: int = Field(ge=1, le=9)


def test_responses_parse_fills_a_pydantic_model(client):
    r = client.responses.parse(model=QWEN, input="Describe a widget.", text_format=Widget,
                               temperature=0, max_output_tokens=200)
    widget = r.output_parsed
    assert isinstance(widget, Widget)
    assert widget.color in ("red", "green", "blue") and 1 <= widget.count <= 9


def test_previous_response_id_continues_the_conversation(client):
    first = client.responses.create(model=DEFAULT_MODEL, input="What is the capital of France?",
                                    temperature=0, max_output_tokens=20)
    follow = client.responses.create(model=DEFAULT_MODEL, previous_response_id=first.id,
                                     input="And of Italy?", temperature=0, max_output_tokens=20)
    whole = client.responses.create(
        model=DEFAULT_MODEL, temperature=0, max_output_tokens=20,
        input=[{"role": "user", "content": "What is the capital of France?"},
               {"role": "assistant", "content": first.output_text},
               {"role": "user", "content": "And of Italy?"}],
    )
    assert follow.usage.input_tokens == whole.usage.input_tokens
    assert follow.output_text == whole.output_text
    # Not stored: nothing to continue.
    unstored = client.responses.create(model=QWEN, input="hi", store=False, max_output_tokens=2)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model=QWEN, previous_response_id=unstored.id, input="again")
    assert e.value.param == "previous_response_id"
    assert e.value.code == "previous_response_not_found"


def test_retrieve_list_input_items_and_delete(client, daemon):
    r = client.responses.create(model=QWEN, instructions="Be brief.", max_output_tokens=3,
                                input=[{"role": "user", "content": "one"},
                                       {"role": "user", "content": [
                                           {"type": "input_text", "text": "two"}]}])
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text and got.status == r.status
    items = client.responses.input_items.list(r.id)
    assert [i.content[0].text for i in items.data] == ["two", "one"]
    assert all(i.id.startswith("msg_") for i in items.data)
    asc = client.responses.input_items.list(r.id, order="asc", limit=1)
    assert [i.content[0].text for i in asc.data] == ["one"] and asc.has_more
    status, _, body = http_json("DELETE", f"{daemon.base_url}/v1/responses/{r.id}")
    assert (status, body) == (200, {"id": r.id, "object": "response", "deleted": True})
    for call in (lambda: client.responses.retrieve(r.id), lambda: client.responses.delete(r.id)):
        with pytest.raises(openai.NotFoundError) as e:
            call()
        assert e.value.body["type"] == "invalid_request_error"


def test_the_least_recently_used_response_is_forgotten(client):
    ids = [client.responses.create(model=QWEN, input=f"n{i}", max_output_tokens=1).id
           for i in range(STORE_MAX + 1)]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(ids[0])
    assert client.responses.retrieve(ids[-1]).id == ids[-1]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]},
         "input[0].content[0]"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
         "input[0].call_id"),
        ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name"),
        ({"tool_choice": {"type": "function", "name": "nowhere"}}, "tool_choice"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"truncation": "auto"}, "truncation"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ],
)
def test_bad_requests_name_their_parameter(client, extra, param):
    request = {"model": QWEN, "input": "hi", **extra}
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(**request)
    assert e.value.param == param
    assert e.value.body["type"] == "invalid_request_error"


def codex_request() -> dict:
    request = json.loads((FIXTURES / "codex_responses_request.json").read_text())
    request["model"] = QWEN
    request["max_output_tokens"] = 16
    return request


def test_a_codex_shaped_request_streams_a_well_formed_response(client):
    request = codex_request()
    assert request["stream"] and request["store"] is False
    events = list(client.responses.create(**request))
    check_sequence(events)
    final = events[-1].response
    assert final.store is False and final.parallel_tool_calls is False
    # Only the function tools are served; the others are left out.
    assert [t.name for t in final.tools] == ["shell", "update_plan"]
    assert final.usage.input_tokens > 500
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(final.id)


def test_reasoning_items_reach_the_template(client):
    request = codex_request()
    request.update(stream=False, max_output_tokens=1)
    with_reasoning = client.responses.create(**request)
    request["input"] = [i for i in request["input"] if i.get("type") != "reasoning"]
    without = client.responses.create(**copy.deepcopy(request))
    # Qwen3's template renders an assistant turn's reasoning_content after the
    # last user message: both reasoning summaries are in the prompt.
    assert with_reasoning.usage.input_tokens > without.usage.input_tokens + 20
