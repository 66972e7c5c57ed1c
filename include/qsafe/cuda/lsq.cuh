#pragma once
/// \file
/// Learnable fake-quant (LSQ / LSQ+) on a CUDA device: `lsq_fake_quantize` and `lsq_fake_quantize_backward` of
/// qsafe/lsq.hpp, per tensor and per channel, with `qsafe::cuda_t{stream, &workspace}` on device pointers
/// (docs/quantization.md, "Learnable fake-quant"). Include only from .cu files.
///
/// \code
///   qsafe::cuda_workspace workspace;
///   const qsafe::cuda_t gpu{stream, &workspace};
///   qsafe::lsq_fake_quantize(gpu, x, p, y);                          // x, y, dy, dx: device matrix_views
///   const qsafe::lsq_gradients g = qsafe::lsq_fake_quantize_backward(gpu, x, p, dy, dx, {.gradient_scale = true});
/// \endcode
///
/// Contract: the host functions' (same checks, zero-point rounding, masks, gradient scale 1/√(N·Q_max), NaN and ±inf
/// conventions), with these differences:
/// - Element types float, __half, __nv_bfloat16, fp32 arithmetic (the scale rounded to float, as the CUDA
///   fake_quantize): for float, y and dx are bit-identical to `qsafe::cpu`'s; half / bfloat16 equal `qsafe::cpu` run
///   on the widened float values (y rounded once to the element type; dx is dy or 0, exact).
/// - d scale and d zero point: each term exact in double, summed in double per thread, per block (fixed tree), then
///   per channel over the blocks in index order: the same result on every call for a given shape and alignment
///   (not on the GPU model); against `cpu` (double, row order) they differ only by the order of the additions
///   (|Δ| <= 2·n·2^−53·Σ|terms| for n terms).
/// - Options: all of the host's (rounding half to even, half away from zero, or stochastic with the host's draws
///   for element index `index_offset + r·cols + j`; masks `rounded_code` and `float_range`).
/// - The backward synchronizes `stream` (the gradients are returned on the host); the forward does not. Scratch
///   memory from the policy's `cuda_workspace` when it has one, else stream-ordered allocations. CUDA errors throw
///   `qsafe::cuda_error`.

#include <climits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "qsafe/cuda/execution.cuh"
#include "qsafe/cuda/quant.cuh"
#include "qsafe/detail/cuda/dispatch_channel_sums.cuh"
#include "qsafe/detail/cuda/kernels/lsq.cuh"
#include "qsafe/lsq.hpp"

