//! Raw declarations of the shim's C interface (`shim/shim.h`). Nothing here
//! is public; the safe wrappers live in the other modules.

use std::ffi::{c_char, c_int};

#[repr(C)]
pub(crate) struct mlxs_array {
    _private: [u8; 0],
}

#[repr(C)]
pub(crate) struct mlxs_map {
    _private: [u8; 0],
}

#[repr(C)]
pub(crate) struct mlxs_group {
    _private: [u8; 0],
}

pub(crate) type Handle = *const mlxs_array;
pub(crate) type Out = *mut *mut mlxs_array;

unsafe extern "C" {
    pub(crate) fn mlxs_last_error() -> *const c_char;
    pub(crate) fn mlxs_version() -> *const c_char;

    pub(crate) fn mlxs_array_free(a: *mut mlxs_array);
    pub(crate) fn mlxs_array_clone(a: Handle) -> *mut mlxs_array;
    pub(crate) fn mlxs_array_from_data(
        data: *const u8,
        shape: *const i32,
        ndim: usize,
        dtype: c_int,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_array_ndim(a: Handle) -> usize;
    pub(crate) fn mlxs_array_shape(a: Handle, out: *mut i32);
    pub(crate) fn mlxs_array_size(a: Handle) -> usize;
    pub(crate) fn mlxs_array_dtype(a: Handle) -> c_int;
    pub(crate) fn mlxs_array_read(a: Handle, dst: *mut u8, nbytes: usize) -> c_int;
    pub(crate) fn mlxs_array_read_scheduled(a: Handle, dst: *mut u8, nbytes: usize) -> c_int;

    pub(crate) fn mlxs_eval(arrays: *const Handle, n: usize) -> c_int;
    pub(crate) fn mlxs_async_eval(arrays: *const Handle, n: usize) -> c_int;
    pub(crate) fn mlxs_graph_census(
        arrays: *const Handle,
        n: usize,
        out: *mut c_char,
        cap: usize,
        len: *mut usize,
    ) -> c_int;

    pub(crate) fn mlxs_unary(op: c_int, a: Handle, out: Out) -> c_int;
    pub(crate) fn mlxs_binary(op: c_int, a: Handle, b: Handle, out: Out) -> c_int;
    pub(crate) fn mlxs_reduce(
        op: c_int,
        a: Handle,
        axes: *const i32,
        naxes: usize,
        keepdims: bool,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_arg_reduce(
        op: c_int,
        a: Handle,
        axis: c_int,
        keepdims: bool,
        out: Out,
    ) -> c_int;

    pub(crate) fn mlxs_full(
        shape: *const i32,
        ndim: usize,
        value: Handle,
        dtype: c_int,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_arange(start: f64, stop: f64, step: f64, dtype: c_int, out: Out) -> c_int;

    pub(crate) fn mlxs_reshape(a: Handle, shape: *const i32, ndim: usize, out: Out) -> c_int;
    pub(crate) fn mlxs_transpose(a: Handle, axes: *const i32, naxes: usize, out: Out) -> c_int;
    pub(crate) fn mlxs_broadcast_to(a: Handle, shape: *const i32, ndim: usize, out: Out) -> c_int;
    pub(crate) fn mlxs_expand_dims(a: Handle, axis: c_int, out: Out) -> c_int;
    pub(crate) fn mlxs_squeeze(a: Handle, axis: c_int, out: Out) -> c_int;
    pub(crate) fn mlxs_slice(
        a: Handle,
        start: *const i32,
        stop: *const i32,
        strides: *const i32,
        ndim: usize,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_slice_update(
        src: Handle,
        update: Handle,
        start: *const i32,
        stop: *const i32,
        strides: *const i32,
        ndim: usize,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_concatenate(arrays: *const Handle, n: usize, axis: c_int, out: Out)
    -> c_int;
    pub(crate) fn mlxs_stack(arrays: *const Handle, n: usize, axis: c_int, out: Out) -> c_int;
    pub(crate) fn mlxs_split(
        a: Handle,
        indices: *const i32,
        nidx: usize,
        axis: c_int,
        outs: *mut *mut mlxs_array,
    ) -> c_int;
    pub(crate) fn mlxs_take(a: Handle, indices: Handle, axis: c_int, out: Out) -> c_int;
    pub(crate) fn mlxs_take_along_axis(a: Handle, indices: Handle, axis: c_int, out: Out) -> c_int;
    pub(crate) fn mlxs_put_along_axis(
        a: Handle,
        indices: Handle,
        values: Handle,
        axis: c_int,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_where(cond: Handle, x: Handle, y: Handle, out: Out) -> c_int;
    pub(crate) fn mlxs_astype(a: Handle, dtype: c_int, out: Out) -> c_int;
    pub(crate) fn mlxs_tri_mask(a: Handle, k: c_int, upper: bool, out: Out) -> c_int;

    pub(crate) fn mlxs_matmul(a: Handle, b: Handle, out: Out) -> c_int;
    pub(crate) fn mlxs_addmm(
        c: Handle,
        a: Handle,
        b: Handle,
        alpha: f32,
        beta: f32,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_softmax(a: Handle, axis: c_int, precise: bool, out: Out) -> c_int;
    pub(crate) fn mlxs_sort(a: Handle, axis: c_int, arg: bool, out: Out) -> c_int;
    pub(crate) fn mlxs_argpartition(a: Handle, kth: c_int, axis: c_int, out: Out) -> c_int;
    pub(crate) fn mlxs_topk(a: Handle, k: c_int, axis: c_int, out: Out) -> c_int;
    pub(crate) fn mlxs_cumsum(
        a: Handle,
        axis: c_int,
        reverse: bool,
        inclusive: bool,
        out: Out,
    ) -> c_int;

    pub(crate) fn mlxs_quantize(
        w: Handle,
        group_size: c_int,
        bits: c_int,
        mode: c_int,
        wq: Out,
        scales: Out,
        biases: Out,
    ) -> c_int;
    pub(crate) fn mlxs_dequantize(
        wq: Handle,
        scales: Handle,
        biases: Handle,
        group_size: c_int,
        bits: c_int,
        mode: c_int,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_quantized_matmul(
        x: Handle,
        wq: Handle,
        scales: Handle,
        biases: Handle,
        transpose: bool,
        group_size: c_int,
        bits: c_int,
        mode: c_int,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_set_custom_qmv(enabled: bool) -> c_int;
    pub(crate) fn mlxs_custom_qmv(
        x: Handle,
        wq: Handle,
        scales: Handle,
        biases: Handle,
        group_size: c_int,
        bits: c_int,
        norm: Handle,
        eps: f32,
        epilogue: c_int,
        extra: Handle,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_custom_qmv_available(available: *mut bool) -> c_int;
    pub(crate) fn mlxs_set_custom_qmv_max_rows(rows: c_int) -> c_int;

    pub(crate) fn mlxs_rms_norm(x: Handle, weight: Handle, eps: f32, out: Out) -> c_int;
    pub(crate) fn mlxs_layer_norm(
        x: Handle,
        weight: Handle,
        bias: Handle,
        eps: f32,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_rope(
        x: Handle,
        dims: c_int,
        traditional: bool,
        base: f32,
        has_base: bool,
        scale: f32,
        offset: c_int,
        freqs: Handle,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_rope_offsets(
        x: Handle,
        dims: c_int,
        traditional: bool,
        base: f32,
        has_base: bool,
        scale: f32,
        offsets: Handle,
        freqs: Handle,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_sdpa(
        q: Handle,
        k: Handle,
        v: Handle,
        scale: f32,
        mask_mode: *const c_char,
        mask: Handle,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_sdpa_sinks(
        q: Handle,
        k: Handle,
        v: Handle,
        scale: f32,
        mask_mode: *const c_char,
        mask: Handle,
        sinks: Handle,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_sdpa_composed(
        q: Handle,
        k: Handle,
        v: Handle,
        scale: f32,
        mask_mode: *const c_char,
        mask: Handle,
        max_scores: i64,
        out: Out,
    ) -> c_int;

    pub(crate) fn mlxs_swiglu(gate: Handle, up: Handle, out: Out) -> c_int;
    pub(crate) fn mlxs_random_key(seed: u64, out: Out) -> c_int;
    pub(crate) fn mlxs_random_split(key: Handle, num: c_int, out: Out) -> c_int;
    pub(crate) fn mlxs_random_categorical(
        logits: Handle,
        axis: c_int,
        key: Handle,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_random_uniform(
        shape: *const i32,
        ndim: usize,
        dtype: c_int,
        key: Handle,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_random_normal(
        shape: *const i32,
        ndim: usize,
        dtype: c_int,
        key: Handle,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_random_gumbel(
        shape: *const i32,
        ndim: usize,
        dtype: c_int,
        key: Handle,
        out: Out,
    ) -> c_int;

    pub(crate) fn mlxs_default_device(kind: *mut c_int, index: *mut c_int) -> c_int;
    pub(crate) fn mlxs_set_default_device(kind: c_int, index: c_int) -> c_int;
    pub(crate) fn mlxs_device_available(kind: c_int, available: *mut bool) -> c_int;
    pub(crate) fn mlxs_device_name(
        kind: c_int,
        index: c_int,
        out: *mut c_char,
        cap: usize,
    ) -> c_int;
    pub(crate) fn mlxs_device_info_size(
        kind: c_int,
        index: c_int,
        key: *const c_char,
        out: *mut usize,
        found: *mut bool,
    ) -> c_int;
    pub(crate) fn mlxs_default_stream(kind: c_int, stream: *mut c_int) -> c_int;
    pub(crate) fn mlxs_new_stream(kind: c_int, stream: *mut c_int) -> c_int;
    pub(crate) fn mlxs_set_default_stream(stream: c_int, kind: c_int) -> c_int;
    pub(crate) fn mlxs_synchronize(stream: c_int, kind: c_int) -> c_int;

    pub(crate) fn mlxs_active_memory() -> usize;
    pub(crate) fn mlxs_peak_memory() -> usize;
    pub(crate) fn mlxs_cache_memory() -> usize;
    pub(crate) fn mlxs_reset_peak_memory();
    pub(crate) fn mlxs_memory_limit() -> usize;
    pub(crate) fn mlxs_set_memory_limit(limit: usize, previous: *mut usize) -> c_int;
    pub(crate) fn mlxs_set_cache_limit(limit: usize, previous: *mut usize) -> c_int;
    pub(crate) fn mlxs_set_wired_limit(limit: usize, previous: *mut usize) -> c_int;
    pub(crate) fn mlxs_clear_cache();

    pub(crate) fn mlxs_load_safetensors(path: *const c_char, out: *mut *mut mlxs_map) -> c_int;
    pub(crate) fn mlxs_load_gguf(path: *const c_char, out: *mut *mut mlxs_map) -> c_int;
    pub(crate) fn mlxs_save_safetensors(
        path: *const c_char,
        names: *const *const c_char,
        arrays: *const Handle,
        n: usize,
        meta_keys: *const *const c_char,
        meta_values: *const *const c_char,
        nmeta: usize,
    ) -> c_int;
    pub(crate) fn mlxs_map_free(m: *mut mlxs_map);
    pub(crate) fn mlxs_map_len(m: *const mlxs_map) -> usize;
    pub(crate) fn mlxs_map_name(m: *const mlxs_map, i: usize, len: *mut usize) -> *const u8;
    pub(crate) fn mlxs_map_array(m: *const mlxs_map, i: usize) -> *mut mlxs_array;
    pub(crate) fn mlxs_map_meta_len(m: *const mlxs_map) -> usize;
    pub(crate) fn mlxs_map_meta_key(m: *const mlxs_map, i: usize, len: *mut usize) -> *const u8;
    pub(crate) fn mlxs_map_meta_kind(m: *const mlxs_map, i: usize) -> c_int;
    pub(crate) fn mlxs_map_meta_str(
        m: *const mlxs_map,
        i: usize,
        j: usize,
        len: *mut usize,
    ) -> *const u8;
    pub(crate) fn mlxs_map_meta_str_len(m: *const mlxs_map, i: usize) -> usize;
    pub(crate) fn mlxs_map_meta_array(m: *const mlxs_map, i: usize) -> *mut mlxs_array;

    // ---- Gathered products (Mixture-of-Experts) ----
    pub(crate) fn mlxs_gather_mm(
        a: Handle,
        b: Handle,
        lhs_indices: Handle,
        rhs_indices: Handle,
        sorted_indices: bool,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_gather_qmm(
        x: Handle,
        wq: Handle,
        scales: Handle,
        biases: Handle,
        lhs_indices: Handle,
        rhs_indices: Handle,
        transpose: bool,
        group_size: c_int,
        bits: c_int,
        mode: c_int,
        sorted_indices: bool,
        out: Out,
    ) -> c_int;

    pub(crate) fn mlxs_dist_is_available(backend: *const c_char, out: *mut bool) -> c_int;
    pub(crate) fn mlxs_dist_init(
        backend: *const c_char,
        strict: bool,
        out: *mut *mut mlxs_group,
    ) -> c_int;
    pub(crate) fn mlxs_group_free(g: *mut mlxs_group);
    pub(crate) fn mlxs_group_clone(g: *const mlxs_group) -> *mut mlxs_group;
    pub(crate) fn mlxs_group_rank(g: *const mlxs_group) -> c_int;
    pub(crate) fn mlxs_group_size(g: *const mlxs_group) -> c_int;
    pub(crate) fn mlxs_dist_all_sum(x: Handle, g: *const mlxs_group, out: Out) -> c_int;
    pub(crate) fn mlxs_dist_all_max(x: Handle, g: *const mlxs_group, out: Out) -> c_int;
    pub(crate) fn mlxs_dist_all_gather(x: Handle, g: *const mlxs_group, out: Out) -> c_int;
    pub(crate) fn mlxs_dist_send(x: Handle, dst: c_int, g: *const mlxs_group, out: Out) -> c_int;
    pub(crate) fn mlxs_dist_recv(
        shape: *const i32,
        ndim: usize,
        dtype: c_int,
        src: c_int,
        g: *const mlxs_group,
        out: Out,
    ) -> c_int;
    pub(crate) fn mlxs_dist_recv_like(
        x: Handle,
        src: c_int,
        g: *const mlxs_group,
        out: Out,
    ) -> c_int;
}
