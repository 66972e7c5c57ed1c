#pragma once
/// \file
/// Fake-quantization on a CUDA device: `fake_quantize` and `fake_quantize_backward` of qsafe/quant.hpp, per
/// tensor and per channel, with `qsafe::cuda_t{stream}` on device pointers (REFERENCE §2, docs/quantization.md).
/// Include only from .cu files.
///
/// \code
///   const qsafe::quant_params p = qsafe::make_qparams<float>({lo, hi}, 8, qsafe::quant_mode::asymmetric);
///   qsafe::fake_quantize(qsafe::cuda_t{stream}, x, p, y);   // x, y: matrix_views of device memory
/// \endcode
///
/// Contract: as the host functions (same parameter checks, same NaN and straight-through conventions), plus
/// - float: bit-identical to `qsafe::cpu` (the same fp32 operations, none contracted);
/// - half / bfloat16: the input widened to fp32 exactly, the float computation above, the result rounded once
///   (so equal to the float result rounded to the element type);
/// - the host's `fake_quant_options` (last argument): rounding half to even (default), half away from zero, or
///   stochastic with the same counter-based draws as the host (element (r, j) has stream index
///   `index_offset + r·cols + j`), so a seeded run gives the same bits on the GPU and the CPU; the backward's STE mask;
/// - asynchronous on `stream` (per channel: after the parameters' copy, see below); launch errors throw
///   `qsafe::cuda_error`.

#include <climits>
#include <cstddef>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

#include "qsafe/cuda/execution.cuh"
#include "qsafe/detail/check.hpp"
#include "qsafe/detail/cuda/dispatch_quant.cuh"
#include "qsafe/quant.hpp"

