// A 4-bit affine quantized matrix times a row of activations
// (`x @ W.T`), the product that dominates a decode step, as a CUDA kernel
// run through MLX's custom kernel primitive (compiled with NVRTC on first
// use and kept on disk, see cuda_jit.cpp).
//
// Why: MLX's own kernel for this shape reads the weights at about a quarter
// of the GPU's memory bandwidth, and a decode step of a 7B model is mostly
// these products. This one goes faster by
//   - giving every thread whole 16-byte loads of packed weights (32 values,
//     always inside one quantization group),
//   - turning each 4-bit value q into a float with a shift and one bit
//     operation: the nibble is masked into the mantissa of 128.0f, where
//     its unit is 1, giving exactly 128 + q; the 128 is taken out once per
//     32 values through the sum of the activations, which every output of
//     the block shares,
//   - computing `NR` outputs per block, so each activation is loaded and
//     converted once for `NR` weight rows.
// And a step runs fewer operations when what follows the product is done in
// the same kernel (Epilogue): a bias, a residual, or the SwiGLU of a fused
// gate/up product. Accumulation is in f32 throughout; results differ from
// MLX's product by summation order, and with an epilogue by one rounding to
// the activation type fewer.

#include "qmv.h"

#include "cuda_jit.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <compare>
#include <cstdio>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "mlx/compile.h"
#include "mlx/fast.h"

namespace mx = mlx::core;

namespace mlxs {

namespace {

// Compiled without CUDA's headers (NVRTC alone, whatever CUDA toolkit the
// machine has or lacks): the 16-bit float types are their bits, converted
// with bit operations (bfloat16) or the PTX conversion instructions (half).
constexpr const char* kHeader = R"(
namespace mlxs_qmv {

struct bf16 { unsigned short bits; };
struct f16 { unsigned short bits; };

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) {
  return __uint_as_float(static_cast<unsigned int>(v.bits) << 16);
}
__device__ __forceinline__ float half_bits_to_float(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ float to_float(f16 v) { return half_bits_to_float(v.bits); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
// Rounded to nearest even, as __float2bfloat16 rounds; NaN stays NaN.
__device__ __forceinline__ void store(bf16* p, float v) {
  unsigned int u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    p->bits = static_cast<unsigned short>((u >> 16) | 0x40u);
    return;
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  p->bits = static_cast<unsigned short>(u >> 16);
}
__device__ __forceinline__ void store(f16* p, float v) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
  p->bits = h;
}

// Eight consecutive values from p; `aligned`: p is 16-byte aligned.
__device__ __forceinline__ void load8(const float* p, float* v, bool aligned) {
  if (aligned) {
    const float4 a = reinterpret_cast<const float4*>(p)[0];
    const float4 b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  } else {
    for (int i = 0; i < 8; ++i) v[i] = p[i];
  }
}

// A bfloat16 is the high half of the float of the same value.
__device__ __forceinline__ void load8(const bf16* p, float* v, bool aligned) {
  if (aligned) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const unsigned int words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = __uint_as_float(words[i] << 16);
      v[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
  } else {
    for (int i = 0; i < 8; ++i) v[i] = to_float(p[i]);
  }
}

__device__ __forceinline__ void load8(const f16* p, float* v, bool aligned) {
  if (aligned) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const unsigned int words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = half_bits_to_float(static_cast<unsigned short>(words[i] & 0xffffu));
      v[2 * i + 1] = half_bits_to_float(static_cast<unsigned short>(words[i] >> 16));
    }
  } else {
    for (int i = 0; i < 8; ++i) v[i] = to_float(p[i]);
  }
}

// The eight 4-bit values of `u` (value i in bits 4i..4i+3), each as the
// float 128 + q: the nibble is moved to bits 16..19 under the exponent of
// 2^7, where those bits are worth 1 each.
__device__ __forceinline__ void unpack8(unsigned int u, float* v) {
  v[0] = __uint_as_float(((u << 16) & 0xf0000u) | 0x43000000u);
  v[1] = __uint_as_float(((u << 12) & 0xf0000u) | 0x43000000u);
  v[2] = __uint_as_float(((u << 8) & 0xf0000u) | 0x43000000u);
  v[3] = __uint_as_float(((u << 4) & 0xf0000u) | 0x43000000u);
  v[4] = __uint_as_float((u & 0xf0000u) | 0x43000000u);
  v[5] = __uint_as_float(((u >> 4) & 0xf0000u) | 0x43000000u);
  v[6] = __uint_as_float(((u >> 8) & 0xf0000u) | 0x43000000u);
  v[7] = __uint_as_float(((u >> 12) & 0xf0000u) | 0x43000000u);
}

__device__ __forceinline__ float silu(float v) { return v / (1.0f + __expf(-v)); }

} // namespace mlxs_qmv
)";

