// The project's CUDA kernels compiled with NVRTC into device code (a cubin)
// for the GPU MLX runs on, and kept in MLX's kernel cache directory.
//
// Why not MLX's `fast::cuda_kernel`, which compiles a kernel's source on
// first use: it keeps the result in memory only, so every process compiled
// every kernel again (seconds each). Here a kernel is compiled once per
// machine, source, GPU architecture and compiler version, and handed to MLX
// as a precompiled kernel (`fast::precompiled_cuda_kernel`).
//
// NVRTC and the CUDA driver are not linked: libmlx (CUDA build) loads both,
// and their functions are looked up in the process when first needed. On
// other builds they are absent and compiling reports that.

#include "cuda_jit.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "mlx/mlx.h"

#if __has_include("mlx/backend/cuda/cuda.h")
#include "mlx/backend/cuda/cuda.h"
#define MLXS_HAVE_CUDA_HEADER 1
#endif

namespace mx = mlx::core;
namespace fs = std::filesystem;

namespace mlxs {

bool cuda_available() {
#ifdef MLXS_HAVE_CUDA_HEADER
  static const bool available = mx::cu::is_available();
  return available;
#else
  return false;
#endif
}

namespace {

// NVRTC's and the driver's C API, as far as used here (types as declared
// in nvrtc.h and cuda.h: handles are pointers, results are enums).
using nvrtcProgram = struct nvrtc_program*;
using nvrtcResult = int;

struct Nvrtc {
  nvrtcResult (*create)(
      nvrtcProgram*, const char*, const char*, int, const char* const*, const char* const*);
  nvrtcResult (*compile)(nvrtcProgram, int, const char* const*);
  nvrtcResult (*log_size)(nvrtcProgram, size_t*);
  nvrtcResult (*log)(nvrtcProgram, char*);
  nvrtcResult (*cubin_size)(nvrtcProgram, size_t*);
  nvrtcResult (*cubin)(nvrtcProgram, char*);
  nvrtcResult (*destroy)(nvrtcProgram*);
  nvrtcResult (*version)(int*, int*);
};

struct Driver {
  int (*init)(unsigned int);
  int (*device_get)(int*, int);
  int (*device_attribute)(int*, int, int);
};

// CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR and _MINOR.
constexpr int kCapabilityMajor = 75;
constexpr int kCapabilityMinor = 76;

template <typename F>
void find(F*& f, const char* name) {
  f = reinterpret_cast<F*>(dlsym(RTLD_DEFAULT, name));
  if (f == nullptr) {
    throw std::runtime_error(std::string("CUDA kernels: ") + name + " not found in the process");
  }
}

const Nvrtc& nvrtc() {
  static const Nvrtc loaded = [] {
    Nvrtc a{};
    find(a.create, "nvrtcCreateProgram");
    find(a.compile, "nvrtcCompileProgram");
    find(a.log_size, "nvrtcGetProgramLogSize");
    find(a.log, "nvrtcGetProgramLog");
    find(a.cubin_size, "nvrtcGetCUBINSize");
    find(a.cubin, "nvrtcGetCUBIN");
    find(a.destroy, "nvrtcDestroyProgram");
    find(a.version, "nvrtcVersion");
    return a;
  }();
  return loaded;
}

const Driver& driver() {
  static const Driver loaded = [] {
    Driver a{};
    find(a.init, "cuInit");
    find(a.device_get, "cuDeviceGet");
    find(a.device_attribute, "cuDeviceGetAttribute");
    return a;
  }();
  return loaded;
}

void check(nvrtcResult r, const char* what) {
  if (r != 0) {
    throw std::runtime_error(std::string("CUDA kernels: ") + what + " failed (" +
                             std::to_string(r) + ")");
  }
}

// "sm_90" for the GPU MLX uses.
std::string architecture() {
  const Driver& d = driver();
  int device = 0, major = 0, minor = 0;
  check(d.init(0), "cuInit");
  check(d.device_get(&device, mx::default_device().index), "cuDeviceGet");
  check(d.device_attribute(&major, kCapabilityMajor, device), "cuDeviceGetAttribute");
  check(d.device_attribute(&minor, kCapabilityMinor, device), "cuDeviceGetAttribute");
  return "sm_" + std::to_string(major) + std::to_string(minor);
}

// MLX's kernel cache directory (the same rule as MLX's): MLX_PTX_CACHE_DIR,
// else a folder per MLX version under the temporary directory. Empty when
// it cannot be made (nothing is cached then).
fs::path cache_dir() {
  static const fs::path dir = []() -> fs::path {
    fs::path d;
    if (const char* env = std::getenv("MLX_PTX_CACHE_DIR"); env != nullptr && *env != '\0') {
      d = env;
    } else {
      std::error_code e;
      d = fs::temp_directory_path(e);
      if (e) {
        return {};
      }
      d = d / "mlx" / mx::version() / "ptx";
    }
    std::error_code e;
    fs::create_directories(d, e);
    return e ? fs::path() : d;
  }();
  return dir;
}

uint64_t fnv1a(const std::string& text, uint64_t hash = 0xcbf29ce484222325ull) {
  for (unsigned char c : text) {
    hash = (hash ^ c) * 0x100000001b3ull;
  }
  return hash;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return {};
  }
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Written beside and renamed into place: a process reading the cache sees
// a whole file or none, whoever else writes it at the same time.
void write_file(const fs::path& path, const std::string& data) {
  fs::path partial = path;
  partial += ".partial." + std::to_string(getpid());
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!out) {
      std::error_code e;
      fs::remove(partial, e);
      return;
    }
  }
  std::error_code e;
  fs::rename(partial, path, e);
  if (e) {
    fs::remove(partial, e);
  }
}

