"""Embeddings through the official SDK (`embeddings.create`) and Ollama's
routes against a real daemon.

A tiny random Qwen3 checkpoint written by mlx-lm, with the real Qwen3
tokenizer, is served beside the default model: its vectors equal mlx-lm's
(the inner model's hidden states after the final norm, last token pooled,
L2-normalized) for token-id and text inputs of different lengths in one
request, as floats and as base64, and `dimensions` truncates then
renormalizes. A sentence-transformers `1_Pooling/config.json` in a copy of
it switches that copy to mean pooling. The default model embeds as well;
bad requests are 400s naming the parameter. Ollama's `/api/embed` and
`/api/embeddings` are checked over raw HTTP (`httpx`).
"""

from __future__ import annotations

import base64
import json
import shutil
import struct

import httpx
import mlx.core as mx
import numpy as np
import openai
import pytest
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.models import qwen3
from mlx_lm.utils import save_config, save_model
from tokenizers import Tokenizer

from conftest import DEFAULT_MODEL, ROOT, Daemon, default_model_path

QWEN3_TOKENIZER = ROOT / ".cache/test-data/npm/qwen3"
CONFIG = {
    "model_type": "qwen3",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "rms_norm_eps": 1e-5,
    "vocab_size": 151936,
    "max_position_embeddings": 512,
    "rope_theta": 1e6,
    "tie_word_embeddings": True,
}
TEXTS = ["Paris", "The capital of France is Paris, a city on the Seine.", "hi " * 40]


@pytest.fixture(scope="module")
def tiny_qwen3(workdir):
    """The checkpoint, its mlx-lm model, and a copy with mean pooling."""
    if not (QWEN3_TOKENIZER / "tokenizer.json").is_file():
        pytest.exit("the Qwen3 tokenizer is missing: run scripts/test-data.sh", returncode=2)
    model = qwen3.Model(qwen3.ModelArgs.from_dict(CONFIG))
    mx.random.seed(11)
    params = [
        (name, ((1.0 if "norm" in name else 0.0) + (0.1 if "norm" in name else 0.3)
                * mx.random.normal(p.shape)).astype(mx.float32))
        for name, p in tree_flatten(model.parameters())
    ]
    model.update(tree_unflatten(params))
    mx.eval(model.parameters())
    path = workdir / "tiny-qwen3-embed"
    save_model(path, model)
    save_config(CONFIG, path / "config.json")
    for f in QWEN3_TOKENIZER.iterdir():
        shutil.copy(f, path / f.name)
    mean_path = workdir / "tiny-qwen3-embed-mean"
    shutil.copytree(path, mean_path)
    (mean_path / "1_Pooling").mkdir()
    (mean_path / "1_Pooling/config.json").write_text(json.dumps(
        {"word_embedding_dimension": 64, "pooling_mode_cls_token": False,
         "pooling_mode_mean_tokens": True, "pooling_mode_lasttoken": False}))
    return path, mean_path, model


@pytest.fixture(scope="module")
def embed_daemon(workdir, tiny_qwen3):
    path, mean_path, _ = tiny_qwen3
    d = Daemon(workdir, ["--model", f"q3={path}", "--model", f"q3mean={mean_path}",
                         "--model", f"{DEFAULT_MODEL}={default_model_path()}"], name="embed")
    yield d
    d.stop()


def reference(model, ids: list[int], pooling: str = "last") -> np.ndarray:
    hidden = np.array(model.model(mx.array(ids)[None])[0].astype(mx.float32), dtype=np.float64)
    v = hidden[-1] if pooling == "last" else hidden.mean(axis=0)
    return v / np.linalg.norm(v)


def text_ids(text: str) -> list[int]:
    tokenizer = Tokenizer.from_file(str(QWEN3_TOKENIZER / "tokenizer.json"))
    return tokenizer.encode(text, add_special_tokens=True).ids


def test_vectors_equal_mlx_lms_for_token_and_text_inputs(embed_daemon, tiny_qwen3):
    _, _, model = tiny_qwen3
    client = embed_daemon.client()
    id_inputs = [[5], list(range(100, 130)), list(range(1000, 1300, 3))]
    r = client.embeddings.create(model="q3", input=id_inputs)
    assert [d.index for d in r.data] == [0, 1, 2]
    assert r.usage.prompt_tokens == r.usage.total_tokens == sum(map(len, id_inputs))
    for d, ids in zip(r.data, id_inputs):
        assert np.abs(np.array(d.embedding) - reference(model, ids)).max() < 1e-5
    r = client.embeddings.create(model="q3", input=TEXTS)
    for d, text in zip(r.data, TEXTS):
        assert np.abs(np.array(d.embedding) - reference(model, text_ids(text))).max() < 1e-5
    one = client.embeddings.create(model="q3", input=TEXTS[1]).data[0].embedding
    assert one == r.data[1].embedding, "alone or batched, the same vector"


