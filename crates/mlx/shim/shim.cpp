// The project's C shim over MLX's C++ API (see shim.h for the contract).
//
// Each entry point runs its body inside MLXS_TRY, which turns any C++
// exception into a return code of 1 and a thread-local message, so nothing
// unwinds into Rust. Arrays are passed as `mlx::core::array*` allocated with
// `new`; copying an array only copies a reference-counted handle to its graph
// node, never its data.

#include "shim.h"
#include "attention.h"
#include "handle.h"
#include "qmv.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <numeric>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "mlx/mlx.h"
#include "mlx/primitives.h"

namespace mx = mlx::core;
using mlxs::A;
using mlxs::opt;
using mlxs::wrap;


namespace {

thread_local std::string last_error;

void set_error(const char* msg) {
  last_error = msg ? msg : "unknown error";
}


// MLX's name of a quantization mode code (see shim.h).
std::string quant_mode(int mode) {
  switch (mode) {
    case 0:
      return "affine";
    case 1:
      return "mxfp4";
    case 2:
      return "nvfp4";
    case 3:
      return "mxfp8";
    default:
      throw std::invalid_argument("unknown quantization mode " + std::to_string(mode));
  }
}

mx::Dtype to_dtype(int code) {
  switch (code) {
    case MLXS_BOOL: return mx::bool_;
    case MLXS_U8: return mx::uint8;
    case MLXS_U16: return mx::uint16;
    case MLXS_U32: return mx::uint32;
    case MLXS_U64: return mx::uint64;
    case MLXS_I8: return mx::int8;
    case MLXS_I16: return mx::int16;
    case MLXS_I32: return mx::int32;
    case MLXS_I64: return mx::int64;
    case MLXS_F16: return mx::float16;
    case MLXS_F32: return mx::float32;
    case MLXS_F64: return mx::float64;
    case MLXS_BF16: return mx::bfloat16;
    case MLXS_C64: return mx::complex64;
  }
  throw std::invalid_argument("unknown dtype code " + std::to_string(code));
}

int from_dtype(mx::Dtype d) {
  switch (d.val()) {
    case mx::Dtype::Val::bool_: return MLXS_BOOL;
    case mx::Dtype::Val::uint8: return MLXS_U8;
    case mx::Dtype::Val::uint16: return MLXS_U16;
    case mx::Dtype::Val::uint32: return MLXS_U32;
    case mx::Dtype::Val::uint64: return MLXS_U64;
    case mx::Dtype::Val::int8: return MLXS_I8;
    case mx::Dtype::Val::int16: return MLXS_I16;
    case mx::Dtype::Val::int32: return MLXS_I32;
    case mx::Dtype::Val::int64: return MLXS_I64;
    case mx::Dtype::Val::float16: return MLXS_F16;
    case mx::Dtype::Val::float32: return MLXS_F32;
    case mx::Dtype::Val::float64: return MLXS_F64;
    case mx::Dtype::Val::bfloat16: return MLXS_BF16;
    case mx::Dtype::Val::complex64: return MLXS_C64;
  }
  return -1;
}

mx::Shape to_shape(const int32_t* dims, size_t n) {
  return mx::Shape(dims, dims + n);
}

std::vector<int> to_axes(const int32_t* axes, size_t n) {
  return std::vector<int>(axes, axes + n);
}

std::vector<mx::array> to_vec(const mlxs_array* const* arrays, size_t n) {
  std::vector<mx::array> v;
  v.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    v.push_back(A(arrays[i]));
  }
  return v;
}


mx::array unary(int op, const mx::array& a) {
  switch (op) {
    case 0: return mx::negative(a);
    case 1: return mx::abs(a);
    case 2: return mx::exp(a);
    case 3: return mx::log(a);
    case 4: return mx::sqrt(a);
    case 5: return mx::rsqrt(a);
    case 6: return mx::square(a);
    case 7: return mx::sigmoid(a);
    case 8: return mx::tanh(a);
    case 9: return mx::erf(a);
    case 10: return mx::sin(a);
    case 11: return mx::cos(a);
    case 12: return mx::reciprocal(a);
    case 13: return mx::logical_not(a);
    case 14: return mx::floor(a);
    case 15: return mx::ceil(a);
    case 16: return mx::log1p(a);
    case 17: return mx::contiguous(a);
  }
  throw std::invalid_argument("unknown unary op " + std::to_string(op));
}