// The kernel's body. Constants (set per shape): M activation rows, NR
// output columns per block, K inputs, N weight rows, GS the quantization
// group, THREADS per block (a multiple of 32), EPI what follows the product
// (0 nothing, 1 add a bias row `extra[n]`, 2 add a residual `extra[m, n]`,
// 3 SwiGLU: the weight's first N/2 rows are the gate's and the rest the
// up projection's, and the output is silu(gate) * up, N/2 wide), NORM
// whether x is first RMS-normalized with weight `norm` and epsilon the float
// of bits EPS_BITS (x * g is multiplied with the weights, and the block's
// sums by 1 / rms(x) at the end: every block sees all of x).
// Block b computes output columns [b * NR, b * NR + NR) for every row of x;
// its threads split each weight row's 16-byte chunks and sum at the end.
constexpr const char* kBody = R"(
  using namespace mlxs_qmv;
  (void)extra;
  (void)norm;
  constexpr int CHUNKS = K / 32;
  constexpr int GROUPS = K / GS;
  constexpr int WARPS = THREADS / 32;
  constexpr int OUT_N = EPI == 3 ? N / 2 : N;
  constexpr int ROWS = EPI == 3 ? 2 * NR : NR;
  const int tid = threadIdx.x;
  const int n0 = blockIdx.x * NR;
  const uint4* chunks = reinterpret_cast<const uint4*>(w);
  const bool aligned = (reinterpret_cast<unsigned long long>(x) & 15) == 0;

  const bool norm_aligned = (reinterpret_cast<unsigned long long>(norm) & 15) == 0;
  float acc[M][ROWS], squares[M];
#pragma unroll
  for (int m = 0; m < M; ++m) {
    squares[m] = 0.0f;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[m][r] = 0.0f;
  }

  for (int c = tid; c < CHUNKS; c += THREADS) {
    uint4 q[ROWS];
    float scale[ROWS], bias[ROWS];
    const int g = (c * 32) / GS;
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const unsigned long long row = EPI == 3 && r >= NR ? OUT_N + n0 + r - NR : n0 + r;
      q[r] = chunks[row * CHUNKS + c];
      scale[r] = to_float(scales[row * GROUPS + g]);
      bias[r] = to_float(biases[row * GROUPS + g]);
    }
    // dot: x times (128 + q); sum: x; (with NORM x is x * g, and squares
    // sums the squares of x itself).
    float dot[M][ROWS], sum[M];
#pragma unroll
    for (int m = 0; m < M; ++m) {
      sum[m] = 0.0f;
#pragma unroll
      for (int r = 0; r < ROWS; ++r) dot[m][r] = 0.0f;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float xv[M][8];
#pragma unroll
      for (int m = 0; m < M; ++m) {
        load8(x + static_cast<unsigned long long>(m) * K + c * 32 + i * 8, xv[m], aligned);
        if constexpr (NORM) {
          float g[8];
          load8(norm + c * 32 + i * 8, g, norm_aligned);
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            squares[m] = fmaf(xv[m][j], xv[m][j], squares[m]);
            xv[m][j] *= g[j];
          }
        }
        sum[m] += ((xv[m][0] + xv[m][1]) + (xv[m][2] + xv[m][3])) +
            ((xv[m][4] + xv[m][5]) + (xv[m][6] + xv[m][7]));
      }
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        const unsigned int u = i == 0 ? q[r].x : i == 1 ? q[r].y : i == 2 ? q[r].z : q[r].w;
        float v[8];
        unpack8(u, v);
#pragma unroll
        for (int m = 0; m < M; ++m) {
#pragma unroll
          for (int j = 0; j < 8; ++j) dot[m][r] = fmaf(xv[m][j], v[j], dot[m][r]);
        }
      }
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        acc[m][r] += scale[r] * dot[m][r] + (bias[r] - 128.0f * scale[r]) * sum[m];
      }
    }
  }

  // Per warp: M * ROWS sums, then M sums of squares.
  __shared__ float partial[WARPS][M * (ROWS + 1)];
