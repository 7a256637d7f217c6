// What the shim's C++ files share: the array handle's layout and its
// accessors, the dtype codes' mapping, the thread's last error, and
// MLXS_TRY, which every entry point's body runs in.
#pragma once

#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "mlx/mlx.h"

struct mlxs_array {
  mlx::core::array inner;
};

namespace mlxs {

// MLX's dtype of a shim dtype code (shim.h); throws on an unknown code.
mlx::core::Dtype dtype_of_code(int code);

// Keeps `msg` as the message mlxs_last_error() returns on this thread.
void set_last_error(const char* msg);

// MLX's name of a quantization mode code (shim.h); throws on an unknown one.
std::string quant_mode_name(int mode);

// The array behind a handle; throws on a null one.
inline const mlx::core::array& A(const mlxs_array* a) {
  if (a == nullptr) {
    throw std::invalid_argument("null array handle");
  }
  return a->inner;
}

// A new handle to `a` (the caller frees it with mlxs_array_free).
inline mlxs_array* wrap(mlx::core::array a) {
  return new mlxs_array{std::move(a)};
}

// The array behind an optional handle.
inline std::optional<mlx::core::array> opt(const mlxs_array* a) {
  if (a == nullptr) {
    return std::nullopt;
  }
  return a->inner;
}

} // namespace mlxs

// Runs an entry point's body: any C++ exception becomes a return code of 1
// and the thread's last error, so nothing unwinds into Rust.
#define MLXS_TRY(...)                                     \
  try {                                                   \
    __VA_ARGS__;                                          \
    return 0;                                             \
  } catch (const std::exception& e) {                     \
    mlxs::set_last_error(e.what());                       \
    return 1;                                             \
  } catch (...) {                                         \
    mlxs::set_last_error("unknown C++ exception in MLX"); \
    return 1;                                             \
  }