mx::array binary(int op, const mx::array& a, const mx::array& b) {
  switch (op) {
    case 0: return mx::add(a, b);
    case 1: return mx::subtract(a, b);
    case 2: return mx::multiply(a, b);
    case 3: return mx::divide(a, b);
    case 4: return mx::maximum(a, b);
    case 5: return mx::minimum(a, b);
    case 6: return mx::power(a, b);
    case 7: return mx::equal(a, b);
    case 8: return mx::not_equal(a, b);
    case 9: return mx::less(a, b);
    case 10: return mx::less_equal(a, b);
    case 11: return mx::greater(a, b);
    case 12: return mx::greater_equal(a, b);
    case 13: return mx::logical_and(a, b);
    case 14: return mx::logical_or(a, b);
    case 15: return mx::remainder(a, b);
    case 16: return mx::floor_divide(a, b);
  }
  throw std::invalid_argument("unknown binary op " + std::to_string(op));
}

mx::array reduce(int op, const mx::array& a, const std::vector<int>& axes, bool keep) {
  switch (op) {
    case 0: return mx::sum(a, axes, keep);
    case 1: return mx::mean(a, axes, keep);
    case 2: return mx::max(a, axes, keep);
    case 3: return mx::min(a, axes, keep);
    case 4: return mx::prod(a, axes, keep);
    case 5: return mx::logsumexp(a, axes, keep);
    case 6: return mx::all(a, axes, keep);
    case 7: return mx::any(a, axes, keep);
  }
  throw std::invalid_argument("unknown reduction " + std::to_string(op));
}

mx::array random_shaped(
    int kind,
    const int32_t* shape,
    size_t ndim,
    int dtype,
    const mlxs_array* key) {
  auto s = to_shape(shape, ndim);
  auto d = to_dtype(dtype);
  switch (kind) {
    case 0: return mx::random::uniform(s, d, opt(key));
    case 1: return mx::random::normal(s, d, 0.0f, 1.0f, opt(key));
    case 2: return mx::random::gumbel(s, d, opt(key));
  }
  throw std::invalid_argument("unknown distribution");
}


} // namespace

namespace mlxs {

mx::Dtype dtype_of_code(int code) {
  return to_dtype(code);
}

void set_last_error(const char* msg) {
  set_error(msg);
}

std::string quant_mode_name(int mode) {
  return quant_mode(mode);
}

} // namespace mlxs

