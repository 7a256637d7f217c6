"""Each error status surfaces as the SDK's matching exception class, with
OpenAI's error body (message, type, param, code)."""

from __future__ import annotations

import time

import openai
import pytest

from conftest import http_json

HELLO = [{"role": "user", "content": "Say hello."}]


def test_an_out_of_range_parameter_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=HELLO, temperature=5)
    assert e.value.status_code == 400
    assert e.value.param == "temperature"
    assert e.value.type == "invalid_request_error"


def test_a_prompt_longer_than_the_context_is_a_bad_request(client):
    prompt = " ".join(["word"] * 200)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny64", prompt=prompt, max_tokens=4)
    assert e.value.code == "context_length_exceeded"
    assert "maximum context length is 64 tokens" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="tiny64", messages=[{"role": "user", "content": prompt}]
        )
    assert e.value.code == "context_length_exceeded"
    assert e.value.param == "messages"
    # A prompt that fits is served, its completion cut at the context.
    r = client.completions.create(
        model="tiny64", prompt="short", max_tokens=1000, extra_body={"ignore_eos": True}
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens + r.usage.completion_tokens == 64


def test_an_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert e.value.code == "model_not_found"
    assert e.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x")


def test_a_model_that_fails_to_load_is_a_server_error_naming_the_cause(client, daemon):
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="broken", messages=HELLO, max_tokens=2)
    assert e.value.status_code == 503
    assert e.value.code == "model_load_failed"
    assert "Model `broken` failed to load" in e.value.message
    assert "safetensors" in e.value.message.lower(), e.value.message
    # Streamed requests fail the same way, before the first chunk.
    with pytest.raises(openai.InternalServerError):
        list(client.chat.completions.create(model="broken", messages=HELLO, stream=True))
    # The daemon and the other models are unaffected.
    assert http_json("GET", daemon.base_url + "/health")[0] == 200
    r = client.completions.create(model="tiny", prompt="still fine", max_tokens=2)
    assert r.choices[0].text is not None


def test_a_missing_or_wrong_api_key_is_an_authentication_error(strict_daemon):
    with pytest.raises(openai.AuthenticationError) as e:
        strict_daemon.client(api_key="sk-wrong").models.list()
    assert e.value.status_code == 401
    assert e.value.code == "invalid_api_key"
    status, _, body = http_json("GET", strict_daemon.base_url + "/v1/models")
    assert status == 401 and body["error"]["type"] == "invalid_request_error"
    ok = strict_daemon.client(api_key="sk-test-key").models.list()
    assert [m.id for m in ok] == ["tiny"]


def test_a_full_queue_is_a_rate_limit_error_with_retry_after(strict_daemon):
    client = strict_daemon.client(api_key="sk-test-key")
    holder = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=100_000, stream=True,
        extra_body={"ignore_eos": True},
    )
    try:
        # The first chunk: the request holds the model's only queue slot.
        next(iter(holder))
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=1)
        assert e.value.status_code == 429
        assert e.value.code == "rate_limit_exceeded"
        assert e.value.response.headers["retry-after"] == "1"
    finally:
        holder.close()
    # Closing the stream frees the slot.
    deadline = time.monotonic() + 30
    while True:
        try:
            r = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=1)
            break
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "the slot was not freed"
            time.sleep(0.1)
    assert r.choices[0].finish_reason in ("length", "stop")


def test_a_body_over_the_limit_is_a_413_status_error(strict_daemon):
    client = strict_daemon.client(api_key="sk-test-key")
    with pytest.raises(openai.APIStatusError) as e:
        client.completions.create(model="tiny", prompt="x" * 20_000, max_tokens=1)
    assert e.value.status_code == 413
    assert e.value.code == "request_too_large"
