#pragma once
/// \file
/// Range estimation on a CUDA device (REFERENCE §2, docs/quantization.md), with `qsafe::cuda_t{stream}` on
/// device pointers; the building blocks of qsafe/estimators.hpp's estimators, each giving what the host
/// estimator computes from one batch. Include only from .cu files.
///
/// \code
///   qsafe::cuda_workspace scratch;                 // reused from call to call
///   qsafe::cuda_t gpu{stream, &scratch};
///   std::vector<qsafe::value_range> r = qsafe::channel_ranges(gpu, x, {qsafe::channel_axis::column, x.cols});
///   std::vector<double> tails = qsafe::percentiles(gpu, x, std::vector<double>{0.001, 99.999});
///   qsafe::mse_search_result best = qsafe::mse_search(gpu, x, 8, qsafe::quant_mode::symmetric);
/// \endcode
///
/// - `channel_ranges`: min and max per channel of the `channel_layout` (min_max_estimator on one batch): one read.
/// - `observe_running_min_max`: running_min_max_estimator::observe's update of a state the caller keeps.
/// - `percentiles` / `percentile`: exact, `percentiles(qsafe::cpu, ...)`'s definition (linear interpolation
///   between order statistics, `h = (n − 1)·p/100`), any size: a radix selection in three passes over the tensor,
///   histograms on the device, no sort and no copy of the tensor.
/// - `quantization_losses`: `sum (x − fake_quantize(x))^2` for each of a list of parameters, in one read of the
///   tensor per 256 candidates (fp32 per-thread sums of 32 terms, then double): relative error ~1e-6.
/// - `mse_search`: mse_estimator's search on one batch, per tensor: the min-max range, its candidates scaled by
///   k/candidates, all losses in one pass, the smallest loss (ties to the wider range).
/// Element types float, __half, __nv_bfloat16 (values widened to float exactly; quantization parameters as for
/// float, `make_qparams<float>`). Each call synchronizes `stream` (results are on the host); scratch memory comes
/// from the policy's `cuda_workspace` if it has one, else from cudaMallocAsync on `stream` (see cuda_t). Errors: as the
/// host estimators (empty batch, layout, NaN / ±inf with their count, p outside [0, 100]) with `std::invalid_argument`
/// naming the argument; CUDA errors throw `qsafe::cuda_error`. The estimator classes of qsafe/estimators.hpp take
/// `cuda_t` batches through this header (per tensor and per channel: percentile and MSE channel by channel, each a
/// strided view of the batch, no copy).

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "qsafe/cuda/execution.cuh"
#include "qsafe/detail/cuda/dispatch_stats.cuh"
#include "qsafe/detail/estimator_rules.hpp"
#include "qsafe/estimators.hpp"
#include "qsafe/quant.hpp"
#include "qsafe/stats.hpp"