extern "C" {

const char* mlxs_last_error(void) {
  return last_error.c_str();
}

const char* mlxs_version(void) {
  return mx::version();
}

void mlxs_array_free(mlxs_array* a) {
  delete a;
}

mlxs_array* mlxs_array_clone(const mlxs_array* a) {
  return new mlxs_array{a->inner};
}

int mlxs_array_from_data(
    const void* data,
    const int32_t* shape,
    size_t ndim,
    int dtype,
    mlxs_array** out) {
  MLXS_TRY({
    auto dt = to_dtype(dtype);
    auto s = to_shape(shape, ndim);
    size_t count = 1;
    for (auto d : s) {
      if (d < 0) {
        throw std::invalid_argument("negative dimension in shape");
      }
      count *= static_cast<size_t>(d);
    }
    size_t nbytes = count * dt.size();
    // MLX takes ownership of a buffer it may use without copying; give it a
    // private copy so the caller's slice can be dropped at once.
    void* buf = std::malloc(nbytes > 0 ? nbytes : 1);
    if (buf == nullptr) {
      throw std::bad_alloc();
    }
    if (nbytes > 0) {
      std::memcpy(buf, data, nbytes);
    }
    *out = wrap(mx::array(buf, std::move(s), dt, [](void* p) { std::free(p); }));
  })
}

size_t mlxs_array_ndim(const mlxs_array* a) {
  return a->inner.ndim();
}

void mlxs_array_shape(const mlxs_array* a, int32_t* out) {
  const auto& s = a->inner.shape();
  std::copy(s.begin(), s.end(), out);
}

size_t mlxs_array_size(const mlxs_array* a) {
  return a->inner.size();
}

int mlxs_array_dtype(const mlxs_array* a) {
  return from_dtype(a->inner.dtype());
}

size_t mlxs_array_itemsize(const mlxs_array* a) {
  return a->inner.itemsize();
}

int mlxs_array_read(const mlxs_array* a, void* dst, size_t nbytes) {
  MLXS_TRY({
    auto c = mx::contiguous(A(a));
    c.eval();
    if (c.nbytes() != nbytes) {
      throw std::invalid_argument(
          "read of " + std::to_string(nbytes) + " bytes from an array of " +
          std::to_string(c.nbytes()) + " bytes");
    }
    if (nbytes > 0) {
      std::memcpy(dst, c.data<void>(), nbytes);
    }
  })
}

int mlxs_array_read_scheduled(const mlxs_array* a, void* dst, size_t nbytes) {
  const auto& x = A(a);
  // Scheduled (eval or async_eval) and laid out row-major without
  // broadcasting: its own computation is all there is to wait for, and no
  // new operation joins the stream behind the work queued since.
  if (x.status() == mx::array::Status::unscheduled || !x.flags().row_contiguous ||
      x.data_size() != x.size()) {
    return mlxs_array_read(a, dst, nbytes);
  }
  MLXS_TRY({
    const_cast<mx::array&>(x).wait();
    if (x.nbytes() != nbytes) {
      throw std::invalid_argument(
          "read of " + std::to_string(nbytes) + " bytes from an array of " +
          std::to_string(x.nbytes()) + " bytes");
    }
    if (nbytes > 0) {
      std::memcpy(dst, x.data<void>(), nbytes);
    }
  })
}

int mlxs_eval(const mlxs_array* const* arrays, size_t n) {
  MLXS_TRY(mx::eval(to_vec(arrays, n)))
}

int mlxs_async_eval(const mlxs_array* const* arrays, size_t n) {
  MLXS_TRY(mx::async_eval(to_vec(arrays, n)))
}

int mlxs_graph_census(const mlxs_array* const* arrays, size_t n, char* out, size_t cap, size_t* len) {
  MLXS_TRY({
    // Every operation an evaluation of `arrays` would run: arrays not yet
    // computed, reached through their inputs, each once with its siblings
    // (the other outputs of the same operation). Arrays, not primitives,
    // are counted: a compiled function shares one primitive across calls.
    std::unordered_set<std::uintptr_t> seen;
    std::unordered_map<std::string, size_t> counts;
    std::vector<mx::array> stack = to_vec(arrays, n);
    while (!stack.empty()) {
      mx::array a = std::move(stack.back());
      stack.pop_back();
      if (a.status() != mx::array::Status::unscheduled || !a.has_primitive()) {
        continue;
      }
      if (!seen.insert(a.id()).second) {
        continue;
      }
      for (const auto& sibling : a.siblings()) {
        seen.insert(sibling.id());
      }
      counts[a.primitive().name()]++;
      for (const auto& input : a.inputs()) {
        stack.push_back(input);
      }
    }
    std::string text;
    for (const auto& [name, count] : counts) {
      text += name;
      text += '\t';
      text += std::to_string(count);
      text += '\n';
    }
    *len = text.size();
    std::memcpy(out, text.data(), std::min(cap, text.size()));
  })
}

int mlxs_unary(int op, const mlxs_array* a, mlxs_array** out) {
  MLXS_TRY(*out = wrap(unary(op, A(a))))
}

int mlxs_binary(int op, const mlxs_array* a, const mlxs_array* b, mlxs_array** out) {
  MLXS_TRY(*out = wrap(binary(op, A(a), A(b))))
}

int mlxs_reduce(
    int op,
    const mlxs_array* a,
    const int32_t* axes,
    size_t naxes,
    bool keepdims,
    mlxs_array** out) {
  MLXS_TRY({
    std::vector<int> ax = to_axes(axes, naxes);
    if (naxes == 0) {
      ax.resize(A(a).ndim());
      std::iota(ax.begin(), ax.end(), 0);
    }
    *out = wrap(reduce(op, A(a), ax, keepdims));
  })
}

int mlxs_arg_reduce(int op, const mlxs_array* a, int axis, bool keepdims, mlxs_array** out) {
  MLXS_TRY({
    *out = wrap(
        op == 0 ? mx::argmax(A(a), axis, keepdims)
                : mx::argmin(A(a), axis, keepdims));
  })
}

int mlxs_full(const int32_t* shape, size_t ndim, const mlxs_array* value, int dtype, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::full(to_shape(shape, ndim), A(value), to_dtype(dtype))))
}