#pragma unroll
  for (int m = 0; m < M; ++m) {
#pragma unroll
    for (int r = 0; r <= ROWS; ++r) {
      if (r == ROWS && !NORM) break;
      float v = r < ROWS ? acc[m][r] : squares[m];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if ((tid & 31) == 0) partial[tid / 32][m * (ROWS + 1) + r] = v;
    }
  }
  __syncthreads();
  if (tid < M * NR) {
    const int m = tid / NR, r = tid % NR;
    float v = 0.0f, up = 0.0f, scale = 1.0f;
#pragma unroll
    for (int k = 0; k < WARPS; ++k) {
      v += partial[k][m * (ROWS + 1) + r];
      if constexpr (EPI == 3) up += partial[k][m * (ROWS + 1) + NR + r];
    }
    if constexpr (NORM) {
      float squares_total = 0.0f;
#pragma unroll
      for (int k = 0; k < WARPS; ++k) squares_total += partial[k][m * (ROWS + 1) + ROWS];
      scale = rsqrtf(squares_total / K + __int_as_float(EPS_BITS));
      v *= scale;
      up *= scale;
    }
    if constexpr (EPI == 1) {
      v += to_float(extra[n0 + r]);
    } else if constexpr (EPI == 2) {
      v += to_float(extra[static_cast<unsigned long long>(m) * OUT_N + n0 + r]);
    } else if constexpr (EPI == 3) {
      v = silu(v) * up;
    }
    store(out + static_cast<unsigned long long>(m) * OUT_N + n0 + r, v);
  }
)";

// Up to 8 rows of activations: a decode step of up to 8 sequences. Every
// row count is a kernel variant of its own (a fraction of a second to
// compile, once per machine). From `max_rows` + 1 rows on, MLX's product
// serves: from 8 rows it switches to a tensor-core kernel that, measured
// on an H100 (`device.sh qmm`), beats this one at every Qwen2.5 shape
// (7B gate/up, 8 rows: 67 µs against 200), while at 2 to 4 rows its
// vector kernel is 1.5 to 3.6 times slower than this one.
constexpr int kMaxRows = 8;
constexpr int kDefaultMaxRows = 7;
constexpr int kMaxThreads = 256;

std::atomic<bool> enabled{true};
std::atomic<int> max_rows{kDefaultMaxRows};

bool is_float(mx::Dtype dtype) {
  return dtype == mx::float32 || dtype == mx::float16 || dtype == mx::bfloat16;
}

// Weights must already be loaded, dense and 16-byte aligned: the kernel reads
// them in place (a copy per call would cost more than the product).
bool dense_and_aligned(const mx::array& a) {
  return a.is_available() && a.flags().row_contiguous && a.offset() % 16 == 0;
}

// Output columns per block: enough blocks to fill the GPU many times over,
// then as many columns as share each loaded activation.
int columns_per_block(int n, int rows) {
  for (int nr : {4, 2}) {
    if (nr * rows <= 16 && n % nr == 0 && n / nr >= 1024) {
      return nr;
    }
  }
  return n % 2 == 0 && n >= 1024 && rows <= 4 ? 2 : 1;
}

// What a launch is specialized for besides its inputs' shapes and dtypes.
struct Variant {
  int group_size;
  int epilogue;
  bool norm;
  int eps_bits;

  auto operator<=>(const Variant&) const = default;
};

// 0 float32, 1 bfloat16, 2 float16 (the kernel's activation types).
int dtype_index(mx::Dtype dtype) {
  return dtype == mx::float32 ? 0 : dtype == mx::bfloat16 ? 1 : 2;
}

// Everything a compiled kernel is specialized for.
struct Spec {
  Variant variant;
  int dtype;
  int rows;
  int k;
  int n;

  auto operator<=>(const Spec&) const = default;

  static Spec of(const Variant& v, const std::vector<mx::array>& inputs) {
    const mx::array& x = inputs[0];
    const int k = x.shape(-1);
    return {v, dtype_index(x.dtype()), static_cast<int>(x.size() / static_cast<size_t>(k)), k,
            inputs[1].shape(0)};
  }

