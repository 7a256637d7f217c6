// The C entry points of shim.h over MLX's checkpoint files: safetensors
// and GGUF loaded into a map of named arrays (and GGUF metadata), and
// safetensors written.

#include "shim.h"
#include "handle.h"

#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

namespace mx = mlx::core;
using mlxs::A;
using mlxs::wrap;

struct mlxs_map {
  std::vector<std::string> names;
  std::vector<mx::array> arrays;
  std::vector<std::string> meta_keys;
  std::vector<mx::GGUFMetaData> meta_values;
};

namespace {

// Moves loaded arrays and metadata into a new map.
template <typename Meta>
mlxs_map* to_map(
    std::unordered_map<std::string, mx::array>& arrays,
    std::unordered_map<std::string, Meta>& meta) {
  auto* m = new mlxs_map();
  for (auto& [name, arr] : arrays) {
    m->names.push_back(name);
    m->arrays.push_back(arr);
  }
  for (auto& [key, value] : meta) {
    m->meta_keys.push_back(key);
    m->meta_values.emplace_back(value);
  }
  return m;
}

} // namespace

extern "C" {

int mlxs_load_safetensors(const char* path, mlxs_map** out) {
  MLXS_TRY({
    auto [arrays, meta] = mx::load_safetensors(std::string(path));
    *out = to_map(arrays, meta);
  })
}

int mlxs_load_gguf(const char* path, mlxs_map** out) {
  MLXS_TRY({
    auto [arrays, meta] = mx::load_gguf(std::string(path));
    *out = to_map(arrays, meta);
  })
}

int mlxs_save_safetensors(
    const char* path,
    const char* const* names,
    const mlxs_array* const* arrays,
    size_t n,
    const char* const* meta_keys,
    const char* const* meta_values,
    size_t nmeta) {
  MLXS_TRY({
    std::unordered_map<std::string, mx::array> map;
    for (size_t i = 0; i < n; ++i) {
      map.insert_or_assign(names[i], A(arrays[i]));
    }
    std::unordered_map<std::string, std::string> meta;
    for (size_t i = 0; i < nmeta; ++i) {
      meta[meta_keys[i]] = meta_values[i];
    }
    mx::save_safetensors(std::string(path), std::move(map), std::move(meta));
  })
}

void mlxs_map_free(mlxs_map* m) {
  delete m;
}

size_t mlxs_map_len(const mlxs_map* m) {
  return m->names.size();
}

const char* mlxs_map_name(const mlxs_map* m, size_t i, size_t* len) {
  *len = m->names[i].size();
  return m->names[i].data();
}

mlxs_array* mlxs_map_array(const mlxs_map* m, size_t i) {
  return wrap(m->arrays[i]);
}

size_t mlxs_map_meta_len(const mlxs_map* m) {
  return m->meta_keys.size();
}

const char* mlxs_map_meta_key(const mlxs_map* m, size_t i, size_t* len) {
  *len = m->meta_keys[i].size();
  return m->meta_keys[i].data();
}

int mlxs_map_meta_kind(const mlxs_map* m, size_t i) {
  const auto& v = m->meta_values[i];
  if (std::holds_alternative<mx::array>(v)) return 1;
  if (std::holds_alternative<std::string>(v)) return 2;
  if (std::holds_alternative<std::vector<std::string>>(v)) return 3;
  return 0;
}

const char* mlxs_map_meta_str(const mlxs_map* m, size_t i, size_t j, size_t* len) {
  const auto& v = m->meta_values[i];
  const std::string* s = std::get_if<std::string>(&v);
  if (s != nullptr && j != 0) {
    s = nullptr;
  }
  if (const auto* l = std::get_if<std::vector<std::string>>(&v)) {
    s = j < l->size() ? &(*l)[j] : nullptr;
  }
  if (s == nullptr) {
    *len = 0;
    return nullptr;
  }
  *len = s->size();
  return s->data();
}

size_t mlxs_map_meta_str_len(const mlxs_map* m, size_t i) {
  const auto& v = m->meta_values[i];
  if (const auto* l = std::get_if<std::vector<std::string>>(&v)) {
    return l->size();
  }
  return std::holds_alternative<std::string>(v) ? 1 : 0;
}

mlxs_array* mlxs_map_meta_array(const mlxs_map* m, size_t i) {
  const auto* a = std::get_if<mx::array>(&m->meta_values[i]);
  return a ? wrap(*a) : nullptr;
}

} // extern "C"
