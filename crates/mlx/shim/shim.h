/* The C interface of the project's MLX shim.
 *
 * Every function returns 0 on success and 1 when MLX threw; the message of the
 * exception is then available from mlxs_last_error() on the same thread until
 * the next failing call. Arrays cross the interface as opaque heap handles
 * (`mlxs_array`, an `mlx::core::array`), created by the shim and released with
 * mlxs_array_free. No C++ exception ever leaves this interface.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mlxs_array mlxs_array;
typedef struct mlxs_map mlxs_map;

/* Dtype codes, stable across MLX versions (mapped in the shim). */
enum {
  MLXS_BOOL = 0,
  MLXS_U8 = 1,
  MLXS_U16 = 2,
  MLXS_U32 = 3,
  MLXS_U64 = 4,
  MLXS_I8 = 5,
  MLXS_I16 = 6,
  MLXS_I32 = 7,
  MLXS_I64 = 8,
  MLXS_F16 = 9,
  MLXS_F32 = 10,
  MLXS_F64 = 11,
  MLXS_BF16 = 12,
  MLXS_C64 = 13,
};

const char* mlxs_last_error(void);
const char* mlxs_version(void);

/* Array lifetime and inspection. */
void mlxs_array_free(mlxs_array* a);
mlxs_array* mlxs_array_clone(const mlxs_array* a);
int mlxs_array_from_data(
    const void* data,
    const int32_t* shape,
    size_t ndim,
    int dtype,
    mlxs_array** out);
size_t mlxs_array_ndim(const mlxs_array* a);
void mlxs_array_shape(const mlxs_array* a, int32_t* out);
size_t mlxs_array_size(const mlxs_array* a);
int mlxs_array_dtype(const mlxs_array* a);
size_t mlxs_array_itemsize(const mlxs_array* a);
/* Evaluates `a`, copies it row-major into `dst` (exactly nbytes bytes). */
int mlxs_array_read(const mlxs_array* a, void* dst, size_t nbytes);
/* As mlxs_array_read, but an array already scheduled and row-contiguous is
   waited for and copied as it is: nothing new is queued behind the work in
   flight (other arrays go through mlxs_array_read). */
int mlxs_array_read_scheduled(const mlxs_array* a, void* dst, size_t nbytes);

/* Graph evaluation. */
int mlxs_eval(const mlxs_array* const* arrays, size_t n);
int mlxs_async_eval(const mlxs_array* const* arrays, size_t n);
// The primitives evaluating `arrays` would run, as "name\tcount\n" lines
// (at most `cap` bytes written; `*len` is the full length).
int mlxs_graph_census(const mlxs_array* const* arrays, size_t n, char* out, size_t cap, size_t* len);

/* Element-wise operations, selected by code (see ops.rs). */
int mlxs_unary(int op, const mlxs_array* a, mlxs_array** out);
int mlxs_binary(int op, const mlxs_array* a, const mlxs_array* b, mlxs_array** out);
/* Reductions over `axes` (all axes when naxes == 0 and all_axes is set). */
int mlxs_reduce(
    int op,
    const mlxs_array* a,
    const int32_t* axes,
    size_t naxes,
    bool keepdims,
    mlxs_array** out);
int mlxs_arg_reduce(int op, const mlxs_array* a, int axis, bool keepdims, mlxs_array** out);

/* Constructors. */
int mlxs_full(const int32_t* shape, size_t ndim, const mlxs_array* value, int dtype, mlxs_array** out);
int mlxs_arange(double start, double stop, double step, int dtype, mlxs_array** out);

/* Shape and indexing. */
int mlxs_reshape(const mlxs_array* a, const int32_t* shape, size_t ndim, mlxs_array** out);
int mlxs_transpose(const mlxs_array* a, const int32_t* axes, size_t naxes, mlxs_array** out);
int mlxs_broadcast_to(const mlxs_array* a, const int32_t* shape, size_t ndim, mlxs_array** out);
int mlxs_expand_dims(const mlxs_array* a, int axis, mlxs_array** out);
int mlxs_squeeze(const mlxs_array* a, int axis, mlxs_array** out);
int mlxs_slice(
    const mlxs_array* a,
    const int32_t* start,
    const int32_t* stop,
    const int32_t* strides,
    size_t ndim,
    mlxs_array** out);
int mlxs_slice_update(
    const mlxs_array* src,
    const mlxs_array* update,
    const int32_t* start,
    const int32_t* stop,
    const int32_t* strides,
    size_t ndim,
    mlxs_array** out);
int mlxs_concatenate(const mlxs_array* const* arrays, size_t n, int axis, mlxs_array** out);
int mlxs_stack(const mlxs_array* const* arrays, size_t n, int axis, mlxs_array** out);
/* Splits at `indices` along `axis`; writes nidx + 1 handles into `outs`. */
int mlxs_split(
    const mlxs_array* a,
    const int32_t* indices,
    size_t nidx,
    int axis,
    mlxs_array** outs);