  bool swiglu() const { return variant.epilogue == static_cast<int>(Epilogue::swiglu); }
  bool extra() const {
    return variant.epilogue == static_cast<int>(Epilogue::bias) ||
        variant.epilogue == static_cast<int>(Epilogue::residual);
  }
  int out_n() const { return swiglu() ? n / 2 : n; }
  int columns_per_block() const {
    return mlxs::columns_per_block(out_n(), swiglu() ? 2 * rows : rows);
  }
  int threads() const { return std::min(kMaxThreads, (k / 32 + 31) / 32 * 32); }

  // The kernel's whole source: the helpers, the entry point (named by the
  // compiler's MLXS_ENTRY) with the inputs the variant has, its constants
  // and the body.
  std::string source() const {
    static const char* const types[] = {"float", "mlxs_qmv::bf16", "mlxs_qmv::f16"};
    std::string text = kHeader;
    text += "using T = " + std::string(types[dtype]) + ";\n\n";
    text += "extern \"C\" __global__ void __launch_bounds__(" + std::to_string(threads()) +
        ") MLXS_ENTRY(\n    const T* x, const unsigned int* w, const T* scales, const T* biases,\n";
    std::string missing;
    if (variant.norm) {
      text += "    const T* norm,\n";
    } else {
      missing += "  const T* norm = nullptr;\n";
    }
    if (extra()) {
      text += "    const T* extra,\n";
    } else {
      missing += "  const T* extra = nullptr;\n";
    }
    text += "    T* out) {\n" + missing;
    const std::pair<const char*, int> constants[] = {
        {"M", rows},
        {"NR", columns_per_block()},
        {"K", k},
        {"N", n},
        {"GS", variant.group_size},
        {"THREADS", threads()},
        {"EPI", variant.epilogue},
        {"NORM", variant.norm},
        {"EPS_BITS", variant.eps_bits}};
    for (const auto& [name, value] : constants) {
      text += "  constexpr int " + std::string(name) + " = " + std::to_string(value) + ";\n";
    }
    text += kBody;
    text += "}\n";
    return text;
  }
};

// The compiled kernel of `spec`; null when it cannot be had, which is
// reported once and leaves the product to MLX. The first time a product
// shape is seen, its variants for every row count are compiled (or read
// from disk) at once, in parallel: a batch that grows later then finds its
// kernel ready instead of waiting for the compiler in the middle of a step.
std::shared_ptr<const CompiledKernel> compiled_kernel(const Spec& spec) {
  static std::mutex mutex;
  static std::map<Spec, std::shared_ptr<const CompiledKernel>> kernels;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (auto it = kernels.find(spec); it != kernels.end()) {
      return it->second;
    }
  }
  std::vector<std::pair<Spec, std::future<std::shared_ptr<const CompiledKernel>>>> pending;
  for (int rows = 1; rows <= kMaxRows; ++rows) {
    Spec each = spec;
    each.rows = rows;
    pending.emplace_back(each, std::async(std::launch::async, [each] {
                           return compile_cuda_kernel(each.source(), "mlxs_qmv");
                         }));
  }
  std::lock_guard<std::mutex> lock(mutex);
  for (auto& [each, result] : pending) {
    std::shared_ptr<const CompiledKernel> kernel;
    try {
      kernel = result.get();
    } catch (const std::exception& e) {
      static std::once_flag reported;
      std::call_once(reported, [&] {
        std::cerr << "mlxd: the 4-bit decode kernel is not available, MLX's product runs "
                     "instead: "
                  << e.what() << std::endl;
      });
    }
    kernels.emplace(each, std::move(kernel));
  }
  return kernels.at(spec);
}

// The kernel on inputs already checked, its binary already compiled: x, w,
// scales, biases, then the norm's weight and the epilogue's extra input
// where the variant has them.
std::vector<mx::array> launch(const Variant& v, const std::vector<mx::array>& inputs) {
  const Spec spec = Spec::of(v, inputs);
  const auto kernel = compiled_kernel(spec);
  if (!kernel) {
    throw std::runtime_error("the 4-bit decode kernel was launched without its binary");
  }
  mx::Shape shape = inputs[0].shape();
  shape.back() = spec.out_n();
  const int threads = spec.threads();
  return mx::fast::precompiled_cuda_kernel(
      kernel->name,
      kernel->binary,
      inputs,
      {shape},
      {inputs[0].dtype()},
      {},
      {spec.out_n() / spec.columns_per_block() * threads, 1, 1},
      {threads, 1, 1},
      /* shared_memory */ 0,
      std::nullopt,
      /* ensure_row_contiguous */ true);
}