int mlxs_arange(double start, double stop, double step, int dtype, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::arange(start, stop, step, to_dtype(dtype))))
}

int mlxs_reshape(const mlxs_array* a, const int32_t* shape, size_t ndim, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::reshape(A(a), to_shape(shape, ndim))))
}

int mlxs_transpose(const mlxs_array* a, const int32_t* axes, size_t naxes, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::transpose(A(a), to_axes(axes, naxes))))
}

int mlxs_broadcast_to(const mlxs_array* a, const int32_t* shape, size_t ndim, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::broadcast_to(A(a), to_shape(shape, ndim))))
}

int mlxs_expand_dims(const mlxs_array* a, int axis, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::expand_dims(A(a), axis)))
}

int mlxs_squeeze(const mlxs_array* a, int axis, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::squeeze(A(a), axis)))
}

int mlxs_slice(
    const mlxs_array* a,
    const int32_t* start,
    const int32_t* stop,
    const int32_t* strides,
    size_t ndim,
    mlxs_array** out) {
  MLXS_TRY({
    *out = wrap(mx::slice(
        A(a),
        to_shape(start, ndim),
        to_shape(stop, ndim),
        to_shape(strides, ndim)));
  })
}

int mlxs_slice_update(
    const mlxs_array* src,
    const mlxs_array* update,
    const int32_t* start,
    const int32_t* stop,
    const int32_t* strides,
    size_t ndim,
    mlxs_array** out) {
  MLXS_TRY({
    *out = wrap(mx::slice_update(
        A(src),
        A(update),
        to_shape(start, ndim),
        to_shape(stop, ndim),
        to_shape(strides, ndim)));
  })
}

int mlxs_concatenate(const mlxs_array* const* arrays, size_t n, int axis, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::concatenate(to_vec(arrays, n), axis)))
}

int mlxs_stack(const mlxs_array* const* arrays, size_t n, int axis, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::stack(to_vec(arrays, n), axis)))
}

int mlxs_split(
    const mlxs_array* a,
    const int32_t* indices,
    size_t nidx,
    int axis,
    mlxs_array** outs) {
  MLXS_TRY({
    auto parts = mx::split(A(a), to_shape(indices, nidx), axis);
    if (parts.size() != nidx + 1) {
      throw std::runtime_error("split returned an unexpected number of parts");
    }
    for (size_t i = 0; i < parts.size(); ++i) {
      outs[i] = wrap(std::move(parts[i]));
    }
  })
}

int mlxs_take(const mlxs_array* a, const mlxs_array* indices, int axis, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::take(A(a), A(indices), axis)))
}

int mlxs_take_along_axis(const mlxs_array* a, const mlxs_array* indices, int axis, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::take_along_axis(A(a), A(indices), axis)))
}

int mlxs_put_along_axis(
    const mlxs_array* a,
    const mlxs_array* indices,
    const mlxs_array* values,
    int axis,
    mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::put_along_axis(A(a), A(indices), A(values), axis)))
}

int mlxs_where(const mlxs_array* cond, const mlxs_array* x, const mlxs_array* y, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::where(A(cond), A(x), A(y))))
}

int mlxs_astype(const mlxs_array* a, int dtype, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::astype(A(a), to_dtype(dtype))))
}

int mlxs_tri_mask(const mlxs_array* a, int k, bool upper, mlxs_array** out) {
  MLXS_TRY(*out = wrap(upper ? mx::triu(A(a), k) : mx::tril(A(a), k)))
}

int mlxs_matmul(const mlxs_array* a, const mlxs_array* b, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::matmul(A(a), A(b))))
}

int mlxs_addmm(const mlxs_array* c, const mlxs_array* a, const mlxs_array* b, float alpha, float beta, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::addmm(A(c), A(a), A(b), alpha, beta)))
}

int mlxs_softmax(const mlxs_array* a, int axis, bool precise, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::softmax(A(a), std::vector<int>{axis}, precise)))
}