namespace qsafe {

/// Fake-quantize per tensor: `y = (clip(z + nearbyint(x·inv_s), quant_min, quant_max) − z)·s`.
template <cuda_element T>
void fake_quantize(const cuda_t& policy, matrix_view<const std::type_identity_t<T>> x, const quant_params& params,
                   matrix_view<T> y, const fake_quant_options& options = {}) {
  detail::check_view("fake_quantize", "x", x);
  detail::check_same_shape("fake_quantize", "y", y, "x", x);
  detail::check_params("fake_quantize", "params", params);
  detail::check_options("fake_quantize", options);
  if (x.cols > INT_MAX / 2) detail::fail("fake_quantize", "x", "has more than INT_MAX / 2 columns");
  if (x.empty()) return;
  detail::cuda::fake_quantize(
      policy.stream, detail::cuda::tensor_params{detail::cuda::to_code_params(detail::to_lanes<float>(params))}, x, y,
      options);
}

/// Straight-through backward: `dx = dy` where the unclamped code lies in `[quant_min, quant_max]`, else 0.
template <cuda_element T>
void fake_quantize_backward(const cuda_t& policy, matrix_view<const std::type_identity_t<T>> x,
                            const quant_params& params, matrix_view<const std::type_identity_t<T>> dy,
                            matrix_view<T> dx, const fake_quant_options& options = {}) {
  detail::check_view("fake_quantize_backward", "x", x);
  detail::check_same_shape("fake_quantize_backward", "dy", dy, "x", x);
  detail::check_same_shape("fake_quantize_backward", "dx", dx, "x", x);
  detail::check_params("fake_quantize_backward", "params", params);
  detail::check_options("fake_quantize_backward", options);
  if (x.cols > INT_MAX / 2) detail::fail("fake_quantize_backward", "x", "has more than INT_MAX / 2 columns");
  if (x.empty()) return;
  detail::cuda::fake_quantize_backward(
      policy.stream, detail::cuda::tensor_params{detail::cuda::to_code_params(detail::to_lanes<float>(params))}, x, dy,
      dx, options);
}

/// Per-channel parameters held on the device, for repeated per-channel calls with no host work. The overloads that
/// take a span check, convert and upload their parameters on every call (~40 us for 4096 channels on the H100, which
/// a call from an idle stream waits for); this object does that once. Built from host parameters (checked as the
/// calls check them; copied synchronously); movable, not copyable; a moved-from object holds no channels (calls with
/// it throw). The destructor frees the memory with cudaFree, which waits for the work queued on the device.
class cuda_channel_params {
 public:
  explicit cuda_channel_params(std::span<const quant_params> params) : size_(params.size()) {
    if (params.empty()) detail::fail("cuda_channel_params", "params", "is empty");
    detail::check_each_params("cuda_channel_params", "params", params);
    data_ = detail::cuda::upload_channel_params("cuda_channel_params", params);
  }
  cuda_channel_params(cuda_channel_params&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  cuda_channel_params& operator=(cuda_channel_params&& other) noexcept {
    if (this != &other) {
      if (data_ != nullptr) cudaFree(data_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  cuda_channel_params(const cuda_channel_params&) = delete;
  cuda_channel_params& operator=(const cuda_channel_params&) = delete;
  ~cuda_channel_params() {
    if (data_ != nullptr) cudaFree(data_);
  }

  /// The number of channels.
  std::size_t size() const noexcept { return size_; }
  /// The device copy, in the kernels' form (what qsafe's calls read).
  const detail::cuda::code_params* data() const noexcept { return data_; }

 private:
  detail::cuda::code_params* data_ = nullptr;
  std::size_t size_ = 0;
};

namespace detail {

// check_channels for parameters held on the device: their values were checked when they were built.
inline void check_channels(std::string_view function, const cuda_channel_params& params, channel_axis axis,
                           index_t rows, index_t cols) {
  check_channel_count(function, static_cast<index_t>(params.size()), axis, rows, cols);
}

namespace cuda {

template <class F>
void with_channel_params(std::string_view, const cuda_t&, const cuda_channel_params& params, channel_axis axis, F&& f) {
  with_device_channel_params(params.data(), params.size(), axis, std::forward<F>(f));
}

// The per-channel calls' checks and launch, for parameters given as a span (uploaded by the call) or held on the
// device (cuda_channel_params).
template <class T, class Channels>
void fake_quantize_channels(const cuda_t& policy, matrix_view<const T> x, const Channels& params, channel_axis axis,
                            matrix_view<T> y, const fake_quant_options& options) {
  check_view("fake_quantize", "x", x);
  check_same_shape("fake_quantize", "y", y, "x", x);
  check_channels("fake_quantize", params, axis, x.rows, x.cols);
  check_options("fake_quantize", options);
  if (x.cols > INT_MAX / 2) fail("fake_quantize", "x", "has more than INT_MAX / 2 columns");
  if (x.empty()) return;
  with_channel_params("fake_quantize", policy, params, axis,
                      [&](const auto& p) { detail::cuda::fake_quantize(policy.stream, p, x, y, options); });
}

template <class T, class Channels>
void fake_quantize_backward_channels(const cuda_t& policy, matrix_view<const T> x, const Channels& params,
                                     channel_axis axis, matrix_view<const T> dy, matrix_view<T> dx,
                                     const fake_quant_options& options) {
  check_view("fake_quantize_backward", "x", x);
  check_same_shape("fake_quantize_backward", "dy", dy, "x", x);
  check_same_shape("fake_quantize_backward", "dx", dx, "x", x);
  check_channels("fake_quantize_backward", params, axis, x.rows, x.cols);
  check_options("fake_quantize_backward", options);
  if (x.cols > INT_MAX / 2) fail("fake_quantize_backward", "x", "has more than INT_MAX / 2 columns");
  if (x.empty()) return;
  with_channel_params("fake_quantize_backward", policy, params, axis, [&](const auto& p) {
    detail::cuda::fake_quantize_backward(policy.stream, p, x, dy, dx, options);
  });
}

}  // namespace cuda
}  // namespace detail

/// Fake-quantize per channel: column j takes `params[j]` (`channel_axis::column`, params.size() == cols), or row r
/// takes `params[r % params.size()]` (`channel_axis::row`), as the host function. The parameters are copied to the
/// device first: with `policy.workspace`, through its pinned and device memory, asynchronously (a call waits only
/// for the previous upload through that workspace to have been copied); without one, from pageable memory into an
/// allocation on the stream, so the call waits for the work already queued on the stream (and the stream-ordered
/// allocator's release costs ~0.1 ms a call on the H100).
template <cuda_element T>
void fake_quantize(const cuda_t& policy, matrix_view<const std::type_identity_t<T>> x,
                   std::span<const quant_params> params, channel_axis axis, matrix_view<T> y,
                   const fake_quant_options& options = {}) {
  detail::cuda::fake_quantize_channels(policy, x, params, axis, y, options);
}

/// Straight-through backward per channel (parameters as for the per-channel fake_quantize).
template <cuda_element T>
void fake_quantize_backward(const cuda_t& policy, matrix_view<const std::type_identity_t<T>> x,
                            std::span<const quant_params> params, channel_axis axis,
                            matrix_view<const std::type_identity_t<T>> dy, matrix_view<T> dx,
                            const fake_quant_options& options = {}) {
  detail::cuda::fake_quantize_backward_channels(policy, x, params, axis, dy, dx, options);
}

/// Per-channel fake_quantize with the parameters already on the device (no host work but the views' checks).
template <cuda_element T>
void fake_quantize(const cuda_t& policy, matrix_view<const std::type_identity_t<T>> x,
                   const cuda_channel_params& params, channel_axis axis, matrix_view<T> y,
                   const fake_quant_options& options = {}) {
  detail::cuda::fake_quantize_channels(policy, x, params, axis, y, options);
}

/// Per-channel straight-through backward with the parameters already on the device.
template <cuda_element T>
void fake_quantize_backward(const cuda_t& policy, matrix_view<const std::type_identity_t<T>> x,
                            const cuda_channel_params& params, channel_axis axis,
                            matrix_view<const std::type_identity_t<T>> dy, matrix_view<T> dx,
                            const fake_quant_options& options = {}) {
  detail::cuda::fake_quantize_backward_channels(policy, x, params, axis, dy, dx, options);
}

}  // namespace qsafe
