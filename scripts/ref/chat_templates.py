"""Reference outputs for the engine's tokenizer and chat-template tests.

Renders a fixed set of conversations with Hugging Face `transformers`
(`AutoTokenizer.from_pretrained(dir).apply_chat_template(..., tokenize=False)`),
tokenizes the rendered text the way `apply_chat_template(tokenize=True)` does
(`add_special_tokens=False`), and encodes/decodes a few plain strings. The
inputs are written next to the outputs so the Rust tests read both from one
JSON file.

Usage: chat_templates.py TEST_DATA_DIR OUTPUT_JSON
"""

import json
import sys
from pathlib import Path

import tokenizers
import transformers
from transformers import AutoTokenizer

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}

SYSTEM_USER = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]

MULTI_TURN = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello. How can I help?"},
    {"role": "user", "content": "Name three primes."},
]

MULTI_TURN_CLOSED = MULTI_TURN + [{"role": "assistant", "content": "2, 3, 5."}]

UNICODE = [
    {"role": "user", "content": "  Übersetze: 東京は日本の首都です。 مرحبا 👩‍👩‍👧 café\n"},
]

CONTENT_PARTS = [
    {"role": "user", "content": [{"type": "text", "text": "Describe "}, {"type": "text", "text": "a cat."}]},
]

TOOL_CALL_FLOW = [
    {"role": "user", "content": "What's the weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
            }
        ],
    },
    {"role": "tool", "content": '{"temperature": 21, "sky": "clear"}'},
]

THINKING_HISTORY = [
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "<think>\nEasy sum.\n</think>\n\n4"},
    {"role": "user", "content": "And 3+3?"},
]

COMMON_CASES = [
    {"name": "system_user", "messages": SYSTEM_USER, "add_generation_prompt": True},
    {"name": "system_user_no_prompt", "messages": SYSTEM_USER, "add_generation_prompt": False},
    {"name": "multi_turn", "messages": MULTI_TURN, "add_generation_prompt": True},
    {"name": "multi_turn_closed", "messages": MULTI_TURN_CLOSED, "add_generation_prompt": False},
    {"name": "unicode", "messages": UNICODE, "add_generation_prompt": True},
]

QWEN_CASES = COMMON_CASES + [
    {"name": "content_parts", "messages": CONTENT_PARTS, "add_generation_prompt": True},
    {"name": "tools", "messages": SYSTEM_USER, "tools": [WEATHER_TOOL], "add_generation_prompt": True},
    {"name": "tools_no_system", "messages": SYSTEM_USER[1:], "tools": [WEATHER_TOOL], "add_generation_prompt": True},
    {"name": "tool_call_flow", "messages": TOOL_CALL_FLOW, "tools": [WEATHER_TOOL], "add_generation_prompt": True},
    {"name": "thinking_history", "messages": THINKING_HISTORY, "add_generation_prompt": True},
    {
        "name": "enable_thinking_false",
        "messages": SYSTEM_USER,
        "add_generation_prompt": True,
        "kwargs": {"enable_thinking": False},
    },
]

ENCODE_TEXTS = [
    "Hello world",
    " Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "東京は日本の首都です。",
    "مرحبا بالعالم",
    "e\u0301 cafe\u0301 naïve",
    "👩‍👩‍👧 family 🇫🇷 flag 👍🏽",
    "  multiple   spaces\n\n\ttabs\r\n",
    "数字 1234567 and ૐ ༀ ꙮ",
]


def flatten_content(messages):
    """Joins a list of text parts into one string, as mlx-lm's server does
    before templating (the templates expect `content` to be a string)."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part["text"] for part in content if part.get("type") == "text")
        out.append({**message, "content": content})
    return out


def render_cases(tok, cases):
    out = []
    for case in cases:
        kwargs = case.get("kwargs", {})
        text = tok.apply_chat_template(
            flatten_content(case["messages"]),
            tools=case.get("tools"),
            add_generation_prompt=case["add_generation_prompt"],
            tokenize=False,
            **kwargs,
        )
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out.append({**case, "kwargs": kwargs, "text": text, "ids": ids})
    return out


def encode_cases(tok, raw):
    """Encodings by `transformers` and by the `tokenizers` library reading
    the same tokenizer.json. They differ for SentencePiece tokenizers, which
    transformers 5 rebuilds from the vocabulary instead of using the file's
    normalizer."""
    out = []
    for text in ENCODE_TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ids_special = tok(text, add_special_tokens=True)["input_ids"]
        raw_ids = raw.encode(text, add_special_tokens=False).ids
        out.append(
            {
                "text": text,
                "ids": ids,
                "ids_with_special": ids_special,
                "decoded": tok.decode(ids),
                "tokenizers_ids": raw_ids,
                "tokenizers_ids_with_special": raw.encode(text, add_special_tokens=True).ids,
                "tokenizers_decoded": raw.decode(raw_ids, skip_special_tokens=False),
            }
        )
    return out


def main():
    root = Path(sys.argv[1])
    output = Path(sys.argv[2])
    result = {
        "versions": {
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "tokenizers": {},
    }
    for name, cases in (("qwen3", QWEN_CASES), ("llama3", COMMON_CASES), ("llama2", [])):
        path = root / "npm" / name
        tok = AutoTokenizer.from_pretrained(str(path))
        raw = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        result["tokenizers"][name] = {
            "chat": render_cases(tok, cases),
            "encode": encode_cases(tok, raw),
        }
    output.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
