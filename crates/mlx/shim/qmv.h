// The project's own CUDA kernel for a 4-bit affine quantized matrix times a
// few activation rows (`x @ W.T`, decode steps), run through MLX's custom
// kernel primitive, compiled by cuda_jit.cpp. See qmv.cpp.
#pragma once

#include <optional>

#include "mlx/mlx.h"

namespace mlxs {

// What the kernel does with the product before writing it.
enum class Epilogue {
  none = 0,
  // + extra[n]: a linear layer's bias.
  bias = 1,
  // + extra[m, n] (the output's shape): a residual connection.
  residual = 2,
  // The weight's rows are a gate's then an up projection's, as many each:
  // the output is silu(gate) * up, half as wide.
  swiglu = 3,
};

// `x @ W.T` (of `rms_norm(x, norm, eps)` when `norm` is given), then
// `epilogue`, with the project's kernel when it applies (the CUDA backend,
// 4-bit affine weights, 1 to 8 rows of activations, or up to 64 rows of
// 16-bit ones, shapes and layout it handles), else nullopt and the caller
// uses MLX's own product.
std::optional<mlx::core::array> custom_qmv(
    const mlx::core::array& x,
    const mlx::core::array& w,
    const mlx::core::array& scales,
    const mlx::core::array& biases,
    int group_size,
    int bits,
    const mlx::core::array* norm = nullptr,
    float eps = 0.0f,
    Epilogue epilogue = Epilogue::none,
    const mlx::core::array* extra = nullptr);

// Whether custom_qmv may be used at all (default: yes).
void set_custom_qmv_enabled(bool enabled);

// From how many rows of activations on (up to 64) custom_qmv runs its
// tensor-core body (16-bit activations, sm_80 or later) instead of the
// vector body, which serves 1 to 8 rows (default: 9).
void set_custom_qmm_min_rows(int rows);

// Whether the running MLX has the CUDA backend the kernel needs.
bool custom_qmv_available();

} // namespace mlxs
