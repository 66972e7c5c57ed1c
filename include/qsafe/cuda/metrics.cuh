#pragma once
/// \file
/// Quantization error metrics on a CUDA device: `tensor_quant_error` and `channel_quant_error` of qsafe/metrics.hpp
/// with `qsafe::cuda_t{stream, &workspace}` on device pointers, returning the same mergeable `quant_error` sums on
/// the host (docs/quantization.md, "Quantization error metrics"). Include only from .cu files.
///
/// \code
///   const qsafe::quant_error e = qsafe::tensor_quant_error(qsafe::cuda_t{stream, &workspace}, x, params);
///   all.merge(e);                  // with host or device results alike
///   double db = all.sqnr_db();
/// \endcode
///
/// Contract: the host functions' (same checks, same edge cases, NaN / ±inf rejected with their count naming `x` or
/// `y`), with these differences:
/// - Element types float, __half, __nv_bfloat16, widened to float exactly; the sums in double as `qsafe::cpu`
///   (difference in double, each term added with an fma): per thread, per block (fixed tree), then per channel over
///   the blocks in index order, so a call gives the same bits every time for a given shape and alignment; against
///   `cpu` only the order of the additions differs (|Δ| <= 2·n·2^−53·Σ|terms|).
/// - The fused form reads x once: y = the CUDA fake_quantize of x (fp32, bit-identical to cpu for float), rounded to
///   the element type as fake_quantize would store it; nothing is written. Options: the host's (stochastic rounding
///   with the host's draws); the mask does not matter here.
/// - Synchronizes `stream` (the result is on the host). Scratch memory from the policy's `cuda_workspace` when it has
///   one, else stream-ordered allocations. CUDA errors throw `qsafe::cuda_error`.

#include <climits>
#include <cmath>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "qsafe/cuda/execution.cuh"
#include "qsafe/detail/cuda/dispatch_channel_sums.cuh"
#include "qsafe/detail/cuda/dispatch_stats.cuh"  // count_non_finite
#include "qsafe/detail/cuda/kernels/metrics.cuh"
#include "qsafe/metrics.hpp"

