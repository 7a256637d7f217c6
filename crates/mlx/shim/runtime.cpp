// The C entry points of shim.h over MLX's devices, streams and memory
// accounting.

#include "shim.h"
#include "handle.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <variant>

namespace mx = mlx::core;

namespace {

mx::Device to_device(int type, int index) {
  return mx::Device(type == 0 ? mx::Device::cpu : mx::Device::gpu, index);
}

} // namespace

extern "C" {

int mlxs_default_device(int* type, int* index) {
  MLXS_TRY({
    const auto& d = mx::default_device();
    *type = d.type == mx::Device::cpu ? 0 : 1;
    *index = d.index;
  })
}

int mlxs_set_default_device(int type, int index) {
  MLXS_TRY(mx::set_default_device(to_device(type, index)))
}

int mlxs_device_available(int type, bool* available) {
  MLXS_TRY(*available = mx::is_available(to_device(type, 0)))
}

int mlxs_device_name(int type, int index, char* out, size_t cap) {
  MLXS_TRY({
    std::string name = type == 0 ? "cpu" : "gpu";
    const auto& info = mx::device_info(to_device(type, index));
    auto it = info.find("device_name");
    if (it != info.end()) {
      if (const auto* s = std::get_if<std::string>(&it->second)) {
        name = *s;
      }
    }
    if (cap > 0) {
      size_t n = std::min(cap - 1, name.size());
      std::memcpy(out, name.data(), n);
      out[n] = '\0';
    }
  })
}

int mlxs_device_info_size(int type, int index, const char* key, size_t* out, bool* found) {
  MLXS_TRY({
    *found = false;
    const auto& info = mx::device_info(to_device(type, index));
    auto it = info.find(key);
    if (it != info.end()) {
      if (const auto* v = std::get_if<size_t>(&it->second)) {
        *out = *v;
        *found = true;
      }
    }
  })
}

int mlxs_default_stream(int type, int* stream_index) {
  MLXS_TRY(*stream_index = mx::default_stream(to_device(type, 0)).index)
}

int mlxs_new_stream(int type, int* stream_index) {
  MLXS_TRY(*stream_index = mx::new_stream(to_device(type, 0)).index)
}

int mlxs_set_default_stream(int stream_index, int type) {
  MLXS_TRY(mx::set_default_stream(mx::Stream(stream_index, to_device(type, 0))))
}

int mlxs_synchronize(int stream_index, int type) {
  MLXS_TRY(mx::synchronize(mx::Stream(stream_index, to_device(type, 0))))
}

size_t mlxs_active_memory(void) {
  return mx::get_active_memory();
}

size_t mlxs_peak_memory(void) {
  return mx::get_peak_memory();
}

size_t mlxs_cache_memory(void) {
  return mx::get_cache_memory();
}

void mlxs_reset_peak_memory(void) {
  mx::reset_peak_memory();
}

size_t mlxs_memory_limit(void) {
  return mx::get_memory_limit();
}

int mlxs_set_memory_limit(size_t limit, size_t* previous) {
  MLXS_TRY(*previous = mx::set_memory_limit(limit))
}

int mlxs_set_cache_limit(size_t limit, size_t* previous) {
  MLXS_TRY(*previous = mx::set_cache_limit(limit))
}

int mlxs_set_wired_limit(size_t limit, size_t* previous) {
  MLXS_TRY(*previous = mx::set_wired_limit(limit))
}

void mlxs_clear_cache(void) {
  mx::clear_cache();
}

} // extern "C"
