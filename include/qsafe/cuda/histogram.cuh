#pragma once
/// \file
/// Exact histograms (qsafe/histogram.hpp) fed batches in CUDA device memory: `h.observe(qsafe::cuda_t{stream,
/// &workspace}, x)` with `x` a `matrix_view<const D>` of device memory, D = float, __half or __nv_bfloat16 (values
/// widened to float exactly), on a `qsafe::histogram<float>`. The histogram object stays on the host; each batch's
/// pass runs on the device and its result is added to the host state, so GPU and host batches (and histograms
/// merged from anywhere) add up to one exact histogram. Include only from .cu files.
///
/// \code
///   qsafe::cuda_workspace scratch;                                      // reused from call to call
///   const qsafe::cuda_t gpu{stream, &scratch};
///   qsafe::histogram<float> h({qsafe::channel_axis::column, x.cols});  // per column channel, 2048 bins
///   qsafe::calibrate(gpu, h, x);  // x: a matrix_view<const __half> (or float, bf16) of device memory
///
///   qsafe::histogram<float> mixed;  // or batch by batch, from either side, in each pass
///   do {
///     mixed.observe(gpu, x);
///     mixed.observe(qsafe::simd, host_batch);  // a matrix_view<const float> in host memory
///   } while (mixed.next_pass());
/// \endcode
///
/// What is exact, and what is not:
/// - Pass 1 (per channel finite min and max, NaN and ±inf counts) is exact: the same floats the host finds, so the
///   same grids. One read of the batch (the range kernels of qsafe/cuda/estimators.cuh's channel_ranges); a batch
///   with a NaN or ±inf is read a second time to find the finite range and count them per channel. Only the sign of
///   a zero min or max may differ from the host's (which depends, on the host too, on the order values are seen);
///   the bins are the same either way.
/// - Pass 2 computes each value's bin exactly as the host's `bin_of` (the same fp32 operations, each correctly
///   rounded, none contracted into an FMA): the counts equal the host's bit for bit, per tensor and per channel on
///   both axes. Counts are 32-bit per block in shared memory, flushed into 64-bit device counts every 2^30 values
///   (no wrap), copied back and added to the host's int64 counts.
/// - Errors as for host batches, with the histogram unchanged: NaN / ±inf (by `options.nan` / `options.inf`: an
///   error naming the tensor and the count, or skipped and counted), values off a fixed grid; CUDA errors throw
///   `qsafe::cuda_error`. Each pass synchronizes `stream`.
/// - Cost: pass 2 copies `channels × (bins + 1)` 64-bit counts back per batch (67 MB for 4096 channels of 2048
///   bins), and adds them on the host: with many channels that copy and that addition, not the read, dominate.
///
/// Design: histogram::observe has an overload for non-host policies that calls `histogram_ranges` /
/// `histogram_bins` with `detail::device_hook` first; this header defines them for cuda_t in qsafe::detail,
/// where argument-dependent lookup finds them when observe is instantiated (the host header needs no CUDA).

#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "qsafe/cuda/execution.cuh"
#include "qsafe/detail/cuda/dispatch_histogram.cuh"
#include "qsafe/histogram.hpp"

namespace qsafe {

namespace detail {

template <class D>
void check_device_batch(const matrix_view<const D>& x) {
  if (x.cols > INT_MAX / 2) {
    fail("histogram::observe", "x", "has " + std::to_string(x.cols) + " columns; the CUDA kernels take at most 2^30");
  }
}

/// Pass 1 of a device batch (see device_hook in qsafe/estimators.hpp, the passes in qsafe/histogram.hpp).
template <class T, cuda_element D>
void histogram_ranges(device_hook, const cuda_t& policy, const matrix_view<const D>& x, const channel_layout& layout,
                      std::vector<finite_range<T>>& out) {
  static_assert(std::is_same_v<T, float>, "device batches feed qsafe::histogram<float> only");
  check_device_batch(x);
  out = cuda::finite_channel_ranges("histogram::observe", policy, x, layout);
}

/// Pass 2 of a device batch.
template <class T, cuda_element D, class Add>
void histogram_bins(device_hook, const cuda_t& policy, const matrix_view<const D>& x, const channel_layout& layout,
                    std::span<const grid_lanes<T>> grids, Add&& add) {
  static_assert(std::is_same_v<T, float>, "device batches feed qsafe::histogram<float> only");
  check_device_batch(x);
  cuda::count_bins("histogram::observe", policy, x, layout, grids, add);
}

}  // namespace detail

}  // namespace qsafe