int mlxs_sort(const mlxs_array* a, int axis, bool arg, mlxs_array** out) {
  MLXS_TRY(*out = wrap(arg ? mx::argsort(A(a), axis) : mx::sort(A(a), axis)))
}

int mlxs_argpartition(const mlxs_array* a, int kth, int axis, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::argpartition(A(a), kth, axis)))
}

int mlxs_topk(const mlxs_array* a, int k, int axis, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::topk(A(a), k, axis)))
}

int mlxs_cumsum(const mlxs_array* a, int axis, bool reverse, bool inclusive, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::cumsum(A(a), axis, reverse, inclusive)))
}

int mlxs_quantize(
    const mlxs_array* w,
    int group_size,
    int bits,
    int mode,
    mlxs_array** wq,
    mlxs_array** scales,
    mlxs_array** biases) {
  MLXS_TRY({
    auto parts = mx::quantize(A(w), group_size, bits, quant_mode(mode));
    const size_t expected = mode == 0 ? 3 : 2;
    if (parts.size() != expected) {
      throw std::runtime_error("quantize returned " + std::to_string(parts.size()) + " arrays");
    }
    *wq = wrap(std::move(parts[0]));
    *scales = wrap(std::move(parts[1]));
    *biases = mode == 0 ? wrap(std::move(parts[2])) : nullptr;
  })
}

int mlxs_dequantize(
    const mlxs_array* wq,
    const mlxs_array* scales,
    const mlxs_array* biases,
    int group_size,
    int bits,
    int mode,
    mlxs_array** out) {
  MLXS_TRY({
    *out = wrap(mx::dequantize(
        A(wq), A(scales), opt(biases), group_size, bits, quant_mode(mode)));
  })
}

int mlxs_quantized_matmul(
    const mlxs_array* x,
    const mlxs_array* wq,
    const mlxs_array* scales,
    const mlxs_array* biases,
    bool transpose,
    int group_size,
    int bits,
    int mode,
    mlxs_array** out) {
  MLXS_TRY({
    if (transpose && biases != nullptr && mode == 0) {
      if (auto product = mlxs::custom_qmv(A(x), A(wq), A(scales), A(biases), group_size, bits)) {
        *out = wrap(std::move(*product));
        return 0;
      }
    }
    *out = wrap(mx::quantized_matmul(
        A(x), A(wq), A(scales), opt(biases), transpose, group_size, bits, quant_mode(mode)));
  })
}

int mlxs_custom_qmv(
    const mlxs_array* x,
    const mlxs_array* wq,
    const mlxs_array* scales,
    const mlxs_array* biases,
    int group_size,
    int bits,
    const mlxs_array* norm,
    float eps,
    int epilogue,
    const mlxs_array* extra,
    mlxs_array** out) {
  MLXS_TRY({
    if (epilogue < 0 || epilogue > 3) {
      throw std::invalid_argument("unknown epilogue");
    }
    auto product = mlxs::custom_qmv(
        A(x), A(wq), A(scales), A(biases), group_size, bits,
        norm == nullptr ? nullptr : &norm->inner, eps, static_cast<mlxs::Epilogue>(epilogue), extra == nullptr ? nullptr : &extra->inner);
    *out = product ? wrap(std::move(*product)) : nullptr;
  })
}

int mlxs_set_custom_qmv(bool enabled) {
  MLXS_TRY(mlxs::set_custom_qmv_enabled(enabled))
}

int mlxs_custom_qmv_available(bool* available) {
  MLXS_TRY(*available = mlxs::custom_qmv_available())
}

int mlxs_set_custom_qmv_max_rows(int rows) {
  MLXS_TRY(mlxs::set_custom_qmv_max_rows(rows))
}

int mlxs_rms_norm(const mlxs_array* x, const mlxs_array* weight, float eps, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::fast::rms_norm(A(x), opt(weight), eps)))
}

int mlxs_layer_norm(
    const mlxs_array* x,
    const mlxs_array* weight,
    const mlxs_array* bias,
    float eps,
    mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::fast::layer_norm(A(x), opt(weight), opt(bias), eps)))
}

