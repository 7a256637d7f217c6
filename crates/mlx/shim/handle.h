// What the shim's other C++ files share with shim.cpp: the array handle's
// layout, the dtype codes' mapping and the thread's last error.
#pragma once

#include "mlx/mlx.h"

struct mlxs_array {
  mlx::core::array inner;
};

namespace mlxs {

// MLX's dtype of a shim dtype code (shim.h); throws on an unknown code.
mlx::core::Dtype dtype_of_code(int code);

// Keeps `msg` as the message mlxs_last_error() returns on this thread.
void set_last_error(const char* msg);

} // namespace mlxs
