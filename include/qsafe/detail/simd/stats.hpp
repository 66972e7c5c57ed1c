#pragma once
// Outlier statistics on xsimd batches: the moments of one chunk in two passes over the cached chunk. Pass 1 finds
// min, max and the chunk mean (summing x − x0 in the element type: only an approximate shift is needed). Pass 2
// sums the powers of d = (x − shift)·2^−e in the element type's lanes, with 2^e the chunk's largest |x − shift|
// rounded to a power of two (an exact scaling that keeps d^4 from overflowing or underflowing float), flushed to
// double every 16 batches, so a float sum never adds more than 16 terms per lane (relative error <= ~20 eps_float
// on each power sum). A chunk holding NaN or ±inf is handed to the reference kernel, which reports it.

#include <algorithm>
#include <cmath>
#include <limits>
#include <xsimd/xsimd.hpp>

#include "qsafe/detail/scalar/stats.hpp"
#include "qsafe/detail/simd/batch_io.hpp"

namespace qsafe::detail::simd {

template <class T>
T lane_min(const batch<T>& v) {
  alignas(64) T buffer[batch<T>::size];
  v.store_aligned(buffer);
  return *std::min_element(buffer, buffer + batch<T>::size);
}

template <class T>
moments chunk_moments(const T* x, index_t n) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  const T x0 = x[0];
  batch<T> lo(inf), hi(-inf), sum(T(0)), nan_seen(T(0));
  for_each_batch<T>(n, [&](index_t j, index_t m, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const batch<T> v = load<is_tail>(x + j, m, x0);
    lo = xsimd::min(lo, v);
    hi = xsimd::max(hi, v);
    sum += v - x0;
    nan_seen += xsimd::select(xsimd::isnan(v), batch<T>(T(1)), batch<T>(T(0)));
  });
  const T lo_min = lane_min(lo), hi_max = reduce_max(hi);
  if (xsimd::hadd(nan_seen) > T(0) || !std::isfinite(lo_min) || !std::isfinite(hi_max)) {
    return scalar::chunk_moments(x, n);
  }
  const T shift =
      static_cast<T>(static_cast<double>(x0) + static_cast<double>(xsimd::hadd(sum)) / static_cast<double>(n));
  const int e = power_of_two_exponent(std::max(hi_max - shift, shift - lo_min));
  const batch<T> c(shift), scale(std::ldexp(T(1), -e));

  constexpr index_t flush = 16 * static_cast<index_t>(batch<T>::size);
  double s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0;
  for (index_t start = 0; start < n; start += flush) {
    batch<T> a1(T(0)), a2(T(0)), a3(T(0)), a4(T(0));
    for_each_batch<T>(std::min(flush, n - start), [&](index_t j, index_t m, auto tail) {
      constexpr bool is_tail = decltype(tail)::value;
      const batch<T> d = (load<is_tail>(x + start + j, m, shift) - c) * scale, d2 = d * d;
      a1 += d;
      a2 += d2;
      a3 = xsimd::fma(d2, d, a3);
      a4 = xsimd::fma(d2, d2, a4);
    });
    s1 += static_cast<double>(xsimd::hadd(a1));
    s2 += static_cast<double>(xsimd::hadd(a2));
    s3 += static_cast<double>(xsimd::hadd(a3));
    s4 += static_cast<double>(xsimd::hadd(a4));
  }
  return moments::from_power_sums(n, static_cast<double>(shift), std::ldexp(s1, e), std::ldexp(s2, 2 * e),
                                  std::ldexp(s3, 3 * e), std::ldexp(s4, 4 * e), static_cast<double>(lo_min),
                                  static_cast<double>(hi_max));
}

}  // namespace qsafe::detail::simd

#include "qsafe/execution.hpp"

namespace qsafe::detail {

template <class T>
moments chunk_moments(simd_t, const T* x, index_t n) {
  return simd::chunk_moments(x, n);
}

}  // namespace qsafe::detail
