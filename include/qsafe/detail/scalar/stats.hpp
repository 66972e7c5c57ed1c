#pragma once
// Outlier statistics, reference kernel: the moments of one chunk of contiguous values, two passes over the chunk
// (which stays in cache) in double: the mean, then the power sums of the deviations from it, scaled by a power of
// two so that their 4th powers neither overflow nor underflow. The public functions split tensors into fixed
// chunks and merge the chunks' moments in a fixed order, so the result does not depend on the thread count.

#include <algorithm>
#include <cmath>
#include <limits>

#include "qsafe/matrix_view.hpp"
#include "qsafe/moments.hpp"

namespace qsafe::detail {

// Values per chunk: 16 KiB of float stays in L1 between the two passes.
inline constexpr index_t moments_chunk = 4096;

// The exponent e of 2^e, the power of two at or below `spread` (> 0), kept where 2^−e is a normal number of T:
// scaling deviations by 2^−e is exact and keeps their 4th powers inside T's range. 0 for a zero spread.
template <class T>
int power_of_two_exponent(T spread) {
  if (!(spread > T(0)) || !std::isfinite(spread)) return 0;
  return std::max(std::ilogb(spread), std::numeric_limits<T>::min_exponent + 8);
}

}  // namespace qsafe::detail

namespace qsafe::detail::scalar {

// min and max propagate NaN (a NaN anywhere makes both NaN), so the caller can report bad input.
template <class T>
moments chunk_moments(const T* x, index_t n) {
  double sum = 0.0, lo = std::numeric_limits<double>::infinity(), hi = -lo;
  bool nan = false;
  for (index_t j = 0; j < n; ++j) {
    const double v = static_cast<double>(x[j]);
    sum += v;
    nan = nan || std::isnan(v);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (nan) lo = hi = std::numeric_limits<double>::quiet_NaN();
  const double shift = sum / static_cast<double>(n);
  const int e = power_of_two_exponent(std::max(hi - shift, shift - lo));
  const double scale = std::ldexp(1.0, -e);
  double s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0;
  for (index_t j = 0; j < n; ++j) {
    const double d = (static_cast<double>(x[j]) - shift) * scale, d2 = d * d;
    s1 += d;
    s2 += d2;
    s3 += d2 * d;
    s4 += d2 * d2;
  }
  return moments::from_power_sums(n, shift, std::ldexp(s1, e), std::ldexp(s2, 2 * e), std::ldexp(s3, 3 * e),
                                  std::ldexp(s4, 4 * e), lo, hi);
}

}  // namespace qsafe::detail::scalar

#include "qsafe/execution.hpp"

namespace qsafe::detail {

template <class T>
moments chunk_moments(cpu_t, const T* x, index_t n) {
  return scalar::chunk_moments(x, n);
}

}  // namespace qsafe::detail