int mlxs_rope(
    const mlxs_array* x,
    int dims,
    bool traditional,
    float base,
    bool has_base,
    float scale,
    int offset,
    const mlxs_array* freqs,
    mlxs_array** out) {
  MLXS_TRY({
    std::optional<float> b = has_base ? std::optional<float>(base) : std::nullopt;
    *out = wrap(mx::fast::rope(A(x), dims, traditional, b, scale, offset, opt(freqs)));
  })
}

int mlxs_rope_offsets(
    const mlxs_array* x,
    int dims,
    bool traditional,
    float base,
    bool has_base,
    float scale,
    const mlxs_array* offsets,
    const mlxs_array* freqs,
    mlxs_array** out) {
  MLXS_TRY({
    std::optional<float> b = has_base ? std::optional<float>(base) : std::nullopt;
    *out = wrap(mx::fast::rope(A(x), dims, traditional, b, scale, A(offsets), opt(freqs)));
  })
}

int mlxs_sdpa(
    const mlxs_array* q,
    const mlxs_array* k,
    const mlxs_array* v,
    float scale,
    const char* mask_mode,
    const mlxs_array* mask,
    mlxs_array** out) {
  MLXS_TRY({
    const std::string mode = mask_mode ? mask_mode : "";
    if (mlxs::compose_attention(A(q))) {
      *out = wrap(mlxs::attention_composed(A(q), A(k), A(v), scale, mode == "causal", opt(mask)));
    } else {
      *out = wrap(mx::fast::scaled_dot_product_attention(A(q), A(k), A(v), scale, mode, opt(mask)));
    }
  })
}

int mlxs_sdpa_sinks(
    const mlxs_array* q,
    const mlxs_array* k,
    const mlxs_array* v,
    float scale,
    const char* mask_mode,
    const mlxs_array* mask,
    const mlxs_array* sinks,
    mlxs_array** out) {
  MLXS_TRY({
    const std::string mode = mask_mode ? mask_mode : "";
    *out = wrap(mx::fast::scaled_dot_product_attention(
        A(q), A(k), A(v), scale, mode, opt(mask), A(sinks)));
  })
}

int mlxs_sdpa_composed(
    const mlxs_array* q,
    const mlxs_array* k,
    const mlxs_array* v,
    float scale,
    const char* mask_mode,
    const mlxs_array* mask,
    int64_t max_scores,
    mlxs_array** out) {
  MLXS_TRY({
    const std::string mode = mask_mode ? mask_mode : "";
    *out = wrap(mlxs::attention_composed(A(q), A(k), A(v), scale, mode == "causal", opt(mask), max_scores));
  })
}

int mlxs_swiglu(const mlxs_array* gate, const mlxs_array* up, mlxs_array** out) {
  MLXS_TRY({
    // Compiled once (thread-safe static initialization); shapeless, so one
    // fused kernel serves every shape, as mlx-lm's `swiglu`.
    static const auto fused = mx::compile(
        [](const std::vector<mx::array>& in) {
          const auto& g = in[0];
          return std::vector<mx::array>{mx::multiply(mx::multiply(g, mx::sigmoid(g)), in[1])};
        },
        /* shapeless = */ true);
    *out = wrap(fused({A(gate), A(up)})[0]);
  })
}

int mlxs_random_key(uint64_t seed, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::random::key(seed)))
}

int mlxs_random_split(const mlxs_array* key, int num, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::random::split(A(key), num)))
}

int mlxs_random_categorical(const mlxs_array* logits, int axis, const mlxs_array* key, mlxs_array** out) {
  MLXS_TRY(*out = wrap(mx::random::categorical(A(logits), axis, opt(key))))
}

int mlxs_random_uniform(const int32_t* shape, size_t ndim, int dtype, const mlxs_array* key, mlxs_array** out) {
  MLXS_TRY(*out = wrap(random_shaped(0, shape, ndim, dtype, key)))
}

int mlxs_random_normal(const int32_t* shape, size_t ndim, int dtype, const mlxs_array* key, mlxs_array** out) {
  MLXS_TRY(*out = wrap(random_shaped(1, shape, ndim, dtype, key)))
}

int mlxs_random_gumbel(const int32_t* shape, size_t ndim, int dtype, const mlxs_array* key, mlxs_array** out) {
  MLXS_TRY(*out = wrap(random_shaped(2, shape, ndim, dtype, key)))
}

} // extern "C"
