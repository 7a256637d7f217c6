"""Concurrent requests through one worker, decoded as one batch: each
request's output is the one it gets alone; a client that leaves mid-stream
does not disturb the others; a resent history hits the prompt cache."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

IGNORE_EOS = {"ignore_eos": True}

PROMPTS = [
    "Once upon a time",
    "The quick brown fox jumps over the lazy dog and then",
    "def fibonacci(n):",
    "In 1492,",
    "A list of prime numbers: 2, 3, 5, 7,",
    "Dear diary, today I learned that",
    "The capital of France is",
    "Water boils at",
]


def complete(client, prompt, **kwargs):
    args = dict(model="tiny", prompt=prompt, max_tokens=10, temperature=0, extra_body=IGNORE_EOS)
    args.update(kwargs)
    return client.completions.create(**args)


def test_concurrent_greedy_requests_equal_the_requests_alone(client, daemon):
    # Long enough that requests sent at once are decoded side by side.
    alone = [complete(client, p, max_tokens=32).choices[0].text for p in PROMPTS]
    prefix = f"overlap-{uuid.uuid4().hex[:8]}-"

    def together_one(i_prompt):
        i, prompt = i_prompt
        headers = {"x-request-id": f"{prefix}{i}"}
        return complete(client, prompt, max_tokens=32, extra_headers=headers).choices[0].text

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(together_one, enumerate(PROMPTS)))
    assert together == alone
    # They ran at once, not one after another: the worker's prefill and
    # decode times add up to more than twice the time from the first prefill to
    # the last Done (one at a time, they would add up to less: each runs
    # between its admission and its Done, and those would not overlap).
    status, _, timings = daemon.admin("GET", f"/admin/timings?prefix={prefix}")
    assert status == 200, timings
    requests = timings["requests"]
    assert len(requests) == len(PROMPTS), timings
    assert all(r["worker_admitted_ns"] and r["done_ns"] for r in requests), requests
    busy_us = sum(r["prefill_us"] + r["decode_us"] for r in requests)
    wall_us = (max(r["done_ns"] for r in requests)
               - min(r["worker_admitted_ns"] for r in requests)) / 1e3
    assert busy_us > 2 * wall_us, (busy_us, wall_us)


def test_concurrent_seeded_sampling_equals_sampling_alone(client):
    def sample(i_prompt):
        i, prompt = i_prompt
        r = complete(client, prompt, temperature=0.9, seed=1000 + i)
        return r.choices[0].text

    alone = [sample(x) for x in enumerate(PROMPTS)]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(sample, enumerate(PROMPTS)))
    assert together == alone


def test_a_stream_closed_mid_batch_leaves_the_others_intact(client):
    alone = [complete(client, p, max_tokens=24).choices[0].text for p in PROMPTS[:4]]

    def leave_early():
        stream = complete(client, PROMPTS[4], max_tokens=200, stream=True)
        for i, _ in enumerate(stream):
            if i == 3:
                stream.close()
                return True
        return False

    with ThreadPoolExecutor(5) as pool:
        quitter = pool.submit(leave_early)
        others = [pool.submit(lambda p=p: complete(client, p, max_tokens=24)) for p in PROMPTS[:4]]
        assert quitter.result()
        assert [f.result().choices[0].text for f in others] == alone


def test_a_resent_history_reuses_the_prompt_cache(client):
    history = [
        {"role": "system", "content": "You are a helpful assistant. " * 8},
        {"role": "user", "content": "Tell me about the sea."},
    ]
    first = client.chat.completions.create(
        model="tiny", messages=history, max_tokens=8, temperature=0, extra_body=IGNORE_EOS
    )
    follow_up = history + [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And about rivers?"},
    ]
    second = client.chat.completions.create(
        model="tiny", messages=follow_up, max_tokens=8, temperature=0, extra_body=IGNORE_EOS
    )
    details = second.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens >= first.usage.prompt_tokens - 1
    assert details.cached_tokens < second.usage.prompt_tokens
