"""Turn N of a long chat with the prompt cache on disk: the time to first
token of the same request cold (no prompt cache), as a warm in-memory hit,
and after a daemon restart (its prefix read back from disk).

usage: prompt_cache_disk.py MLXD MODEL_DIR [--turns 20] [--tokens 8192]
                            [--answer 64] [--disk 32GiB]

The conversation has TURNS user turns of filler text, sized so that the
last prompt is about TOKENS tokens; turns 1..N-1 are played against a daemon
with the disk tier on (their answers become the history) and its cache
folder is copied as it stands; then turn N is sent to that daemon (a
memory hit), to a fresh daemon on the copied folder (a disk hit: a
restart between turns N-1 and N), and to a daemon with no prompt cache
(cold). Each fresh daemon's worker is started by a short request first,
so that no figure includes loading the model. Prints a table: scenario,
prompt tokens, cached tokens, time to first token, whole request.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

WORDS = (
    "the agent reads the file then edits the function and runs the tests "
    "which fail on the third case so it opens the log and looks again "
).split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, mlxd, model, work, cache_args):
        self.port = free_port()
        empty = os.path.join(work, "empty")
        os.makedirs(empty, exist_ok=True)
        self.log = open(os.path.join(work, "serve.log"), "a")
        self.proc = subprocess.Popen(
            [mlxd, "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--admin", "false", "--models-dir", empty, "--hf-cache", empty,
             "--log-level", "warn", "--model", f"m={model}", *cache_args],
            stdout=self.log, stderr=self.log,
            env={k: v for k, v in os.environ.items() if not k.startswith("MLXD_")},
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mlxd serve exited: see {self.log.name}")
                time.sleep(0.05)
        raise TimeoutError("mlxd serve did not listen")

    def chat(self, messages, answer):
        """Streams one greedy turn: (text, usage, ttft s, total s)."""
        body = json.dumps({
            "model": "m", "messages": messages, "max_tokens": answer,
            "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True},
        }).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/chat/completions", data=body,
            headers={"Content-Type": "application/json"})
        start = time.monotonic()
        ttft, text, usage = None, [], None
        with urllib.request.urlopen(req, timeout=1800) as resp:
            for line in resp:
                if not line.startswith(b"data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for c in chunk.get("choices", []):
                    piece = c.get("delta", {}).get("content")
                    if piece:
                        ttft = ttft or time.monotonic() - start
                        text.append(piece)
        return "".join(text), usage or {}, ttft or 0.0, time.monotonic() - start

    def warm_up(self):
        """Starts the worker (loads the model) with a short request."""
        body = json.dumps({"model": "m", "prompt": "Hi", "max_tokens": 1}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/completions", data=body,
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=1800) as resp:
            resp.read()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def settle(folder):
    """Waits until the writer has nothing in flight: no temporary files,
    the same bytes for half a second."""
    def size():
        total, tmp = 0, False
        for root, _, files in os.walk(folder):
            for f in files:
                tmp |= f.endswith(".tmp")
                total += os.path.getsize(os.path.join(root, f))
        return total, tmp
    last = None
    while True:
        now = size()
        if now == last and not now[1]:
            return
        last = now
        time.sleep(0.5)


def user_turn(i, words):
    return f"Turn {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(words))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mlxd")
    p.add_argument("model")
    p.add_argument("--turns", type=int, default=20)
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--answer", type=int, default=64)
    p.add_argument("--disk", default="32GiB")
    a = p.parse_args()
    # About one token a word: the turns and answers share the budget.
    words = max(8, a.tokens // a.turns - a.answer)
    work = tempfile.mkdtemp(prefix="mlxd-pc-disk-")
    cache = os.path.join(work, "prompt-cache")
    copy = os.path.join(work, "prompt-cache-copy")
    disk = ["--prompt-cache-dir", cache, "--prompt-cache-disk", a.disk]
    rows = []
    try:
        d = Daemon(a.mlxd, a.model, work, disk)
        messages = []
        for i in range(1, a.turns):
            messages.append({"role": "user", "content": user_turn(i, words)})
            text, _, _, _ = d.chat(messages, a.answer)
            messages.append({"role": "assistant", "content": text})
        messages.append({"role": "user", "content": user_turn(a.turns, words)})
        settle(cache)
        shutil.copytree(cache, copy)
        warm = d.chat(messages, a.answer)
        rows.append(("warm (memory)", warm))
        d.stop()
        d = Daemon(a.mlxd, a.model, work,
                   ["--prompt-cache-dir", copy, "--prompt-cache-disk", a.disk])
        d.warm_up()
        restarted = d.chat(messages, a.answer)
        rows.append(("after restart (disk)", restarted))
        d.stop()
        d = Daemon(a.mlxd, a.model, work, ["--prompt-cache", "0"])
        d.warm_up()
        cold = d.chat(messages, a.answer)
        rows.append(("cold", cold))
        d.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"turn {a.turns} of {a.turns}, {a.answer}-token answers")
    print(f"{'scenario':<22} {'prompt':>7} {'cached':>7} {'ttft ms':>9} {'total ms':>9} same text")
    for name, (text, usage, ttft, total) in rows:
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        same = "yes" if text == cold[0] else "no"
        print(f"{name:<22} {usage.get('prompt_tokens', 0):>7} {cached:>7} "
              f"{ttft * 1e3:>9.1f} {total * 1e3:>9.1f} {same}")


if __name__ == "__main__":
    sys.exit(main())
