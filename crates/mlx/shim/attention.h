// Attention for several queries at once (prefill) composed of MLX
// operations, where MLX's fused kernel has a per-shape cost. See
// attention.cpp.
#pragma once

#include <cstdint>
#include <optional>

#include "mlx/mlx.h"

namespace mlxs {

// softmax(q @ kᵀ * scale + mask) @ v, as `mx::fast::scaled_dot_product_attention`
// computes it (`q: [B, Hq, L, D]`, `k, v: [B, Hkv, S, D]`, grouped-query
// heads; `causal`: query i sees keys up to i + S - L; `mask`: boolean, true =
// attend, or additive, broadcast to [B, Hq, L, S]), from matmul and softmax,
// in blocks of queries whose scores hold at most `max_scores` elements
// (0: the default, 2^27).
mlx::core::array attention_composed(
    const mlx::core::array& q,
    const mlx::core::array& k,
    const mlx::core::array& v,
    float scale,
    bool causal,
    const std::optional<mlx::core::array>& mask,
    int64_t max_scores = 0);

// Whether the shim's attention composes the product rather than run MLX's
// fused kernel: on the CUDA backend, for more than one query.
bool compose_attention(const mlx::core::array& q);

} // namespace mlxs
