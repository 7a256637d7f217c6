"""mlx-lm on a checkpoint, measured as `mlxd bench --engine` measures mlxd.

usage: mlx_lm_bench.py MODEL_DIR PROMPT_TOKENS GEN_TOKENS REPEATS

The same fixed pseudo-random prompt as mlxd's bench, greedy decoding with
mlx_lm.generate.generate_step, one warm-up run, then REPEATS runs. Prefill
tok/s = prompt tokens / time to the first token; decode tok/s = (tokens - 1)
/ time from the first token to the last. Then fresh_ttft_ms: the time to
the first token of prompts of lengths not seen before (one token shorter
each), as mlxd's bench measures it. Prints JSON like mlxd's report.
"""

import json
import statistics
import sys
import time

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import generate_step


def prompt_ids(n, vocab):
    return [((i * 2654435761) >> 7) % vocab for i in range(n)]


def run(model, prompt, gen):
    start = time.perf_counter()
    first = None
    count = 0
    for _token, _ in generate_step(
        mx.array(prompt), model, max_tokens=gen, sampler=lambda x: mx.argmax(x, axis=-1)
    ):
        count += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    assert count == gen, (count, gen)
    return {
        "prefill_tps": len(prompt) / (first - start),
        "decode_tps": (count - 1) / max(end - first, 1e-9),
        "ttft_ms": (first - start) * 1e3,
    }


def summary(values):
    return {
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "stddev": statistics.pstdev(values),
        "min": min(values),
        "max": max(values),
    }


def main(model_dir, prompt_tokens, gen, repeats):
    model, _tokenizer = load(model_dir)
    vocab = model.args.vocab_size
    prompt = prompt_ids(prompt_tokens, vocab)
    run(model, prompt, gen)
    mx.reset_peak_memory()
    runs = [run(model, prompt, gen) for _ in range(repeats)]
    fresh = [
        run(model, prompt[: prompt_tokens - shorter], 1)["ttft_ms"]
        for shorter in range(1, min(repeats, prompt_tokens - 1) + 1)
    ]
    report = {
        "model": model_dir,
        "engine": "mlx-lm",
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen,
        "runs": runs,
        "peak_memory_bytes": mx.get_peak_memory(),
    }
    for key in ("prefill_tps", "decode_tps", "ttft_ms"):
        report[key] = summary([r[key] for r in runs])
    if fresh:
        report["fresh_ttft_ms"] = summary(fresh)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
