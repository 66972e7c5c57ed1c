#pragma once
/// \file
/// The CUDA execution policy: `qsafe::cuda_t{stream}` runs an op as kernels on `stream`, asynchronously, on device
/// pointers. Include only from CUDA translation units (.cu); the host headers never include this one.
///
/// Every CUDA entry point checks its arguments on the host before launching (std::invalid_argument naming the
/// argument, as the host backends do) and checks the launch: a CUDA error is thrown as `qsafe::cuda_error` naming
/// the op and the failing call. Errors of the kernel itself surface, as usual in CUDA, at the next synchronizing call.

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>
#include <string_view>

#include "qsafe/detail/cuda/element.cuh"
#include "qsafe/execution.hpp"

namespace qsafe {

/// CUDA backend: kernels are launched on `stream` (0: the legacy default stream); nothing synchronizes.
struct cuda_t {
  cudaStream_t stream = nullptr;
};

/// The element types the CUDA backend supports (fp32 arithmetic inside for all of them).
template <class T>
concept cuda_element = detail::cuda::is_device_element<T>;

/// A CUDA runtime error, with the op and the call that reported it.
class cuda_error : public std::runtime_error {
 public:
  cuda_error(cudaError_t code, const std::string& what) : std::runtime_error(what), code_(code) {}
  cudaError_t code() const noexcept { return code_; }

 private:
  cudaError_t code_;
};

namespace detail::cuda {

/// Throws `cuda_error` "qsafe::<function>: <call> failed: <name>: <description>" unless `code` is cudaSuccess.
inline void check(cudaError_t code, std::string_view function, std::string_view call) {
  if (code == cudaSuccess) return;
  throw cuda_error(code, "qsafe::" + std::string(function) + ": " + std::string(call) +
                             " failed: " + cudaGetErrorName(code) + ": " + cudaGetErrorString(code));
}

}  // namespace detail::cuda
}  // namespace qsafe
