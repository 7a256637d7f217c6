"""The examples of README.md's "Using the API" section, run verbatim
against a daemon with the default settings and the built-in model: on
ports 11440/11441 when they are free, else on free ports substituted into
the commands."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from conftest import DEFAULT_MODEL, ROOT, Daemon, port_is_free

DEFAULT_PORT, DEFAULT_ADMIN_PORT = 11440, 11441


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Using the API")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section(), flags=re.S)


def curl_commands() -> list[str]:
    """Each curl command (commands are separated by blank lines)."""
    commands = []
    for block in blocks("sh"):
        for chunk in re.split(r"\n\s*\n", block):
            lines = [ln for ln in chunk.strip().splitlines() if not ln.lstrip().startswith("#")]
            if lines and lines[0].startswith("curl "):
                commands.append("\n".join(lines))
    return commands


@pytest.fixture(scope="module")
def readme_daemon(workdir):
    if port_is_free(DEFAULT_PORT) and port_is_free(DEFAULT_ADMIN_PORT):
        d = Daemon(workdir, [], name="readme", port=DEFAULT_PORT, admin_port=DEFAULT_ADMIN_PORT)
    else:
        d = Daemon(workdir, [], name="readme")
    yield d
    d.stop()


def on(daemon: Daemon, text: str) -> str:
    return text.replace(f"127.0.0.1:{DEFAULT_PORT}", f"127.0.0.1:{daemon.port}").replace(
        f"127.0.0.1:{DEFAULT_ADMIN_PORT}", f"127.0.0.1:{daemon.admin_port}"
    )


def test_the_section_has_every_example():
    commands = curl_commands()
    urls = [re.search(r"http://127\.0\.0\.1:\d+(/\S*)", c).group(1) for c in commands]
    assert urls == [
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        f"/v1/models/{DEFAULT_MODEL}",
        "/v1/messages",
        "/v1/responses",
        "/admin/status",
        "/admin/load",
        "/admin/unload",
    ]
    assert len(blocks("python")) == 1


def run_curl(daemon: Daemon, command: str) -> str:
    done = subprocess.run(
        ["bash", "-c", on(daemon, command)], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, (command, done.stderr)
    return done.stdout


def test_the_curl_examples_work(readme_daemon):
    outputs = {}
    for command in curl_commands():
        out = run_curl(readme_daemon, command)
        if out.startswith("data: "):
            events = [e[len("data: "):] for e in out.strip().split("\n\n")]
            assert events[-1] == "[DONE]", out
            chunks = [json.loads(e) for e in events[:-1]]
            assert all("error" not in c for c in chunks), out
            assert chunks[-1]["usage"]["completion_tokens"] >= 1
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
            assert text.strip(), out
            body = {"streamed": text}
        else:
            body = json.loads(out)
            assert body.get("error") is None, out
        outputs.setdefault(re.search(r":\d+(/\S*)", command).group(1), []).append(body)

    # The examples leave the sampling out: the default model brings no
    # sampling values, so it decodes greedily and answers the question.
    chat, streamed = outputs["/v1/chat/completions"]
    assert "Paris" in chat["choices"][0]["message"]["content"], chat
    assert "Paris" in streamed["streamed"], streamed
    completion = outputs["/v1/completions"][0]
    assert "Paris" in completion["choices"][0]["text"], completion
    assert DEFAULT_MODEL in [m["id"] for m in outputs["/v1/models"][0]["data"]]
    assert outputs[f"/v1/models/{DEFAULT_MODEL}"][0]["loaded"] is True
    message = outputs["/v1/messages"][0]
    assert message["type"] == "message", message
    assert "Paris" in message["content"][0]["text"], message
    status = outputs["/admin/status"][0]
    assert [w["model"] for w in status["workers"]] == [DEFAULT_MODEL]
    assert outputs["/admin/load"][0]["status"] == "loaded"
    assert outputs["/admin/unload"][0]["unloaded"] is True
    response = outputs["/v1/responses"][0]
    assert response["status"] == "completed", response
    assert "Paris" in response["output"][-1]["content"][0]["text"], response
    deadline = time.monotonic() + 30
    while readme_daemon.worker_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert readme_daemon.worker_pids() == [], "the unloaded model's worker is still running"


def test_the_python_example_works(readme_daemon):
    (code,) = blocks("python")
    done = subprocess.run(
        [sys.executable, "-c", on(readme_daemon, code)], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    # The whole reply, then the streamed one.
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    assert len(lines) >= 2, done.stdout
    assert "Paris" in lines[0] and "Paris" in lines[-1], done.stdout
