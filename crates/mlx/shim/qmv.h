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
// 4-bit affine weights, 1 to 7 rows of activations by default (see
// set_custom_qmv_max_rows), shapes and layout it
// handles), else nullopt and the caller uses MLX's own product.
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

// The most rows of activations custom_qmv takes (0 to 8; default 7): past
// them MLX's product serves.
void set_custom_qmv_max_rows(int rows);

// Whether the running MLX has the CUDA backend the kernel needs.
bool custom_qmv_available();

} // namespace mlxs
