"""mlx-lm's own sampling on fixed inputs, for crates/engine/tests/sampler.rs.

usage: sampler_reference.py > reference.json

Prints one JSON object:
  "sequences": per case, the inputs (vocabulary size, prompt, the logits
      rows that step t reads as row t % len(rows), the sampling parameters)
      and what mlx-lm picks: the tokens, each token's logprob and the top
      alternatives. The loop is generate_step's: processors on the last
      position's logits with prompt + generated tokens, then
      logprobs = logits - logsumexp(logits), then make_sampler's sampler,
      after mx.random.seed(seed), with its last step (categorical_sampling)
      drawing by the Gumbel-max trick, as the engine does: the argmax of the
      scaled log-probabilities plus mx.random.gumbel noise, which takes the
      same one key from the global generator as mx.random.categorical.
  "filters": apply_top_p / apply_min_p / apply_top_k outputs on a batch of
      log-probability rows; excluded entries (-inf) are written as null.

Presence and frequency penalties follow OpenAI (the generated tokens so far,
no window); they use mlx-lm's processors over the generated tokens only.
Float parameters are rounded to f32 first, as the Rust side holds them.
"""

import json
import struct

import mlx.core as mx
import mlx_lm.sample_utils
from mlx_lm.sample_utils import (
    apply_min_p,
    apply_top_k,
    apply_top_p,
    make_frequency_penalty,
    make_logits_processors,
    make_presence_penalty,
    make_sampler,
)


def gumbel_max_sampling(logits: mx.array, temp: float) -> mx.array:
    scaled = logits * (1.0 / temp)
    return mx.argmax(scaled + mx.random.gumbel(scaled.shape), axis=-1)


mlx_lm.sample_utils.categorical_sampling = gumbel_max_sampling

TOP = 5
UNBOUNDED = 1 << 30


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def random_rows(seed, n, vocab, scale):
    return mx.random.normal((n, vocab), key=mx.random.key(seed)) * scale


DEFAULTS = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "repetition_context_size": 20,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "logit_bias": [],
    "seed": None,
}

# name, vocab, number of logits rows, their scale, prompt, steps, params
CASES = [
    ("temperature_1", 32, 3, 2.0, [1, 2, 3], 24, {"seed": 0}),
    ("temperature_0.7_top_p", 32, 3, 2.0, [4], 24, {"temperature": 0.7, "top_p": 0.9, "seed": 42}),
    ("temperature_1.3_min_p", 32, 3, 2.0, [4], 24, {"temperature": 1.3, "min_p": 0.1, "seed": 7}),
    ("top_k", 32, 3, 1.0, [4], 24, {"top_k": 5, "seed": 123}),
    (
        "all_filters",
        48,
        4,
        1.5,
        [9, 9, 9],
        32,
        {"temperature": 0.8, "top_p": 0.8, "min_p": 0.05, "top_k": 10, "seed": 2024},
    ),
    (
        "repetition_window",
        16,
        2,
        3.0,
        [0, 1, 2, 3, 4, 5, 6, 7],
        32,
        {"repetition_penalty": 1.8, "repetition_context_size": 4, "seed": 5},
    ),
    (
        "bias_presence_frequency",
        16,
        2,
        2.0,
        [3, 3],
        32,
        {
            "logit_bias": [[3, 5.0], [7, -100.0], [11, 2.5]],
            "presence_penalty": 0.5,
            "frequency_penalty": 0.3,
            "seed": 9,
        },
    ),
    (
        "everything",
        40,
        3,
        2.0,
        [5, 6, 7, 5],
        40,
        {
            "temperature": 0.9,
            "top_p": 0.95,
            "min_p": 0.02,
            "top_k": 12,
            "repetition_penalty": 1.2,
            "repetition_context_size": 6,
            "presence_penalty": -0.4,
            "frequency_penalty": 0.6,
            "logit_bias": [[0, -3.0], [39, 1.5]],
            "seed": 18446744073709551615,
        },
    ),
    (
        "greedy_with_penalties",
        16,
        2,
        2.0,
        [1, 2],
        24,
        {
            "temperature": 0.0,
            "repetition_penalty": 1.5,
            "presence_penalty": 1.0,
            "frequency_penalty": 0.5,
        },
    ),
]


