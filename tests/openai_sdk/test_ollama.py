"""Ollama's native API through the official `ollama` Python library
(`ollama.Client(host=...)`) against a real `mlxd serve`: chat (whole and
streamed), generate (streamed), `format` with a JSON schema, a tool round
trip rendered by the template, `list`, `ps`, `show`, loading and
unloading with an empty generate, API keys, and errors raised as
`ollama.ResponseError` with Ollama's status codes; and `think` reaching a
Qwen3 chat template (a tiny random checkpoint with Qwen3's tokenizer).

Embeddings (`/api/embed`) are tested with the embeddings routes.
"""

from __future__ import annotations

import json
import subprocess

import ollama
import pytest

from conftest import DEFAULT_MODEL, ROOT, Daemon, mlxd_bin

GREEDY = {"temperature": 0, "num_predict": 6}


@pytest.fixture(scope="module")
def ollama_client(daemon) -> ollama.Client:
    return ollama.Client(host=daemon.base_url, timeout=120)


def test_the_default_model_knows_the_capital_of_france(ollama_client):
    r = ollama_client.chat(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        options={"temperature": 0, "num_predict": 16},
    )
    assert "Paris" in r.message.content, r.message.content
    assert r.done and r.done_reason in ("stop", "length")
    assert r.model == DEFAULT_MODEL
    assert r.prompt_eval_count > 10 and 0 < r.eval_count <= 16
    assert r.total_duration >= r.eval_duration > 0


def test_a_streamed_chat_equals_the_whole_one(ollama_client):
    messages = [{"role": "user", "content": "Name three colours."}]
    whole = ollama_client.chat(model="tiny", messages=messages, options=GREEDY)
    assert whole.done_reason == "length" and whole.eval_count == 6
    parts = list(ollama_client.chat(model="tiny", messages=messages, options=GREEDY, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert parts[-1].done_reason == "length" and parts[-1].eval_count == 6
    assert "".join(p.message.content for p in parts) == whole.message.content


def test_generate_streams_and_a_tagged_name_resolves(ollama_client):
    parts = list(
        ollama_client.generate(model="tiny:latest", prompt="Once upon a time", options=GREEDY, stream=True)
    )
    assert parts[-1].done and parts[-1].eval_count == 6
    assert parts[-1].model == "tiny:latest"
    text = "".join(p.response for p in parts)
    whole = ollama_client.generate(model="tiny", prompt="Once upon a time", options=GREEDY)
    assert text == whole.response and text


def test_raw_generate_continues_the_prompt_as_a_completion(ollama_client):
    r = ollama_client.generate(model="tiny", prompt="def f(x):", raw=True, options=GREEDY)
    assert r.done_reason == "length" and r.eval_count == 6
    assert r.prompt_eval_count <= 6, "no chat template around a raw prompt"


def test_logprobs_come_back_per_token_with_alternatives(ollama_client):
    r = ollama_client.chat(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], options=GREEDY,
        logprobs=True, top_logprobs=2,
    )
    assert len(r.logprobs) == r.eval_count == 6
    for entry in r.logprobs:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
        # Greedy: the chosen token is the most likely one.
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-5)
    parts = list(ollama_client.generate(model="tiny", prompt="Hi", raw=True, options=GREEDY,
                                        logprobs=True, top_logprobs=1, stream=True))
    assert sum(len(p.logprobs or []) for p in parts) == parts[-1].eval_count


def test_format_with_a_json_schema_holds_on_random_weights(ollama_client):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    r = ollama_client.chat(
        model="tiny",
        messages=[{"role": "user", "content": "Is the sky blue?"}],
        format=schema,
        options={"temperature": 0, "num_predict": 200},
    )
    assert r.done_reason == "stop", r.message.content
    assert json.loads(r.message.content)["answer"] in ("yes", "no")


def test_a_tool_round_trip_is_rendered_and_answered(ollama_client):
    tools = [{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]},
        },
    }]
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_name": "get_weather", "content": "sunny, 21 C"},
    ]
    r = ollama_client.chat(model="tiny", messages=messages, tools=tools, options=GREEDY)
    assert r.done and r.eval_count == 6
    # Parsed calls (none of random weights' own) come back with object
    # arguments; the handler tests script a reply that calls.
    for call in r.message.tool_calls or []:
        assert isinstance(call.function.arguments, dict)


