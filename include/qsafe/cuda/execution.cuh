#pragma once
/// \file
/// The CUDA execution policy: `qsafe::cuda_t{stream}` runs an op as kernels on `stream`, asynchronously, on device
/// pointers. Include only from CUDA translation units (.cu); the host headers never include this one.
///
/// Every CUDA entry point checks its arguments on the host before launching (std::invalid_argument naming the
/// argument, as the host backends do) and checks the launch: a CUDA error is thrown as `qsafe::cuda_error` naming
/// the op and the failing call. Errors of the kernel itself surface, as usual in CUDA, at the next synchronizing call.

#include <cuda_runtime_api.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

#include "qsafe/detail/cuda/element.cuh"
#include "qsafe/execution.hpp"

namespace qsafe {

class cuda_workspace;

/// CUDA backend: kernels are launched on `stream` (0: the legacy default stream); the elementwise and softmax ops
/// never synchronize (per-channel fake-quantization: when given a workspace, see qsafe/cuda/quant.cuh). The reductions
/// that return a result to the host (statistics, ranges, percentiles, MSE) take their scratch memory from `workspace`
/// when one is given (reused from call to call: a call's fixed cost drops from ~85 us to ~20 us on the H100), else
/// allocate it per call (cudaMallocAsync on `stream`).
struct cuda_t {
  cudaStream_t stream = nullptr;
  cuda_workspace* workspace = nullptr;
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

/// Scratch memory for the CUDA reductions, kept between calls: a device buffer and a pinned host buffer for the
/// results, each grown on demand (cudaMalloc / cudaMallocHost, which synchronize, so the first calls pay for them)
/// and freed by the destructor. Use one per stream (calls on one stream are ordered, so they may share it); not for
/// concurrent use from several host threads.
class cuda_workspace {
 public:
  cuda_workspace() = default;
  cuda_workspace(const cuda_workspace&) = delete;
  cuda_workspace& operator=(const cuda_workspace&) = delete;
  ~cuda_workspace() {
    if (fence_ != nullptr) cudaEventDestroy(fence_);
    cudaFree(device_);
    cudaFreeHost(host_);
  }

  /// At least `bytes` of device memory (the previous contents are not kept when it grows).
  void* device(std::size_t bytes) {
    if (bytes > device_bytes_) {
      detail::cuda::check(cudaFree(device_), "cuda_workspace", "cudaFree");
      device_ = nullptr;
      device_bytes_ = 0;
      detail::cuda::check(cudaMalloc(&device_, bytes), "cuda_workspace", "cudaMalloc");
      device_bytes_ = bytes;
    }
    return device_;
  }
  /// At least `bytes` of pinned host memory, once the copy of the last upload from it (see `uploaded`) has read
  /// its bytes: callers may write it right away.
  void* host(std::size_t bytes) {
    wait_for_upload();
    if (bytes > host_bytes_) {
      detail::cuda::check(cudaFreeHost(host_), "cuda_workspace", "cudaFreeHost");
      host_ = nullptr;
      host_bytes_ = 0;
      detail::cuda::check(cudaMallocHost(&host_, bytes), "cuda_workspace", "cudaMallocHost");
      host_bytes_ = bytes;
    }
    return host_;
  }

  /// Marks an upload from `host()` memory (a cudaMemcpyAsync from pinned memory, which does not wait for the
  /// stream) queued on `stream`: the next `host()` call waits until that copy has run.
  void uploaded(cudaStream_t stream) {
    if (fence_ == nullptr) {
      detail::cuda::check(cudaEventCreateWithFlags(&fence_, cudaEventDisableTiming), "cuda_workspace",
                          "cudaEventCreateWithFlags");
    }
    detail::cuda::check(cudaEventRecord(fence_, stream), "cuda_workspace", "cudaEventRecord");
    upload_pending_ = true;
  }

 private:
  void wait_for_upload() {
    if (!upload_pending_) return;
    detail::cuda::check(cudaEventSynchronize(fence_), "cuda_workspace", "cudaEventSynchronize");
    upload_pending_ = false;
  }

  void* device_ = nullptr;
  void* host_ = nullptr;
  std::size_t device_bytes_ = 0, host_bytes_ = 0;
  cudaEvent_t fence_ = nullptr;
  bool upload_pending_ = false;
};

}  // namespace qsafe