def run_case(vocab, rows, prompt, steps, p):
    if p["seed"] is not None:
        mx.random.seed(p["seed"])
    sampler = make_sampler(
        temp=p["temperature"], top_p=p["top_p"], min_p=p["min_p"], top_k=p["top_k"]
    )
    processors = make_logits_processors(
        logit_bias={t: b for t, b in p["logit_bias"]} or None,
        repetition_penalty=(
            p["repetition_penalty"] if p["repetition_penalty"] != 1.0 else None
        ),
        repetition_context_size=p["repetition_context_size"],
    )
    occurrence = []
    if p["presence_penalty"] != 0.0:
        occurrence.append(make_presence_penalty(p["presence_penalty"], UNBOUNDED))
    if p["frequency_penalty"] != 0.0:
        occurrence.append(make_frequency_penalty(p["frequency_penalty"], UNBOUNDED))

    generated, logprob_of_token, top = [], [], []
    for step in range(steps):
        logits = rows[step % rows.shape[0]][None]
        context = mx.array(prompt + generated)
        for processor in processors:
            logits = processor(context, logits)
        if generated:
            for processor in occurrence:
                logits = processor(mx.array(generated), logits)
        logprobs = logits - mx.logsumexp(logits, keepdims=True)
        token = sampler(logprobs).item()
        generated.append(token)
        row = logprobs[0]
        logprob_of_token.append(row[token].item())
        order = mx.argsort(-row)[:TOP]
        top.append([[i, row[i].item()] for i in order.tolist()])
    return generated, logprob_of_token, top


def sequences():
    out = []
    for index, (name, vocab, n_rows, scale, prompt, steps, given) in enumerate(CASES):
        params = dict(DEFAULTS, **given)
        for key in ("temperature", "top_p", "min_p", "repetition_penalty",
                    "presence_penalty", "frequency_penalty"):
            params[key] = f32(params[key])
        params["logit_bias"] = [[t, f32(b)] for t, b in params["logit_bias"]]
        rows = random_rows(1000 + index, n_rows, vocab, scale)
        tokens, logprobs, top = run_case(vocab, rows, prompt, steps, params)
        out.append(
            {
                "name": name,
                "vocab": vocab,
                "prompt": prompt,
                "rows": rows.tolist(),
                "steps": steps,
                "params": params,
                "top_logprobs": TOP,
                "tokens": tokens,
                "token_logprobs": logprobs,
                "top": top,
            }
        )
    return out


def nullable(x):
    return [[None if v == float("-inf") else v for v in row] for row in x.tolist()]


def filters():
    vocab = 24
    logits = random_rows(7, 3, vocab, 2.5)
    # A row with ties, where which tied entries survive top_k is MLX's call.
    tied = mx.array([[0.5, 1.0, 1.0, -1.0, 1.0, 0.0] * 4])
    logits = mx.concatenate([logits, tied], axis=0)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    out = {"logprobs": logprobs.tolist(), "top_p": [], "min_p": [], "top_k": []}
    for top_p in (0.05, 0.3, 0.5, 0.9, 0.99):
        top_p = f32(top_p)
        out["top_p"].append([top_p, nullable(apply_top_p(logprobs, top_p))])
    for min_p in (0.01, 0.1, 0.5, 0.9, 1.0):
        min_p = f32(min_p)
        out["min_p"].append([min_p, nullable(apply_min_p(logprobs, min_p))])
    for top_k in (1, 2, 3, 7, vocab - 1):
        out["top_k"].append([top_k, nullable(apply_top_k(logprobs, top_k))])
    return out


if __name__ == "__main__":
    print(json.dumps({"sequences": sequences(), "filters": filters()}))