namespace qsafe {

namespace detail {

// The estimators' device hooks (qsafe/estimators.hpp, detail::device_hook): found by argument-dependent lookup when
// an estimator is fed a cuda_t batch; `function` names the caller in error messages.

template <cuda_element T>
std::vector<value_range> device_ranges(device_hook, const cuda_t& policy, std::string_view function,
                                       const channel_layout& layout, matrix_view<const T> x) {
  check_layout(function, layout);
  check_batch(function, layout, x);
  const cuda::channel_extremes e =
      cuda::channel_ranges(function, policy, x, layout.axis == channel_axis::column, layout.channels);
  if (e.non_finite > 0) {
    fail_non_finite_count(function, static_cast<index_t>(cuda::count_non_finite(function, policy, x)));
  }
  std::vector<value_range> out;
  for (std::size_t c = 0; c < e.lo.size(); ++c) out.push_back({e.lo[c], e.hi[c]});
  return out;
}

template <cuda_element T>
std::vector<double> device_percentiles(device_hook, const cuda_t& policy, std::string_view function,
                                       matrix_view<const T> x, std::span<const double> p) {
  check_non_empty(function, x);
  for (const double q : p) {
    if (!(q >= 0.0 && q <= 100.0)) fail(function, "p", "must be in [0, 100], got " + std::to_string(q));
  }
  return percentiles_by_selection(x.size(), p, [&](std::span<const index_t> ranks) {
    cuda::selected_values sel = cuda::select_ranks(function, policy, x, ranks);
    if (sel.non_finite > 0) fail_non_finite_count(function, static_cast<index_t>(sel.non_finite));
    return std::move(sel.values);
  });
}

template <cuda_element T>
std::vector<double> device_losses(device_hook, const cuda_t& policy, std::string_view function, matrix_view<const T> x,
                                  std::span<const quant_params> candidates) {
  check_non_empty(function, x);
  check_each_params(function, "candidates", candidates);
  std::vector<lane_params<float>> lanes;
  for (const quant_params& c : candidates) lanes.push_back(to_lanes<float>(c));
  if (lanes.empty()) return {};
  return cuda::squared_errors(function, policy, x, std::span<const lane_params<float>>(lanes));
}

}  // namespace detail

/// The min and max of each channel of `x` (one entry per channel of `layout`; per tensor by default).
template <cuda_element T>
std::vector<value_range> channel_ranges(const cuda_t& policy, matrix_view<const T> x, channel_layout layout = {}) {
  return detail::device_ranges(detail::device_hook{}, policy, "channel_ranges", layout, x);
}

/// Running min-max's update with batch `x` (running_min_max_estimator::observe): `state` empty: the batch's
/// ranges; else `lo <- m·lo + (1 − m)·lo_batch` (double), likewise `hi`. `state` is unchanged if this throws.
template <cuda_element T>
void observe_running_min_max(const cuda_t& policy, matrix_view<const T> x, double momentum,
                             const channel_layout& layout, std::vector<value_range>& state) {
  detail::check_momentum("observe_running_min_max", momentum);
  if (!state.empty() && static_cast<index_t>(state.size()) != layout.channels) {
    detail::fail("observe_running_min_max", "state",
                 "has " + std::to_string(state.size()) + " entries but the layout has " +
                     std::to_string(layout.channels) + " channels");
  }
  detail::running_update(state, channel_ranges(policy, x, layout), momentum);
}

/// The exact `p`-th percentiles of all elements of `x`, as `percentiles(qsafe::cpu, ...)` defines them.
template <cuda_element T>
std::vector<double> percentiles(const cuda_t& policy, matrix_view<const T> x, std::span<const double> p) {
  return detail::device_percentiles(detail::device_hook{}, policy, "percentiles", x, p);
}

/// One percentile; see `percentiles`.
template <cuda_element T>
double percentile(const cuda_t& policy, matrix_view<const T> x, double p) {
  return percentiles(policy, x, std::span<const double>(&p, 1))[0];
}

/// `sum over x of (x − fake_quantize(x, candidates[k]))^2` for each k (fake_quantize as for float, so x̂ is the
/// value `fake_quantize(qsafe::cpu, ...)` gives). x must be finite (NaN / ±inf make losses NaN or inf), |x| below
/// ~1e19 (fp32 squares).
template <cuda_element T>
std::vector<double> quantization_losses(const cuda_t& policy, matrix_view<const T> x,
                                        std::span<const quant_params> candidates) {
  return detail::device_losses(detail::device_hook{}, policy, "quantization_losses", x, candidates);
}

struct mse_search_result {
  value_range range;           ///< the chosen clipping range (make_qparams<float>(range, bits, mode) quantizes)
  int best = 0;                ///< its candidate index k (scale (k + 1) / candidates)
  std::vector<double> losses;  ///< every candidate's summed squared error
};

/// mse_estimator's search on one batch, per tensor (see its doc comment for the candidates and the tie rule).
template <cuda_element T>
mse_search_result mse_search(const cuda_t& policy, matrix_view<const T> x, int bits, quant_mode mode,
                             int candidates = 100) {
  detail::check_bits("mse_search", bits);
  detail::check_mode("mse_search", mode);
  if (candidates < 1) detail::fail("mse_search", "candidates", "must be >= 1, got " + std::to_string(candidates));
  const value_range bounds = channel_ranges(policy, x)[0];
  std::vector<value_range> ranges;
  std::vector<quant_params> params;
  for (int k = 0; k < candidates; ++k) {
    ranges.push_back(detail::mse_candidate(bounds, mode == quant_mode::asymmetric, k, candidates));
    params.push_back(make_qparams<float>(ranges.back(), bits, mode));
  }
  mse_search_result out;
  out.losses = quantization_losses(policy, x, std::span<const quant_params>(params));
  out.best = detail::mse_best_candidate(out.losses);
  out.range = ranges[static_cast<std::size_t>(out.best)];
  return out;
}

}  // namespace qsafe
