"""Text completions through the official SDK: string, list and token-id
prompts, echo, logprobs, streaming."""

from __future__ import annotations

import math

IGNORE_EOS = {"ignore_eos": True}


def complete(client, **kwargs):
    args = dict(model="tiny", max_tokens=6, temperature=0, extra_body=IGNORE_EOS)
    args.update(kwargs)
    return client.completions.create(**args)


def test_a_string_prompt_completes(client):
    r = complete(client, prompt="Once upon a time")
    assert r.object == "text_completion"
    assert r.id.startswith("cmpl-")
    assert len(r.choices) == 1
    assert r.choices[0].text
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 6
    assert r.usage.prompt_tokens > 0


def test_a_list_of_prompts_gives_one_choice_each(client):
    r = complete(client, prompt=["Once upon a time", "The quick brown fox"])
    assert [c.index for c in r.choices] == [0, 1]
    single = complete(client, prompt="The quick brown fox")
    # Greedy: the second prompt's choice is what that prompt alone gives.
    assert r.choices[1].text == single.choices[0].text
    assert r.usage.prompt_tokens == (
        complete(client, prompt="Once upon a time").usage.prompt_tokens
        + single.usage.prompt_tokens
    )
    assert r.usage.completion_tokens == 12


def test_prompts_times_n_choices(client):
    r = complete(client, prompt=["a", "b"], n=2, max_tokens=2, temperature=1.0, seed=3)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]


def test_a_token_id_prompt_is_taken_as_is(client):
    r = complete(client, prompt=[504, 3458, 282, 253])
    assert r.usage.prompt_tokens == 4
    assert r.choices[0].finish_reason == "length"
    batch = complete(client, prompt=[[504, 3458, 282, 253], [1, 2]])
    assert batch.usage.prompt_tokens == 6
    assert batch.choices[0].text == r.choices[0].text


def test_echo_puts_the_prompt_before_the_text(client):
    prompt = "Echo this prompt"
    plain = complete(client, prompt=prompt)
    echoed = complete(client, prompt=prompt, echo=True)
    assert echoed.choices[0].text == prompt + plain.choices[0].text
    only = complete(client, prompt=prompt, echo=True, max_tokens=0)
    assert only.choices[0].text == prompt
    assert only.usage.completion_tokens == 0


def test_completion_logprobs_cover_every_token(client):
    r = complete(client, prompt="Once upon a time", logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert len(lp.text_offset) == 6
    assert lp.text_offset[0] == 0
    assert lp.text_offset == sorted(lp.text_offset)
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen <= 0.0 and math.isfinite(chosen)
        assert 1 <= len(top) <= 2
        # Greedy: the chosen token is the most likely one.
        assert abs(chosen - max(top.values())) < 1e-4


def test_echoed_logprob_offsets_start_after_the_prompt(client):
    prompt = "Offsets"
    r = complete(client, prompt=prompt, echo=True, logprobs=1, max_tokens=3)
    assert r.choices[0].logprobs.text_offset[0] == len(prompt)


def test_a_streamed_completion_matches_the_whole_one(client):
    whole = complete(client, prompt="Once upon a time", max_tokens=8)
    chunks = list(
        complete(
            client, prompt="Once upon a time", max_tokens=8, stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "text_completion" for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 8


def test_a_streamed_echo_sends_the_prompt_first(client):
    chunks = [
        c for c in complete(client, prompt="Streamed echo", echo=True, stream=True) if c.choices
    ]
    assert chunks[0].choices[0].text == "Streamed echo"