// `launch` through mx::compile, one compiled function per variant: building
// a custom kernel's primitive (its binary included) on every call would
// cost microseconds on every product of every step, while a compiled
// function traced once per input shape replays the traced graph, sharing
// its primitive.
const std::function<std::vector<mx::array>(const std::vector<mx::array>&)>& compiled_launch(
    const Variant& v) {
  using Function = std::function<std::vector<mx::array>(const std::vector<mx::array>&)>;
  static std::mutex mutex;
  static std::map<Variant, Function> functions;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = functions.find(v);
  if (it == functions.end()) {
    it = functions
             .emplace(
                 v, mx::compile([v](const std::vector<mx::array>& in) { return launch(v, in); }))
             .first;
  }
  return it->second;
}

} // namespace

bool custom_qmv_available() {
  return cuda_available();
}

void set_custom_qmv_enabled(bool on) {
  // Relaxed: a setting read when a graph is built, ordering nothing else.
  enabled.store(on, std::memory_order_relaxed);
}

void set_custom_qmv_max_rows(int rows) {
  // Relaxed: as `enabled`.
  max_rows.store(std::clamp(rows, 0, kMaxRows), std::memory_order_relaxed);
}

std::optional<mx::array> custom_qmv(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int group_size,
    int bits,
    const mx::array* norm,
    float eps,
    Epilogue epilogue,
    const mx::array* extra) {
  if (!enabled.load(std::memory_order_relaxed) || bits != 4 ||
      (group_size != 32 && group_size != 64 && group_size != 128) ||
      !custom_qmv_available() || mx::default_device().type != mx::Device::gpu) {
    return std::nullopt;
  }
  const mx::Dtype dtype = x.dtype();
  if (!is_float(dtype) || scales.dtype() != dtype || biases.dtype() != dtype ||
      w.dtype() != mx::uint32 || x.ndim() < 1 || w.ndim() != 2 || scales.ndim() != 2 ||
      biases.shape() != scales.shape()) {
    return std::nullopt;
  }
  const int k = x.shape(-1);
  const int n = w.shape(0);
  if (k == 0 || k % 32 != 0 || k % group_size != 0 || w.shape(1) * 8 != k ||
      scales.shape(0) != n || scales.shape(1) * group_size != k) {
    return std::nullopt;
  }
  const size_t m = x.size() / static_cast<size_t>(k);
  if (m < 1 || m > static_cast<size_t>(max_rows.load(std::memory_order_relaxed)) ||
      !dense_and_aligned(w) || !dense_and_aligned(scales) ||
      !dense_and_aligned(biases)) {
    return std::nullopt;
  }
  const int out_n = epilogue == Epilogue::swiglu ? n / 2 : n;
  mx::Shape shape = x.shape();
  shape.back() = out_n;
  std::vector<mx::array> inputs = {x, w, scales, biases};
  if (norm != nullptr) {
    if (norm->dtype() != dtype || norm->shape() != mx::Shape{k}) {
      return std::nullopt;
    }
    inputs.push_back(*norm);
  }
  switch (epilogue) {
    case Epilogue::none:
      break;
    case Epilogue::bias:
      if (extra == nullptr || extra->dtype() != dtype || extra->shape() != mx::Shape{n}) {
        return std::nullopt;
      }
      inputs.push_back(*extra);
      break;
    case Epilogue::residual:
      if (extra == nullptr || extra->dtype() != dtype || extra->shape() != shape) {
        return std::nullopt;
      }
      inputs.push_back(*extra);
      break;
    case Epilogue::swiglu:
      if (n % 2 != 0) {
        return std::nullopt;
      }
      break;
  }
  const Variant variant{group_size, static_cast<int>(epilogue), norm != nullptr,
                        norm != nullptr ? std::bit_cast<int>(eps) : 0};
  if (!compiled_kernel(Spec::of(variant, inputs))) {
    return std::nullopt;
  }
  return compiled_launch(variant)(inputs)[0];
}

} // namespace mlxs
