// Prefill attention composed of MLX operations on the CUDA backend.
//
// For more than one query, MLX's CUDA backend would run attention through
// cuDNN, whose execution plan is built for each new combination of shapes
// (query and key lengths, batch, strides) and kept in a cache: 50-75 ms per
// new shape on an H100, up to 0.7 s for some, paid inside the request. A
// server sees a new prompt length, or a new cached-prefix length, with
// nearly every request, so most requests would pay it in their time to
// first token. The composed product (two batched matmuls and a softmax) has
// no such cost. Its scores are held whole, so long prompts are taken in
// blocks of queries that keep them within a bound; every query sees all of
// its keys in one block, so no block needs another's softmax statistics.

#include "attention.h"
#include "cuda_jit.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace mx = mlx::core;

namespace mlxs {

namespace {

// Score elements (batch x query heads x queries x keys) held at once: 2^27
// (256 MiB in 16 bits, as much again for the probabilities).
constexpr int64_t kMaxScores = int64_t{1} << 27;

// `mask` ([.., L, S], up to 4 dimensions, broadcast over [B, Hq, L, S])
// laid out over the grouped scores [B, Hkv, Hq / Hkv, L, S].
mx::array group_mask(mx::array mask, int hkv, int repeats) {
  while (mask.ndim() < 4) {
    mask = mx::expand_dims(mask, 0);
  }
  if (mask.shape(1) == 1) {
    return mx::expand_dims(mask, 2);
  }
  return mx::reshape(mask, {mask.shape(0), hkv, repeats, mask.shape(2), mask.shape(3)});
}

// Attention of the queries `q` ([B, Hq, L, D]) whose first sits at key
// position `first_row` when `causal`; `mask` already grouped and cut to
// these queries.
mx::array attend(
    const mx::array& q,
    const mx::array& k,
    const mx::array& v,
    float scale,
    bool causal,
    int first_row,
    const std::optional<mx::array>& mask) {
  const int b = q.shape(0), hq = q.shape(1), l = q.shape(2), d = q.shape(3);
  const int hkv = k.shape(1), s = k.shape(2);
  const int repeats = hq / hkv;
  // The query heads that share a key head, stacked along the queries
  // ([B, Hkv, R * L, D], a view of the scaled q): both products are plain
  // batched matmuls over [B, Hkv], keys and values never repeated.
  auto queries = mx::reshape(mx::multiply(q, mx::array(scale, q.dtype())), {b, hkv, repeats * l, d});
  auto scores = mx::matmul(queries, mx::swapaxes(k, -1, -2));
  // Masks apply to the scores seen as [B, Hkv, R, L, S] (a view). Masked
  // scores take the type's lowest value, not -inf, so a row with every key
  // masked averages instead of producing NaN.
  auto grouped = mx::reshape(scores, {b, hkv, repeats, l, s});
  const auto lowest = mx::array(mx::finfo(scores.dtype()).min, scores.dtype());
  if (causal) {
    auto rows = mx::reshape(mx::arange(first_row, first_row + l, mx::int32), {l, 1});
    auto cols = mx::reshape(mx::arange(0, s, mx::int32), {1, s});
    grouped = mx::where(mx::greater_equal(rows, cols), grouped, lowest);
  }
  if (mask) {
    grouped = mask->dtype() == mx::bool_
        ? mx::where(*mask, grouped, lowest)
        : mx::add(grouped, mx::astype(*mask, scores.dtype()));
  }
  auto probs = mx::softmax(mx::reshape(grouped, {b, hkv, repeats * l, s}), -1, /* precise = */ true);
  // Values may be narrower or wider than queries and keys (latent
  // attention): the output takes their width.
  return mx::reshape(mx::matmul(probs, v), {b, hq, l, v.shape(3)});
}

} // namespace

bool compose_attention(const mx::array& q) {
  return q.ndim() == 4 && q.shape(2) > 1 && cuda_available() &&
      mx::default_device().type == mx::Device::gpu;
}

mx::array attention_composed(
    const mx::array& q,
    const mx::array& k,
    const mx::array& v,
    float scale,
    bool causal,
    const std::optional<mx::array>& mask,
    int64_t max_scores) {
  if (q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4) {
    throw std::invalid_argument("attention takes [batch, heads, length, dim] arrays");
  }
  const int b = q.shape(0), hq = q.shape(1), l = q.shape(2);
  const int hkv = k.shape(1), s = k.shape(2);
  if (hkv == 0 || hq % hkv != 0 || v.shape(1) != hkv || v.shape(2) != s) {
    throw std::invalid_argument("attention: the query heads must be a multiple of the key heads");
  }
  const int repeats = hq / hkv;
  const auto grouped = mask ? std::optional(group_mask(*mask, hkv, repeats)) : std::nullopt;
  // Bottom-right alignment: query i sits at key position i + S - L.
  const int first_row = s - l;
  const int64_t per_query = std::max<int64_t>(int64_t{b} * hq * s, 1);
  const int64_t bound = max_scores > 0 ? max_scores : kMaxScores;
  const int block = static_cast<int>(std::clamp<int64_t>(bound / per_query, 1, l));
  if (block == l) {
    return attend(q, k, v, scale, causal, first_row, grouped);
  }
  const int query_axis = 3; // of the grouped mask [B, Hkv, R, L, S]
  std::vector<mx::array> outs;
  for (int start = 0; start < l; start += block) {
    const int end = std::min(start + block, l);
    auto q_block = mx::slice(q, {0, 0, start, 0}, {b, hq, end, q.shape(3)});
    std::optional<mx::array> m_block;
    if (grouped) {
      auto m = *grouped;
      if (m.shape(query_axis) != 1) {
        auto lo = mx::Shape(m.ndim(), 0);
        auto hi = m.shape();
        lo[query_axis] = start;
        hi[query_axis] = end;
        m = mx::slice(m, lo, hi);
      }
      m_block = m;
    }
    outs.push_back(attend(q_block, k, v, scale, causal, first_row + start, m_block));
  }
  return mx::concatenate(outs, 2);
}

} // namespace mlxs
