"""The model list through the official SDK, with mlxd's `loaded` and
`format` extensions."""

from __future__ import annotations

import openai
import pytest

from conftest import DEFAULT_MODEL


def test_the_list_holds_every_served_model(client):
    models = {m.id: m for m in client.models.list()}
    assert {"tiny", "tiny64", "broken", DEFAULT_MODEL} <= set(models)
    for m in models.values():
        assert m.object == "model"
        assert m.owned_by == "mlxd"
        assert isinstance(m.created, int)
        assert isinstance(m.model_extra["loaded"], bool)
    assert models[DEFAULT_MODEL].model_extra["format"] == "gguf"
    assert models["tiny"].model_extra["format"] == "mlx"


def test_loaded_turns_true_once_a_worker_holds_the_model(client, daemon):
    client.completions.create(model="tiny", prompt="hi", max_tokens=1)
    assert client.models.retrieve("tiny").model_extra["loaded"] is True
    assert any(w["model"] == "tiny" and w["state"] == "ready" for w in daemon.workers())
    # A model whose weights cannot load never shows as loaded.
    assert client.models.retrieve("broken").model_extra["loaded"] is False


def test_the_raw_json_carries_the_extensions(client):
    raw = client.models.with_raw_response.retrieve("tiny")
    assert raw.http_response.status_code == 200
    body = raw.http_response.json()
    assert body["id"] == "tiny" and body["object"] == "model"
    assert "loaded" in body


def test_an_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.status_code == 404
    assert e.value.code == "model_not_found"
