// The C entry points of distributed.h over `mlx::core::distributed`. Each
// collective is a lazy graph node like any other operation: it runs, and
// waits on its peers, when the graph holding it is evaluated.

#include "distributed.h"
#include "handle.h"

#include <exception>
#include <stdexcept>
#include <string>

#include "mlx/distributed/distributed.h"
#include "mlx/distributed/ops.h"

namespace mx = mlx::core;
namespace dist = mlx::core::distributed;
using mlxs::A;
using mlxs::wrap;

struct mlxs_group {
  dist::Group inner;
};

namespace {

const dist::Group& G(const mlxs_group* g) {
  if (g == nullptr) {
    throw std::invalid_argument("null group handle");
  }
  return g->inner;
}


} // namespace

extern "C" {

int mlxs_dist_is_available(const char* backend, bool* out) {
  MLXS_TRY(*out = dist::is_available(std::string(backend ? backend : "any")))
}

int mlxs_dist_init(const char* backend, bool strict, mlxs_group** out) {
  MLXS_TRY(
      *out = new mlxs_group{dist::init(strict, std::string(backend ? backend : "any"))})
}

void mlxs_group_free(mlxs_group* g) {
  delete g;
}

mlxs_group* mlxs_group_clone(const mlxs_group* g) {
  return g ? new mlxs_group{g->inner} : nullptr;
}

int mlxs_group_rank(const mlxs_group* g) {
  return g ? g->inner.rank() : 0;
}

int mlxs_group_size(const mlxs_group* g) {
  return g ? g->inner.size() : 1;
}

int mlxs_dist_all_sum(const mlxs_array* x, const mlxs_group* g, mlxs_array** out) {
  MLXS_TRY(*out = wrap(dist::all_sum(A(x), G(g))))
}

int mlxs_dist_all_max(const mlxs_array* x, const mlxs_group* g, mlxs_array** out) {
  MLXS_TRY(*out = wrap(dist::all_max(A(x), G(g))))
}

int mlxs_dist_all_gather(const mlxs_array* x, const mlxs_group* g, mlxs_array** out) {
  MLXS_TRY(*out = wrap(dist::all_gather(A(x), G(g))))
}

int mlxs_dist_send(const mlxs_array* x, int dst, const mlxs_group* g, mlxs_array** out) {
  MLXS_TRY(*out = wrap(dist::send(A(x), dst, G(g))))
}

int mlxs_dist_recv(
    const int32_t* shape,
    size_t ndim,
    int dtype,
    int src,
    const mlxs_group* g,
    mlxs_array** out) {
  MLXS_TRY(*out = wrap(dist::recv(
                    mx::Shape(shape, shape + ndim), mlxs::dtype_of_code(dtype), src, G(g))))
}

int mlxs_dist_recv_like(const mlxs_array* x, int src, const mlxs_group* g, mlxs_array** out) {
  MLXS_TRY(*out = wrap(dist::recv_like(A(x), src, G(g))))
}

} // extern "C"
