#pragma once
/// \file
/// Outlier statistics on the host (REFERENCE §3, docs/statistics.md): count, min, max, ∞-norm, mean and
/// central moments up to the 4th of a tensor or of each row (each token), in one streaming pass, as mergeable
/// `moments`.
///
/// \code
///   const qsafe::moments m = qsafe::tensor_moments(qsafe::simd, x);
///   double k = m.kurtosis(), inf_norm = m.inf_norm();
///   qsafe::moments all = batch1_moments;
///   all.merge(batch2_moments);  // exact combination, any order
/// \endcode
///
/// Contract:
/// - Element types float and double; the result is in double. Values are taken in fixed chunks of 4096 of the
///   row-major sequence (whatever the row stride), each chunk's moments computed from the power sums about its own
///   mean, then merged in order with the pairwise formulas: the result is the same for any thread count, and accurate
///   when all values share a large offset.
/// - Error bound, relative, on mean/m2/m3/m4 against exact arithmetic: `cpu` accumulates in double (~1e-13 for the
///   sizes tested); `simd` sums float lanes over at most 16 terms before moving to double: ~20 eps_float
///   (~1e-6) on each power sum, amplified by cancellation only where m3 is near 0 relative to m2^1.5.
/// - Errors: an empty tensor, bad shape or stride, or a NaN or ±inf value throws `std::invalid_argument` naming
///   `x` (with the count of non-finite values), before any output is written.

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "qsafe/detail/check.hpp"
#include "qsafe/detail/parallel.hpp"
#include "qsafe/detail/scalar/stats.hpp"
#include "qsafe/detail/simd/stats.hpp"
#include "qsafe/execution.hpp"
#include "qsafe/matrix_view.hpp"
#include "qsafe/moments.hpp"

namespace qsafe {

namespace detail {

// `count` NaN or infinite values in `x` (the CUDA backend counts them on the device).
[[noreturn]] inline void fail_non_finite_count(std::string_view function, index_t count) {
  fail(function, "x",
       "contains " + std::to_string(count) + " NaN or infinite values; statistics and ranges need finite data");
}

template <class T>
[[noreturn]] void fail_non_finite(std::string_view function, const matrix_view<const T>& x) {
  fail_non_finite_count(function, count_non_finite(x));
}

template <class T>
void check_non_empty(std::string_view function, const matrix_view<const T>& x) {
  check_view(function, "x", x);
  if (x.empty()) fail(function, "x", "is empty (" + std::to_string(x.rows) + " x " + std::to_string(x.cols) + ")");
}

// Moments of all elements of x in row-major order: fixed chunks of the flattened sequence (gathered into a
// buffer when rows are not contiguous, so the result does not depend on the stride), computed in parallel when
// asked, merged left to right.
template <class Policy, class T>
moments flat_moments(const Policy& policy, int threads, const matrix_view<const T>& x) {
  const bool contiguous = x.rows == 1 || x.row_stride == x.cols;
  const index_t n = x.rows * x.cols, chunks = (n + moments_chunk - 1) / moments_chunk;
  auto chunk = [&](index_t k, std::vector<T>& scratch) {
    const index_t begin = k * moments_chunk, count = std::min(moments_chunk, n - begin);
    if (contiguous) return chunk_moments(policy, x.data + begin, count);
    scratch.resize(static_cast<std::size_t>(count));
    for (index_t f = begin; f < begin + count;) {
      const index_t r = f / x.cols, c = f % x.cols, len = std::min(x.cols - c, begin + count - f);
      std::copy_n(x.row(r) + c, len, scratch.begin() + (f - begin));
      f += len;
    }
    return chunk_moments(policy, scratch.data(), count);
  };
  moments total;
  if (threads == 1 || chunks == 1) {
    std::vector<T> scratch;
    for (index_t k = 0; k < chunks; ++k) total.merge(chunk(k, scratch));
    return total;
  }
  std::vector<moments> parts(static_cast<std::size_t>(chunks));
  for_each_row(threads, chunks, [&](index_t k) {
    std::vector<T> scratch;
    parts[static_cast<std::size_t>(k)] = chunk(k, scratch);
  });
  for (const moments& m : parts) total.merge(m);
  return total;
}

inline bool finite_bounds(const moments& m) {
  return std::isfinite(m.min) && std::isfinite(m.max);
}

}  // namespace detail

/// The moments of all elements of `x` (row-major order, chunked the same way whatever the row stride).
template <host_policy Policy, host_element T>
moments tensor_moments(const Policy& policy, matrix_view<const T> x) {
  detail::check_non_empty("tensor_moments", x);
  const moments total = detail::flat_moments(policy, detail::thread_count(policy), x);
  if (!detail::finite_bounds(total)) detail::fail_non_finite("tensor_moments", x);
  return total;
}

/// The moments of each row of `x` (e.g. each token's hidden vector); `out.size() == x.rows`. Rows are spread
/// over threads; each row's result does not depend on the thread count.
template <host_policy Policy, host_element T>
void row_moments(const Policy& policy, matrix_view<const T> x, std::span<moments> out) {
  detail::check_non_empty("row_moments", x);
  if (static_cast<index_t>(out.size()) != x.rows) {
    detail::fail("row_moments", "out",
                 "has " + std::to_string(out.size()) + " entries but 'x' has " + std::to_string(x.rows) + " rows");
  }
  std::vector<moments> rows(static_cast<std::size_t>(x.rows));
  detail::for_each_row(detail::thread_count(policy), x.rows, [&](index_t r) {
    rows[static_cast<std::size_t>(r)] = detail::flat_moments(policy, 1, matrix_view<const T>(x.row(r), 1, x.cols));
  });
  for (const moments& m : rows)
    if (!detail::finite_bounds(m)) detail::fail_non_finite("row_moments", x);
  std::copy(rows.begin(), rows.end(), out.begin());
}

/// The OSP paper's excess kurtosis of a tensor of hidden states (REFERENCE §3): per row (token),
/// `max(0, mean(x^4)/sigma^4 − 3)` with the uncentred fourth moment, averaged over rows. A row with zero
/// variance makes the result NaN (its kurtosis is undefined).
template <host_policy Policy, host_element T>
double osp_excess_kurtosis(const Policy& policy, matrix_view<const T> x) {
  detail::check_non_empty("osp_excess_kurtosis", x);
  std::vector<moments> rows(static_cast<std::size_t>(std::max<index_t>(x.rows, 0)));
  row_moments(policy, x, std::span<moments>(rows));
  double sum = 0.0;
  for (const moments& m : rows) sum += m.osp_excess_kurtosis();
  return sum / static_cast<double>(x.rows);
}

}  // namespace qsafe
