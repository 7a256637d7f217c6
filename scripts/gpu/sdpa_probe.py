"""Times MLX's attention for prompt shapes seen for the first time and
again: on the CUDA backend, cuDNN builds an execution plan for every new
combination of shapes. Run it twice, with MLX_CUDA_USE_CUDNN_SDPA unset and
set to 0, to compare with MLX's unfused attention.

usage: sdpa_probe.py   (after `eval "$(device.sh env)"`)
"""
import os
import time

import mlx.core as mx

# Qwen2.5-0.5B's attention: 14 query heads sharing 2 key heads of 64.
HEADS, KV_HEADS, DIM = 14, 2, 64


def attention_ms(length, cached):
    """One causal attention call of `length` queries after `cached` keys."""
    q = mx.random.normal((1, HEADS, length, DIM)).astype(mx.bfloat16)
    k = mx.random.normal((1, KV_HEADS, cached + length, DIM)).astype(mx.bfloat16)
    v = mx.random.normal((1, KV_HEADS, cached + length, DIM)).astype(mx.bfloat16)
    mx.eval(q, k, v)
    mx.synchronize()
    start = time.perf_counter()
    out = mx.fast.scaled_dot_product_attention(q, k, v, scale=DIM**-0.5, mask="causal")
    mx.eval(out)
    mx.synchronize()
    return (time.perf_counter() - start) * 1e3


def main():
    attention_ms(16, 0)
    print("cudnn", os.environ.get("MLX_CUDA_USE_CUDNN_SDPA", "default"))
    for length, cached in [(37, 0), (42, 0), (50, 0), (97, 0), (130, 0), (511, 0), (512, 512), (1000, 0), (7, 300)]:
        first, second, third = (attention_ms(length, cached) for _ in range(3))
        print(f"L={length:5d} offset={cached:4d}: first {first:8.2f} ms, then {second:6.2f} / {third:6.2f} ms")


main()