namespace qsafe {

namespace detail::cuda {

template <class T>
void check_cuda_columns(std::string_view function, const matrix_view<T>& x) {
  if (x.cols > INT_MAX / 2) fail(function, "x", "has more than INT_MAX / 2 columns");
}

// dx and the per-channel sums (inside, below, above) of the LSQ backward.
template <class T>
std::vector<lsq_sums> lsq_backward(std::string_view function, const cuda_t& policy, std::span<const quant_params> fixed,
                                   channel_axis axis, matrix_view<const T> x, matrix_view<const T> dy,
                                   matrix_view<T> dx, const fake_quant_options& options) {
  const index_t channels = static_cast<index_t>(fixed.size());
  std::vector<lsq_sums> out(fixed.size());
  if (x.empty()) return out;
  std::vector<lane_params<float>> lanes;
  for (const quant_params& q : fixed) lanes.push_back(to_lanes<float>(q));
  const auto run = [&](const auto& op) {
    return channel_sums(function, policy, op, std::span<const lane_params<float>>(lanes), axis, channels,
                        sums_operands<T>{x, dy, dx});
  };
  std::vector<double> s;
  with_lsq_rounding_and_mask(options, options.index_offset, [&](const auto& rounding, const auto& mask) {
    s = run(lsq_backward_op<std::decay_t<decltype(rounding)>, std::decay_t<decltype(mask)>>{rounding});
  });
  for (std::size_t c = 0; c < out.size(); ++c) out[c] = {s[3 * c], s[3 * c + 1], s[3 * c + 2]};
  return out;
}

}  // namespace detail::cuda

/// Forward per tensor: the CUDA `fake_quantize(policy, x, to_quant_params<float>(params, options.quant), y,
/// options.quant)`.
template <cuda_element T>
void lsq_fake_quantize(const cuda_t& policy, matrix_view<const std::type_identity_t<T>> x,
                       const learnable_qparams& params, matrix_view<T> y, const lsq_options& options = {}) {
  detail::check_learnable<float>("lsq_fake_quantize", "params", params);
  detail::check_lsq_options("lsq_fake_quantize", options);
  fake_quantize(policy, x, to_quant_params<float>(params, options.quant), y, options.quant);
}

/// Forward per channel (`axis` as in quant.hpp).
template <cuda_element T>
void lsq_fake_quantize(const cuda_t& policy, matrix_view<const std::type_identity_t<T>> x,
                       std::span<const learnable_qparams> params, channel_axis axis, matrix_view<T> y,
                       const lsq_options& options = {}) {
  const std::vector<quant_params> fixed = detail::checked_fixed_params<float>("lsq_fake_quantize", params, options);
  fake_quantize(policy, x, std::span<const quant_params>(fixed), axis, y, options.quant);
}

/// Backward per tensor: writes dx, returns d scale and d zero point (synchronizes `policy.stream`).
template <cuda_element T>
lsq_gradients lsq_fake_quantize_backward(const cuda_t& policy, matrix_view<const std::type_identity_t<T>> x,
                                         const learnable_qparams& params, matrix_view<const std::type_identity_t<T>> dy,
                                         matrix_view<T> dx, const lsq_options& options = {}) {
  constexpr std::string_view function = "lsq_fake_quantize_backward";
  detail::check_lsq_views<T>(function, x, dy, dx);
  detail::check_learnable<float>(function, "params", params);
  detail::check_lsq_options(function, options);
  detail::cuda::check_cuda_columns(function, x);
  const quant_params q = to_quant_params<float>(params, options.quant);
  const std::vector<detail::lsq_sums> s = detail::cuda::lsq_backward<T>(
      function, policy, std::span<const quant_params>(&q, 1), channel_axis::row, x, dy, dx, options.quant);
  return detail::finish_lsq(s[0], q, options.gradient_scale ? lsq_gradient_scale(x.size(), q.quant_max) : 1.0);
}

/// Backward per channel: writes dx and `gradients[c]` for each channel c (`gradients.size() == params.size()`;
/// synchronizes `policy.stream`).
template <cuda_element T>
void lsq_fake_quantize_backward(const cuda_t& policy, matrix_view<const std::type_identity_t<T>> x,
                                std::span<const learnable_qparams> params, channel_axis axis,
                                matrix_view<const std::type_identity_t<T>> dy, matrix_view<T> dx,
                                std::span<lsq_gradients> gradients, const lsq_options& options = {}) {
  constexpr std::string_view function = "lsq_fake_quantize_backward";
  const std::vector<quant_params> fixed =
      detail::checked_channel_params<float, T>(function, x, dy, dx, params, axis, gradients, options);
  detail::cuda::check_cuda_columns(function, x);
  const std::vector<detail::lsq_sums> s = detail::cuda::lsq_backward<T>(
      function, policy, std::span<const quant_params>(fixed), axis, x, dy, dx, options.quant);
  const index_t per_channel = x.size() / static_cast<index_t>(fixed.size());
  for (std::size_t c = 0; c < fixed.size(); ++c) {
    gradients[c] = detail::finish_lsq(
        s[c], fixed[c], options.gradient_scale ? lsq_gradient_scale(per_channel, fixed[c].quant_max) : 1.0);
  }
}

}  // namespace qsafe
