"""Load-to-first-token of `mlxd serve`: from starting the daemon to the first
streamed token of its first request (which starts the worker and loads the
model), with an empty kernel cache (cold: MLX compiles its CUDA kernels) and
then with the cache the cold run left (warm).

usage: coldstart.py MLXD MODEL_DIR WARM_RUNS

Each run has its own HOME, so the worker's kernel cache (~/.cache/mlxd/ptx)
starts empty in the cold run and is copied into each warm run's HOME. Prints
one JSON object.
"""

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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_token(port, deadline):
    body = json.dumps(
        {"model": "m", "prompt": "Hello", "max_tokens": 4, "stream": True}
    ).encode()
    while time.monotonic() < deadline:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                for line in resp:
                    if line.startswith(b"data: {"):
                        return time.monotonic()
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.02)
    raise TimeoutError("no token before the deadline")


def run(mlxd, model, home, empty):
    port = free_port()
    log = open(os.path.join(home, "serve.log"), "w")
    env = dict(os.environ, HOME=home)
    env.pop("MLX_PTX_CACHE_DIR", None)
    start = time.monotonic()
    proc = subprocess.Popen(
        [mlxd, "serve", "--host", "127.0.0.1", "--port", str(port), "--admin", "false",
         "--models-dir", empty, "--hf-cache", empty, "--log-level", "warn",
         "--model", f"m={model}"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        return first_token(port, start + 600) - start
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main(mlxd, model, warm_runs):
    root = tempfile.mkdtemp(prefix="mlxd-coldstart-")
    empty = os.path.join(root, "empty")
    os.makedirs(empty)
    cold_home = os.path.join(root, "cold")
    os.makedirs(cold_home)
    cold = run(mlxd, model, cold_home, empty)
    ptx = os.path.join(cold_home, ".cache", "mlxd", "ptx")
    warm = []
    for i in range(warm_runs):
        home = os.path.join(root, f"warm{i}")
        target = os.path.join(home, ".cache", "mlxd", "ptx")
        if os.path.isdir(ptx):
            shutil.copytree(ptx, target)
        else:
            os.makedirs(target)
        warm.append(run(mlxd, model, home, empty))
    kernels = len(os.listdir(ptx)) if os.path.isdir(ptx) else 0
    print(json.dumps({
        "model": model,
        "cold_s": cold,
        "warm_s": warm,
        "kernel_cache_files": kernels,
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
