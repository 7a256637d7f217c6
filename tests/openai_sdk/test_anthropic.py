"""Anthropic's Messages API through the official `anthropic` SDK against a
real `mlxd serve`: `messages.create`, `messages.stream` (text and the event
sequence), a tool-use round trip with a forced `tool_choice` (the grammar
makes even random weights call the tool), `count_tokens`, errors as the
SDK's exception classes, and a Claude-Code-shaped streamed request
(system blocks with `cache_control`, many tools with large schemas, a
history of `tool_use`/`tool_result` blocks, `metadata`) replayed from
`fixtures/claude_code_request.json`, on the default model and the tiny
checkpoint."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import anthropic
import pytest

from conftest import DEFAULT_MODEL, http_json

MODELS = ["tiny", DEFAULT_MODEL]
FIXTURES = Path(__file__).parent / "fixtures"
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [
    {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "cache_control": {"type": "ephemeral"},
    }
]
# The SDK's `create` has no sampling arguments any more; the API keeps them.
GREEDY = {"temperature": 0}
STREAM_EVENTS = {
    "message_start", "content_block_start", "content_block_delta", "content_block_stop",
    "message_delta", "message_stop",
}


def client_of(daemon, api_key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=daemon.base_url, api_key=api_key, max_retries=0, timeout=120.0
    )


@pytest.fixture(scope="module")
def claude(daemon) -> anthropic.Anthropic:
    return client_of(daemon)


@pytest.mark.parametrize("model", MODELS)
def test_messages_create_and_stream_give_the_same_greedy_text(claude, model):
    whole = claude.messages.create(
        model=model, max_tokens=8, extra_body=GREEDY, messages=QUESTION,
        system="You are terse.", metadata={"user_id": "u-1"},
    )
    assert whole.type == "message" and whole.role == "assistant"
    assert whole.id.startswith("msg_") and whole.model == model
    assert whole.stop_reason in ("end_turn", "max_tokens")
    assert 0 < whole.usage.output_tokens <= 8 and whole.usage.input_tokens > 5
    text = "".join(b.text for b in whole.content if b.type == "text")
    with claude.messages.stream(
        model=model, max_tokens=8, extra_body=GREEDY, messages=QUESTION,
        system="You are terse.", metadata={"user_id": "u-1"},
    ) as stream:
        events = [e.type for e in stream if e.type in STREAM_EVENTS]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-2:] == ["message_delta", "message_stop"]
    if text:
        assert events[1] == "content_block_start" and "content_block_delta" in events
    assert "".join(b.text for b in final.content if b.type == "text") == text
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens == whole.usage.input_tokens


def test_a_stop_sequence_is_reported(claude):
    whole = claude.messages.create(model=DEFAULT_MODEL, max_tokens=16, extra_body=GREEDY,
                                   messages=QUESTION)
    text = whole.content[0].text
    # A stop sequence taken from the greedy answer itself must end it there.
    word = text.split()[1] if len(text.split()) > 1 else text.split()[0]
    cut = claude.messages.create(model=DEFAULT_MODEL, max_tokens=16, extra_body=GREEDY,
                                 messages=QUESTION, stop_sequences=[word])
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == word
    assert "".join(b.text for b in cut.content) == text[: text.index(word)]


@pytest.mark.parametrize("model", MODELS)
def test_a_forced_tool_use_round_trip(claude, model):
    r = claude.messages.create(
        model=model, max_tokens=60, extra_body=GREEDY, messages=QUESTION, tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert r.stop_reason == "tool_use", r.content
    uses = [b for b in r.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather", r.content
    assert uses[0].id.startswith("toolu_")
    assert uses[0].input["city"] in ("Paris", "Oslo", "Lima")
    history = QUESTION + [
        {"role": "assistant", "content": r.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                      "content": "Sunny, 24 C"}]},
    ]
    answer = claude.messages.create(model=model, max_tokens=8, extra_body=GREEDY,
                                    messages=history, tools=TOOLS,
                                    tool_choice={"type": "none"})
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert all(b.type == "text" for b in answer.content)
    # The result reached the prompt: it counts.
    with_result = claude.messages.count_tokens(model=model, messages=history, tools=TOOLS)
    without = claude.messages.count_tokens(model=model, messages=history[:1], tools=TOOLS)
    assert with_result.input_tokens > without.input_tokens


def test_a_streamed_forced_call_arrives_as_input_json(claude):
    with claude.messages.stream(
        model="tiny", max_tokens=60, extra_body=GREEDY, messages=QUESTION, tools=TOOLS,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    ) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and len(uses) == 1
    assert uses[0].input["city"] in ("Paris", "Oslo", "Lima")


@pytest.mark.parametrize("model", MODELS)
def test_count_tokens_equals_the_input_tokens_of_generation(claude, model):
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    counted = claude.messages.count_tokens(model=model, system=system, messages=QUESTION,
                                           tools=TOOLS)
    used = claude.messages.create(model=model, max_tokens=1, system=system,
                                  messages=QUESTION, tools=TOOLS)
    assert counted.input_tokens == used.usage.input_tokens > 20


def test_errors_are_the_sdks_exceptions_with_anthropics_body(claude, daemon, strict_daemon):
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model="tiny", max_tokens=8, messages=QUESTION,
                               extra_body={"temperature": 3})
    assert e.value.status_code == 400 and "temperature" in e.value.message
    assert e.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model="tiny", max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}]}])
    assert "messages.0.content.0" in e.value.message and "image" in e.value.message
    with pytest.raises(anthropic.NotFoundError) as e:
        claude.messages.create(model="no-such-model", max_tokens=8, messages=QUESTION)
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.AuthenticationError) as e:
        client_of(strict_daemon, "sk-wrong").messages.create(
            model="tiny", max_tokens=2, messages=QUESTION)
    assert e.value.status_code == 401
    assert e.value.body == {"type": "error",
                            "error": {"type": "authentication_error",
                                      "message": "invalid x-api-key"}}
    ok = client_of(strict_daemon, "sk-test-key").messages.create(
        model="tiny", max_tokens=2, messages=QUESTION)
    assert ok.usage.output_tokens > 0
    status, _, body = http_json("POST", daemon.base_url + "/v1/messages",
                                {"model": "tiny", "messages": QUESTION})
    assert status == 400 and body["error"]["message"] == "max_tokens: Field required"


def read_events(text: str) -> list[tuple[str, dict]]:
    """(name, data) of each SSE event; asserts the framing."""
    events = []
    for frame in text.split("\n\n"):
        if not frame:
            continue
        lines = frame.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") \
            and lines[1].startswith("data: "), frame
        name, data = lines[0][len("event: "):], json.loads(lines[1][len("data: "):])
        assert data["type"] == name, frame
        events.append((name, data))
    return events


def test_a_claude_code_shaped_request_streams_a_well_formed_answer(daemon):
    body = json.loads((FIXTURES / "claude_code_request.json").read_text())
    assert body["stream"] and len(body["tools"]) >= 10 and body["metadata"]["user_id"]
    # Served by the tiny model; the fixture's 32000 tokens would take minutes.
    body.update(model="tiny", max_tokens=40)
    req = urllib.request.Request(
        daemon.base_url + "/v1/messages", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "x-api-key": "unused",
                 "anthropic-version": "2023-06-01", "anthropic-beta": "claude-code-20250219"},
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        events = read_events(resp.read().decode())
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"], names
    assert names[-2:] == ["message_delta", "message_stop"], names
    # Blocks open in index order, each delta belongs to the open block and
    # matches its type, and every block closes before the next opens.
    open_block, next_index, partial = None, 0, ""
    for name, data in events[2:-2]:
        if name == "content_block_start":
            assert open_block is None and data["index"] == next_index
            open_block, next_index = data["content_block"], next_index + 1
            partial = ""
        elif name == "content_block_delta":
            assert open_block is not None and data["index"] == next_index - 1
            kind = {"text": "text_delta", "thinking": "thinking_delta",
                    "tool_use": "input_json_delta"}[open_block["type"]]
            assert data["delta"]["type"] == kind
            partial += data["delta"].get("partial_json", "")
        else:
            assert name == "content_block_stop" and data["index"] == next_index - 1
            if open_block["type"] == "tool_use":
                assert isinstance(json.loads(partial), dict)
            open_block = None
    assert open_block is None
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens", "tool_use")
    assert 0 < delta["usage"]["output_tokens"] <= 40
    start = events[0][1]["message"]
    count = {k: body[k] for k in ("model", "messages", "system", "tools")}
    status, _, counted = http_json("POST", daemon.base_url + "/v1/messages/count_tokens", count)
    assert status == 200 and counted["input_tokens"] == start["usage"]["input_tokens"] > 1000
