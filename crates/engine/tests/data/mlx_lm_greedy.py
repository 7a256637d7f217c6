"""Greedy tokens of mlx-lm on a checkpoint directory, for given prompts.

usage: mlx_lm_greedy.py MODEL_DIR PROMPTS_JSON MAX_TOKENS

PROMPTS_JSON: [{"messages": [...], "ids": [...]}, ...]. For each prompt,
prints (as one JSON list on stdout) the ids mlx-lm's own tokenizer renders
for the messages with the chat template, and the tokens of
mlx_lm.generate.generate_step with an argmax sampler on the given ids.
"""

import json
import sys

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import generate_step


def main(model_dir, prompts_path, max_tokens):
    model, tokenizer = load(model_dir)
    prompts = json.loads(open(prompts_path).read())
    out = []
    for p in prompts:
        rendered = tokenizer.apply_chat_template(p["messages"], add_generation_prompt=True)
        tokens = [
            int(t)
            for t, _ in generate_step(
                mx.array(p["ids"]),
                model,
                max_tokens=max_tokens,
                sampler=lambda x: mx.argmax(x, axis=-1),
            )
        ]
        out.append({"rendered_ids": list(rendered), "greedy": tokens})
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
