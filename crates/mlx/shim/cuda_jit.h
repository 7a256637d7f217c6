// The project's CUDA kernels compiled to device code with NVRTC and kept on
// disk, so that a restarted process loads them instead of compiling again.
// See cuda_jit.cpp.
#pragma once

#include <memory>
#include <string>

namespace mlxs {

// Whether the running MLX has the CUDA backend (and a GPU for it).
bool cuda_available();

// A kernel compiled for the current GPU.
struct CompiledKernel {
  // The name of its `extern "C"` entry point, unique to its source, the
  // GPU's architecture and the compiler's version.
  std::string name;
  // The device code (a cubin).
  std::string binary;
};

// `source` (an `extern "C" __global__` function named `entry`) compiled
// for the GPU MLX runs on, from the disk cache when it is there; callers on
// several threads compile different sources in parallel. Throws
// std::runtime_error when NVRTC or the CUDA driver is missing, or the
// source does not compile (with NVRTC's log).
std::shared_ptr<const CompiledKernel> compile_cuda_kernel(
    const std::string& source,
    const std::string& entry);

} // namespace mlxs