std::string nvrtc_compile(const std::string& source, const std::string& name,
                          const std::string& arch) {
  const Nvrtc& a = nvrtc();
  nvrtcProgram program = nullptr;
  check(a.create(&program, source.c_str(), (name + ".cu").c_str(), 0, nullptr, nullptr),
        "nvrtcCreateProgram");
  struct Destroy {
    const Nvrtc& a;
    nvrtcProgram& p;
    ~Destroy() { a.destroy(&p); }
  } destroy{a, program};
  const std::string gpu = "--gpu-architecture=" + arch;
  const std::string entry = "-DMLXS_ENTRY=" + name;
  const char* options[] = {gpu.c_str(), entry.c_str(), "--std=c++17"};
  if (a.compile(program, 3, options) != 0) {
    size_t size = 0;
    a.log_size(program, &size);
    std::string log(size, '\0');
    if (size > 0) {
      a.log(program, log.data());
    }
    throw std::runtime_error("CUDA kernels: " + name + " does not compile: " + log);
  }
  size_t size = 0;
  check(a.cubin_size(program, &size), "nvrtcGetCUBINSize");
  std::string binary(size, '\0');
  check(a.cubin(program, binary.data()), "nvrtcGetCUBIN");
  return binary;
}

} // namespace

std::shared_ptr<const CompiledKernel> compile_cuda_kernel(
    const std::string& source,
    const std::string& entry) {
  using Result = std::shared_future<std::shared_ptr<const CompiledKernel>>;
  static std::mutex mutex;
  static std::map<std::pair<std::string, std::string>, Result> compiled;
  // The first caller of a source compiles it, outside the lock (callers
  // compile different kernels in parallel); later ones wait for its result.
  std::promise<std::shared_ptr<const CompiledKernel>> promise;
  Result result;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto [it, first] = compiled.try_emplace(std::make_pair(entry, source));
    if (!first) {
      result = it->second;
    } else {
      it->second = promise.get_future().share();
    }
  }
  if (result.valid()) {
    return result.get();
  }
  try {
    static const std::string arch = architecture();
    int major = 0, minor = 0;
    check(nvrtc().version(&major, &minor), "nvrtcVersion");
    const std::string tag =
        arch + " nvrtc " + std::to_string(major) + "." + std::to_string(minor);
    char hash[17];
    std::snprintf(hash, sizeof hash, "%016llx",
                  static_cast<unsigned long long>(fnv1a(tag, fnv1a(source))));
    auto kernel = std::make_shared<CompiledKernel>();
    kernel->name = entry + "_" + hash;
    const fs::path dir = cache_dir();
    const fs::path file = dir.empty() ? fs::path() : dir / (kernel->name + ".cubin");
    if (!file.empty()) {
      kernel->binary = read_file(file);
    }
    if (kernel->binary.empty()) {
      kernel->binary = nvrtc_compile(source, kernel->name, arch);
      if (!file.empty()) {
        write_file(file, kernel->binary);
      }
    }
    promise.set_value(kernel);
    return kernel;
  } catch (...) {
    promise.set_exception(std::current_exception());
    throw;
  }
}

} // namespace mlxs
