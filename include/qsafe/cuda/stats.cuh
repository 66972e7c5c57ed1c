#pragma once
/// \file
/// Outlier statistics on a CUDA device: `tensor_moments` of qsafe/stats.hpp with `qsafe::cuda_t{stream}`, on
/// device pointers (REFERENCE §3, docs/statistics.md). Include only from .cu files.
///
/// \code
///   const qsafe::moments m = qsafe::tensor_moments(qsafe::cuda_t{stream}, x);  // x: matrix_view of device memory
///   double k = m.kurtosis(), inf_norm = m.inf_norm();
///   all.merge(m);                                   // the same mergeable accumulator as the host backends
/// \endcode
///
/// Contract (differences from the host backends marked *):
/// - Element types*: float, __half, __nv_bfloat16 (widened to float exactly); the moments are accumulated in
///   double: each thread takes tiles of 32 values, sums the powers of their deviations from the tile's midrange in
///   double and merges the tile into its running moments with `moments::merge`'s formulas; blocks and then the
///   block partials are merged in a fixed order. Deterministic for a given shape (the partition does not depend on
///   the GPU). Relative error on mean/m2/m3/m4 against exact arithmetic: ~1e-13 for the sizes tested (the host
///   `cpu` backend's order), amplified only where a central sum nearly cancels.
/// - One read of the tensor, then a one-block combine kernel and one copy of the result: the call synchronizes
///   `stream`* (the result is on the host). Scratch memory: the policy's `cuda_workspace` if it has one (reused;
///   fixed cost of a call ~20 us), else a small cudaMallocAsync on `stream`* (~85 us, measured on the H100).
/// - Errors: as the host: an empty tensor, a bad shape or stride, or NaN / ±inf values (with their count,
///   counted on the device) throw `std::invalid_argument` naming `x`; CUDA errors throw `qsafe::cuda_error`.

#include <cstdint>

#include "qsafe/cuda/execution.cuh"
#include "qsafe/detail/cuda/dispatch_stats.cuh"
#include "qsafe/moments.hpp"
#include "qsafe/stats.hpp"

namespace qsafe {

/// The moments (count, mean, M2..M4, min, max) of all elements of `x`.
template <cuda_element T>
moments tensor_moments(const cuda_t& policy, matrix_view<const T> x) {
  detail::check_non_empty("tensor_moments", x);
  const detail::cuda::partial_moments m = detail::cuda::tensor_moments("tensor_moments", policy, x);
  if (m.non_finite > 0) {
    detail::fail_non_finite_count("tensor_moments",
                                  static_cast<index_t>(detail::cuda::count_non_finite("tensor_moments", policy, x)));
  }
  moments out;
  out.count = static_cast<std::int64_t>(m.n);
  out.mean = m.mean;
  out.m2 = m.m2;
  out.m3 = m.m3;
  out.m4 = m.m4;
  out.min = m.lo;
  out.max = m.hi;
  return out;
}

}  // namespace qsafe