int mlxs_take(const mlxs_array* a, const mlxs_array* indices, int axis, mlxs_array** out);
int mlxs_take_along_axis(const mlxs_array* a, const mlxs_array* indices, int axis, mlxs_array** out);
int mlxs_put_along_axis(
    const mlxs_array* a,
    const mlxs_array* indices,
    const mlxs_array* values,
    int axis,
    mlxs_array** out);
int mlxs_where(const mlxs_array* cond, const mlxs_array* x, const mlxs_array* y, mlxs_array** out);
int mlxs_astype(const mlxs_array* a, int dtype, mlxs_array** out);
int mlxs_tri_mask(const mlxs_array* a, int k, bool upper, mlxs_array** out);

/* Linear algebra, softmax, sorting, scans. */
int mlxs_matmul(const mlxs_array* a, const mlxs_array* b, mlxs_array** out);
/* alpha * (a @ b) + beta * c, fused. */
int mlxs_addmm(const mlxs_array* c, const mlxs_array* a, const mlxs_array* b, float alpha, float beta, mlxs_array** out);
int mlxs_softmax(const mlxs_array* a, int axis, bool precise, mlxs_array** out);
int mlxs_sort(const mlxs_array* a, int axis, bool arg, mlxs_array** out);
int mlxs_argpartition(const mlxs_array* a, int kth, int axis, mlxs_array** out);
int mlxs_topk(const mlxs_array* a, int k, int axis, mlxs_array** out);
int mlxs_cumsum(const mlxs_array* a, int axis, bool reverse, bool inclusive, mlxs_array** out);

/* Affine quantization. `biases` may be null for dequantize/quantized_matmul
 * only in modes without biases; the affine mode always has them. */
/* Quantization modes (`mode`): 0 affine (w = scale * q + bias), 1 mxfp4,
 * 2 nvfp4, 3 mxfp8 (floating-point codes with a shared per-group scale and
 * no biases: `biases` is null in and out). */
int mlxs_quantize(
    const mlxs_array* w,
    int group_size,
    int bits,
    int mode,
    mlxs_array** wq,
    mlxs_array** scales,
    mlxs_array** biases);
int mlxs_dequantize(
    const mlxs_array* wq,
    const mlxs_array* scales,
    const mlxs_array* biases,
    int group_size,
    int bits,
    int mode,
    mlxs_array** out);
int mlxs_quantized_matmul(
    const mlxs_array* x,
    const mlxs_array* wq,
    const mlxs_array* scales,
    const mlxs_array* biases,
    bool transpose,
    int group_size,
    int bits,
    int mode,
    mlxs_array** out);

/* The project's CUDA kernel for 4-bit `x @ W.T` with 1 to 7 rows of x,
 * used by mlxs_quantized_matmul where it applies (see qmv.cpp). `enabled`
 * defaults to true; `available`: the running MLX has the CUDA backend. */
int mlxs_set_custom_qmv(bool enabled);
/* The same kernel with the RMS norm before the product (`norm` the norm's
 * weight [K], or null for none) and what follows it fused in (`epilogue`: 0
 * nothing, 1 + bias row `extra` [N], 2 + residual `extra` (the output's
 * shape), 3 silu(first half) * second half of the rows). `*out` is null
 * where the kernel does not apply. */
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
    mlxs_array** out);
int mlxs_custom_qmv_available(bool* available);
/* The most rows of x the kernel takes (0 to 8; default 7). */
int mlxs_set_custom_qmv_max_rows(int rows);

/* Fused kernels (mlx::core::fast). `weight`, `freqs`, `mask` may be null. */
int mlxs_rms_norm(const mlxs_array* x, const mlxs_array* weight, float eps, mlxs_array** out);
int mlxs_layer_norm(
    const mlxs_array* x,
    const mlxs_array* weight,
    const mlxs_array* bias,
    float eps,
    mlxs_array** out);
int mlxs_rope(
    const mlxs_array* x,
    int dims,
    bool traditional,
    float base,
    bool has_base,
    float scale,
    int offset,
    const mlxs_array* freqs,
    mlxs_array** out);
/* Per-row offsets: `offsets` is an int32 array [B] for x [B, ..., L, D]. */
int mlxs_rope_offsets(
    const mlxs_array* x,
    int dims,
    bool traditional,
    float base,
    bool has_base,
    float scale,
    const mlxs_array* offsets,
    const mlxs_array* freqs,
    mlxs_array** out);
/* mask_mode: "" (none or array mask) or "causal". On the CUDA backend,
 * several queries at once are computed as mlxs_sdpa_composed does (see
 * attention.cpp), one query by MLX's fused kernel. */
int mlxs_sdpa(
    const mlxs_array* q,
    const mlxs_array* k,
    const mlxs_array* v,
    float scale,
    const char* mask_mode,
    const mlxs_array* mask,
    mlxs_array** out);
/* mlxs_sdpa with attention sinks: one learned logit per query head
 * (`sinks`, [heads]) joins each softmax, taking part of the weight (gpt-oss);
 * always MLX's own kernel or its fallback. */
int mlxs_sdpa_sinks(
    const mlxs_array* q,
    const mlxs_array* k,
    const mlxs_array* v,
    float scale,
    const char* mask_mode,
    const mlxs_array* mask,
    const mlxs_array* sinks,
    mlxs_array** out);
