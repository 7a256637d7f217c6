// The C entry points of shim.h over MLX's gathered products: each row of
// a batch multiplied by the matrix its index picks (Mixture-of-Experts
// layers), dense or quantized.

#include "shim.h"
#include "handle.h"

#include <optional>

namespace mx = mlx::core;
using mlxs::A;
using mlxs::opt;
using mlxs::wrap;

extern "C" {

int mlxs_gather_mm(
    const mlxs_array* a,
    const mlxs_array* b,
    const mlxs_array* lhs_indices,
    const mlxs_array* rhs_indices,
    bool sorted_indices,
    mlxs_array** out) {
  MLXS_TRY({
    *out = wrap(mx::gather_mm(A(a), A(b), opt(lhs_indices), opt(rhs_indices), sorted_indices));
  })
}

int mlxs_gather_qmm(
    const mlxs_array* x,
    const mlxs_array* wq,
    const mlxs_array* scales,
    const mlxs_array* biases,
    const mlxs_array* lhs_indices,
    const mlxs_array* rhs_indices,
    bool transpose,
    int group_size,
    int bits,
    int mode,
    bool sorted_indices,
    mlxs_array** out) {
  MLXS_TRY({
    *out = wrap(mx::gather_qmm(
        A(x),
        A(wq),
        A(scales),
        opt(biases),
        opt(lhs_indices),
        opt(rhs_indices),
        transpose,
        group_size,
        bits,
        mlxs::quant_mode_name(mode),
        std::nullopt,
        sorted_indices));
  })
}

} // extern "C"