def test_list_show_and_ps_describe_the_models(ollama_client):
    names = {m.model for m in ollama_client.list().models}
    assert {"tiny:latest", f"{DEFAULT_MODEL}:latest"} <= names, names
    tiny = next(m for m in ollama_client.list().models if m.model == "tiny:latest")
    assert tiny.details.format == "mlx" and tiny.details.family == "llama"
    assert tiny.size > 0 and len(tiny.digest) == 64
    shown = ollama_client.show("tiny")
    assert "im_start" in shown.template
    assert "completion" in shown.capabilities
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.details.family == "llama"
    ollama_client.generate(model="tiny", prompt="Hi", options=GREEDY)
    loaded = {m.model: m for m in ollama_client.ps().models}
    assert "tiny:latest" in loaded, loaded
    assert loaded["tiny:latest"].size_vram > 0
    assert loaded["tiny:latest"].expires_at is not None


def test_an_empty_generate_loads_and_keep_alive_zero_unloads(ollama_client, daemon):
    r = ollama_client.generate(model="tiny64", prompt="", keep_alive="10m")
    assert r.done and r.done_reason == "load"
    assert any(m.model == "tiny64:latest" for m in ollama_client.ps().models)
    r = ollama_client.generate(model="tiny64", prompt="", keep_alive=0)
    assert r.done_reason == "unload"
    workers = {w["model"]: w["state"] for w in daemon.workers()}
    assert workers.get("tiny64") != "ready", workers


@pytest.mark.parametrize(
    ("call", "status", "words"),
    [
        (lambda c: c.chat(model="missing", messages=[{"role": "user", "content": "x"}]), 404,
         "missing"),
        (lambda c: c.chat(model="tiny", messages=[{"role": "user", "content": "x"}],
                          options={"mirostat": 2}), 400, "options.mirostat"),
        (lambda c: c.chat(model="tiny", messages=[{"role": "user", "content": "x",
                                                   "images": [b"\x89PNG"]}]), 400, "images"),
        (lambda c: c.generate(model="tiny", prompt="x", suffix="y"), 400, "suffix"),
        (lambda c: c.chat(model="tiny64", messages=[{"role": "user", "content": "word " * 200}]),
         400, "context"),
        (lambda c: c.pull("tiny"), 400, "org/name"),
        (lambda c: c.delete("tiny"), 501, "delete"),
        (lambda c: c.show("missing"), 404, "missing"),
    ],
)
def test_errors_raise_response_errors_with_ollamas_status(ollama_client, call, status, words):
    with pytest.raises(ollama.ResponseError) as e:
        call(ollama_client)
    assert e.value.status_code == status, e.value
    assert words in str(e.value.error), e.value.error


def test_api_keys_are_required_on_the_api(strict_daemon):
    with pytest.raises(ollama.ResponseError) as e:
        ollama.Client(host=strict_daemon.base_url).list()
    assert e.value.status_code == 401
    keyed = ollama.Client(host=strict_daemon.base_url,
                          headers={"Authorization": "Bearer sk-test-key"})
    assert [m.model for m in keyed.list().models] == ["tiny:latest"]


@pytest.fixture(scope="module")
def qwen(workdir):
    """A daemon serving a tiny random model with Qwen3's tokenizer and template."""
    tokenizer = ROOT / ".cache/test-data/npm/qwen3"
    assert (tokenizer / "tokenizer.json").is_file(), "run scripts/test-data.sh"
    path = workdir / "ollama-qwen3"
    subprocess.run(
        [str(mlxd_bin()), "synth", "--preset", "tiny-f32", "--vocab", "151936",
         "--tokenizer-from", str(tokenizer), str(path)],
        check=True, capture_output=True,
    )
    d = Daemon(workdir, ["--model", f"qwen={path}"], name="ollama-qwen")
    yield ollama.Client(host=d.base_url, timeout=120)
    d.stop()


def test_think_switches_the_templates_thinking(qwen):
    messages = [{"role": "user", "content": "Hi"}]
    counts = {
        think: qwen.chat(model="qwen", messages=messages, think=think,
                         options=GREEDY).prompt_eval_count
        for think in (True, False)
    }
    # Qwen3's template closes an empty think block when thinking is off.
    assert counts[False] > counts[True], counts
    effort = qwen.chat(model="qwen", messages=messages, think="high", options=GREEDY)
    assert effort.prompt_eval_count == counts[True]
    assert "thinking" in qwen.show("qwen").capabilities
    with pytest.raises(ollama.ResponseError) as e:
        qwen.generate(model="qwen", prompt="x", raw=True, think=True)
    assert e.value.status_code == 400 and "think" in e.value.error