/* The same product from matmul and softmax, on every backend, in blocks of
 * queries whose scores hold at most max_scores elements (0: 2^27). */
int mlxs_sdpa_composed(
    const mlxs_array* q,
    const mlxs_array* k,
    const mlxs_array* v,
    float scale,
    const char* mask_mode,
    const mlxs_array* mask,
    int64_t max_scores,
    mlxs_array** out);

/* silu(gate) * up as one compiled, shape-independent kernel (mlx-lm's
 * `swiglu`, built with mx.compile). */
int mlxs_swiglu(const mlxs_array* gate, const mlxs_array* up, mlxs_array** out);

/* Random numbers (explicit keys). */
int mlxs_random_key(uint64_t seed, mlxs_array** out);
int mlxs_random_split(const mlxs_array* key, int num, mlxs_array** out);
int mlxs_random_categorical(const mlxs_array* logits, int axis, const mlxs_array* key, mlxs_array** out);
int mlxs_random_uniform(const int32_t* shape, size_t ndim, int dtype, const mlxs_array* key, mlxs_array** out);
int mlxs_random_normal(const int32_t* shape, size_t ndim, int dtype, const mlxs_array* key, mlxs_array** out);
int mlxs_random_gumbel(const int32_t* shape, size_t ndim, int dtype, const mlxs_array* key, mlxs_array** out);

/* Devices and streams. Device type: 0 = cpu, 1 = gpu. */
int mlxs_default_device(int* type, int* index);
int mlxs_set_default_device(int type, int index);
int mlxs_device_available(int type, bool* available);
/* Writes the device's name (NUL-terminated, truncated to cap). */
int mlxs_device_name(int type, int index, char* out, size_t cap);
/* A numeric entry of the device's info (e.g. "max_recommended_working_set_size"
 * on Metal, "total_memory"); *found is false when the backend has none. */
int mlxs_device_info_size(int type, int index, const char* key, size_t* out, bool* found);
int mlxs_default_stream(int type, int* stream_index);
int mlxs_new_stream(int type, int* stream_index);
int mlxs_set_default_stream(int stream_index, int type);
int mlxs_synchronize(int stream_index, int type);

/* Memory. */
size_t mlxs_active_memory(void);
size_t mlxs_peak_memory(void);
size_t mlxs_cache_memory(void);
void mlxs_reset_peak_memory(void);
size_t mlxs_memory_limit(void);
int mlxs_set_memory_limit(size_t limit, size_t* previous);
int mlxs_set_cache_limit(size_t limit, size_t* previous);
int mlxs_set_wired_limit(size_t limit, size_t* previous);
void mlxs_clear_cache(void);

/* Files. A map holds named arrays and string metadata; GGUF metadata values
 * may be arrays, strings or string lists (kind 0 none, 1 array, 2 string,
 * 3 string list). */
int mlxs_load_safetensors(const char* path, mlxs_map** out);
int mlxs_load_gguf(const char* path, mlxs_map** out);
int mlxs_save_safetensors(
    const char* path,
    const char* const* names,
    const mlxs_array* const* arrays,
    size_t n,
    const char* const* meta_keys,
    const char* const* meta_values,
    size_t nmeta);
void mlxs_map_free(mlxs_map* m);
size_t mlxs_map_len(const mlxs_map* m);
const char* mlxs_map_name(const mlxs_map* m, size_t i, size_t* len);
mlxs_array* mlxs_map_array(const mlxs_map* m, size_t i);
size_t mlxs_map_meta_len(const mlxs_map* m);
const char* mlxs_map_meta_key(const mlxs_map* m, size_t i, size_t* len);
int mlxs_map_meta_kind(const mlxs_map* m, size_t i);
/* For kind 2: the string (j = 0); for kind 3: element j of the list. Returns
 * the bytes (not NUL-terminated) and their length, or null when absent. */
const char* mlxs_map_meta_str(const mlxs_map* m, size_t i, size_t j, size_t* len);
size_t mlxs_map_meta_str_len(const mlxs_map* m, size_t i);
/* For kind 1: a new handle to the array. */
mlxs_array* mlxs_map_meta_array(const mlxs_map* m, size_t i);

/* ---- Gathered products (Mixture-of-Experts) ----
 * Matrix products whose operands are picked per output batch element from a
 * stack of matrices: out[i] = a[lhs[i]] @ b[rhs[i]], the index arrays
 * broadcast against each other and against the batch dimensions of `a` and
 * `b` (null: the identity over that operand's batch). `sorted_indices` says
 * the rhs indices are in ascending order, which lets MLX group the rows of
 * one matrix. */
int mlxs_gather_mm(
    const mlxs_array* a,
    const mlxs_array* b,
    const mlxs_array* lhs_indices,
    const mlxs_array* rhs_indices,
    bool sorted_indices,
    mlxs_array** out);
/* The same with `w` affine-quantized (`x @ w[i].T` when `transpose`). */
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
    mlxs_array** out);

#ifdef __cplusplus
}
#endif