namespace qsafe {

namespace detail::cuda {

// quant_error per channel from the device sums; then, as the host, an error naming the first input holding NaN or
// ±inf when a sum is not finite (counted on the device).
template <class T>
std::vector<quant_error> finish_errors(std::string_view function, const cuda_t& policy, const std::vector<double>& s,
                                       index_t per_channel, const matrix_view<const T>& x,
                                       const matrix_view<const T>* y) {
  std::vector<quant_error> out(s.size() / 4);
  bool finite = true;
  for (std::size_t c = 0; c < out.size(); ++c) {
    out[c] = {static_cast<std::int64_t>(per_channel), s[4 * c], s[4 * c + 1], s[4 * c + 2], s[4 * c + 3]};
    for (int k = 0; k < 4; ++k) finite = finite && std::isfinite(s[4 * c + static_cast<std::size_t>(k)]);
  }
  if (finite) return out;
  if (const auto bad = count_non_finite(function, policy, x); bad > 0) {
    fail(function, "x", "contains " + std::to_string(bad) + " NaN or infinite values; the metrics need finite data");
  }
  if (y != nullptr) {
    if (const auto bad = count_non_finite(function, policy, *y); bad > 0) {
      fail(function, "y", "contains " + std::to_string(bad) + " NaN or infinite values; the metrics need finite data");
    }
  }
  return out;
}

template <class T>
void check_metric_columns(std::string_view function, const matrix_view<const T>& x) {
  if (x.cols > INT_MAX / 2) fail(function, "x", "has more than INT_MAX / 2 columns");
}

// The elements of one channel (channels along rows: `channels` of them; along columns: cols).
template <class T>
index_t per_channel_count(const matrix_view<const T>& x, channel_axis axis, std::size_t channels) {
  return axis == channel_axis::column ? x.rows : x.size() / static_cast<index_t>(channels);
}

}  // namespace detail::cuda

/// Error sums of `x` against `y` (same shape), per tensor.
template <cuda_element T>
quant_error tensor_quant_error(const cuda_t& policy, matrix_view<const T> x,
                               matrix_view<const std::type_identity_t<T>> y) {
  constexpr std::string_view function = "tensor_quant_error";
  detail::check_error_inputs(function, x);
  detail::check_same_shape(function, "y", y, "x", x);
  detail::cuda::check_metric_columns(function, x);
  const std::vector<double> s = detail::cuda::channel_sums(
      function, policy, detail::cuda::error_op{}, {}, channel_axis::row, 1, detail::cuda::sums_operands<T>{x, y, {}});
  return detail::cuda::finish_errors(function, policy, s, x.size(), x, &y)[0];
}

/// Error sums of `x` against `y` per channel: `out[c]` for channel c (column c, or the rows r with
/// r % out.size() == c).
template <cuda_element T>
void channel_quant_error(const cuda_t& policy, matrix_view<const T> x, matrix_view<const std::type_identity_t<T>> y,
                         channel_axis axis, std::span<quant_error> out) {
  constexpr std::string_view function = "channel_quant_error";
  detail::check_error_inputs(function, x);
  detail::check_same_shape(function, "y", y, "x", x);
  detail::check_error_channels(function, x, axis, out.size());
  detail::cuda::check_metric_columns(function, x);
  const std::vector<double> s =
      detail::cuda::channel_sums(function, policy, detail::cuda::error_op{}, {}, axis, static_cast<index_t>(out.size()),
                                 detail::cuda::sums_operands<T>{x, y, {}});
  const std::vector<quant_error> result =
      detail::cuda::finish_errors(function, policy, s, detail::cuda::per_channel_count(x, axis, out.size()), x, &y);
  std::copy(result.begin(), result.end(), out.begin());
}

/// Error sums of `x` against its fake-quantized version, per tensor, in one read of x (nothing is written).
template <cuda_element T>
quant_error tensor_quant_error(const cuda_t& policy, matrix_view<const T> x, const quant_params& params,
                               const fake_quant_options& options = {}) {
  constexpr std::string_view function = "tensor_quant_error";
  detail::check_error_inputs(function, x);
  detail::check_params(function, "params", params);
  detail::check_options(function, options);
  detail::cuda::check_metric_columns(function, x);
  const detail::lane_params<float> lanes = detail::to_lanes<float>(params);
  std::vector<double> s;
  detail::with_rounding(options, options.index_offset, [&](const auto& rounding) {
    s = detail::cuda::channel_sums(function, policy,
                                   detail::cuda::fused_error_op<T, std::decay_t<decltype(rounding)>>{rounding},
                                   std::span<const detail::lane_params<float>>(&lanes, 1), channel_axis::row, 1,
                                   detail::cuda::sums_operands<T>{x, {}, {}});
  });
  return detail::cuda::finish_errors<T>(function, policy, s, x.size(), x, nullptr)[0];
}

/// Error sums of `x` against its per-channel fake-quantized version: `out[c]` for channel c (`params.size() ==
/// out.size()`), in one read of x.
template <cuda_element T>
void channel_quant_error(const cuda_t& policy, matrix_view<const T> x, std::span<const quant_params> params,
                         channel_axis axis, std::span<quant_error> out, const fake_quant_options& options = {}) {
  constexpr std::string_view function = "channel_quant_error";
  detail::check_error_inputs(function, x);
  detail::check_channels(function, params, axis, x.rows, x.cols);
  detail::check_options(function, options);
  if (out.size() != params.size()) {
    detail::fail(function, "out",
                 "has " + std::to_string(out.size()) + " entries but 'params' has " + std::to_string(params.size()));
  }
  detail::cuda::check_metric_columns(function, x);
  std::vector<detail::lane_params<float>> lanes;
  for (const quant_params& p : params) lanes.push_back(detail::to_lanes<float>(p));
  std::vector<double> s;
  detail::with_rounding(options, options.index_offset, [&](const auto& rounding) {
    s = detail::cuda::channel_sums(function, policy,
                                   detail::cuda::fused_error_op<T, std::decay_t<decltype(rounding)>>{rounding},
                                   std::span<const detail::lane_params<float>>(lanes), axis,
                                   static_cast<index_t>(params.size()), detail::cuda::sums_operands<T>{x, {}, {}});
  });
  const std::vector<quant_error> result = detail::cuda::finish_errors<T>(
      function, policy, s, detail::cuda::per_channel_count(x, axis, params.size()), x, nullptr);
  std::copy(result.begin(), result.end(), out.begin());
}

}  // namespace qsafe