def test_base64_and_dimensions(embed_daemon, tiny_qwen3):
    _, _, model = tiny_qwen3
    client = embed_daemon.client()
    floats = client.embeddings.create(model="q3", input=TEXTS[:2]).data
    # The SDK decodes base64 itself when it asked for floats; ask raw.
    raw = httpx.post(f"{embed_daemon.base_url}/v1/embeddings",
                     json={"model": "q3", "input": TEXTS[:2], "encoding_format": "base64"}).json()
    for d, f in zip(raw["data"], floats):
        data = base64.b64decode(d["embedding"])
        assert list(struct.unpack(f"<{len(data) // 4}f", data)) == f.embedding
    sdk_b64 = client.embeddings.create(model="q3", input=TEXTS[:2], encoding_format="base64")
    assert [d.embedding for d in sdk_b64.data] == raw_embeddings(raw)
    short = client.embeddings.create(model="q3", input=TEXTS[:2], dimensions=16).data
    for s, f in zip(short, floats):
        want = np.array(f.embedding[:16]) / np.linalg.norm(f.embedding[:16])
        assert len(s.embedding) == 16
        assert np.abs(np.array(s.embedding) - want).max() < 1e-6


def raw_embeddings(raw: dict) -> list[str]:
    return [d["embedding"] for d in raw["data"]]


def test_a_pooling_config_in_the_checkpoint_chooses_mean(embed_daemon, tiny_qwen3):
    _, _, model = tiny_qwen3
    ids = list(range(200, 240))
    r = embed_daemon.client().embeddings.create(model="q3mean", input=[ids])
    assert np.abs(np.array(r.data[0].embedding) - reference(model, ids, "mean")).max() < 1e-5


def test_the_default_model_embeds(embed_daemon):
    r = embed_daemon.client().embeddings.create(model=DEFAULT_MODEL,
                                                input=["Hello", "The capital of France"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 576
    for d in r.data:
        assert abs(np.linalg.norm(d.embedding) - 1.0) < 1e-5
    assert r.data[0].embedding != r.data[1].embedding


@pytest.mark.parametrize("extra,param", [
    ({"input": ""}, "input"),
    ({"input": ["a", ""]}, "input[1]"),
    ({"input": "a", "dimensions": 65}, "dimensions"),
    ({"input": "a", "dimensions": 0}, "dimensions"),
    ({"input": [list(range(1, 600))]}, "input"),
])
def test_bad_requests_are_400s_naming_the_parameter(embed_daemon, extra, param):
    with pytest.raises(openai.BadRequestError) as e:
        embed_daemon.client().embeddings.create(model="q3", **extra)
    assert e.value.body["param"] == param, e.value.body


def test_ollama_embed_and_legacy_embeddings(embed_daemon, tiny_qwen3):
    _, _, model = tiny_qwen3
    base = embed_daemon.base_url
    r = httpx.post(f"{base}/api/embed", json={"model": "q3", "input": TEXTS[:2]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"model", "embeddings", "total_duration", "load_duration",
                         "prompt_eval_count"}
    for v, text in zip(body["embeddings"], TEXTS):
        assert np.abs(np.array(v) - reference(model, text_ids(text))).max() < 1e-5
    assert body["prompt_eval_count"] == sum(len(text_ids(t)) for t in TEXTS[:2])
    long = "word " * 700
    assert httpx.post(f"{base}/api/embed", json={"model": "q3", "input": long}).status_code == 200
    r = httpx.post(f"{base}/api/embed", json={"model": "q3", "input": long, "truncate": False})
    assert r.status_code == 400 and "context" in r.json()["error"]
    r = httpx.post(f"{base}/api/embeddings", json={"model": "q3", "prompt": TEXTS[0]})
    raw = np.array(r.json()["embedding"])
    want = reference(model, text_ids(TEXTS[0]))
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3, "the legacy route is not normalized"
    assert np.abs(raw / np.linalg.norm(raw) - want).max() < 1e-5
    r = httpx.post(f"{base}/api/embed", json={"model": "nope", "input": "a"})
    assert r.status_code == 404 and "nope" in r.json()["error"]


def test_the_ollama_librarys_embed_and_embeddings(embed_daemon, tiny_qwen3):
    import ollama  # pinned in scripts/requirements/test.txt with the Ollama API's tests

    _, _, model = tiny_qwen3
    client = ollama.Client(host=embed_daemon.base_url)
    r = client.embed(model="q3", input=TEXTS[:2], keep_alive="1m")
    assert r.model == "q3" and r.prompt_eval_count > 0
    for v, text in zip(r.embeddings, TEXTS):
        assert np.abs(np.array(v) - reference(model, text_ids(text))).max() < 1e-5
    short = client.embed(model="q3", input=TEXTS[0], dimensions=8).embeddings[0]
    assert len(short) == 8 and abs(np.linalg.norm(short) - 1.0) < 1e-5
    legacy = np.array(client.embeddings(model="q3", prompt=TEXTS[0]).embedding)
    assert np.abs(legacy / np.linalg.norm(legacy) - reference(model, text_ids(TEXTS[0]))).max() < 1e-5
    with pytest.raises(ollama.ResponseError) as e:
        client.embed(model="q3", input=["a", ""])
    assert e.value.status_code == 400 and "empty" in e.value.error
