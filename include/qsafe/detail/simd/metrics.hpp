#pragma once
// Quantization error metrics on xsimd batches: the row sums Σx², Σy², Σxy, Σ(x − y)² in the element type's lanes,
// two sets of accumulators (even and odd batches), flushed to double every 16 batches, as the statistics kernels
// do: each sum is within ~20 eps_T of the exact sum of |terms| (relative), which for SQNR means ~1e-5 dB in float.
// Each block of 16 batches is scaled by a power of two first (exact), so float squares do not overflow or
// underflow.
// The difference x − y is taken in T (exact when y is within a factor 2 of x, e.g. a fake-quantized x inside the
// range; else rounded once).

#include <algorithm>
#include <xsimd/xsimd.hpp>

#include "qsafe/detail/scalar/metrics.hpp"
#include "qsafe/detail/scalar/stats.hpp"
#include "qsafe/detail/simd/batch_io.hpp"

namespace qsafe::detail::simd {

template <class T>
error_sums error_row(index_t n, const T* x, const T* y) {
  constexpr index_t width = static_cast<index_t>(batch<T>::size), flush = 16 * width;
  error_sums s;
  for (index_t start = 0; start < n; start += flush) {
    const index_t count = std::min(flush, n - start);
    const T *a = x + start, *b = y + start;
    // The block's largest magnitude, rounded to a power of two 2^e: the terms are summed scaled by 2^−2e (exact),
    // so squares of values far from 1 neither overflow nor underflow T (1e30² in float, 1e-30²).
    batch<T> top(T(0));
    for_each_batch<T>(count, [&](index_t i, index_t m, auto tail) {
      constexpr bool is_tail = decltype(tail)::value;
      top = xsimd::max(
          top, xsimd::max(xsimd::abs(load<is_tail>(a + i, m, T(0))), xsimd::abs(load<is_tail>(b + i, m, T(0)))));
    });
    const T largest = reduce_max(top);
    if (largest == T(0)) continue;
    // NaN or ±inf (max may drop a NaN: the unscaled sums below still carry it) are summed unscaled.
    const int e = std::isfinite(largest) ? power_of_two_exponent(largest) : 0;
    const batch<T> scale(std::ldexp(T(1), -e));
    batch<T> x2(T(0)), y2(T(0)), xy(T(0)), e2(T(0)), x2b(T(0)), y2b(T(0)), xyb(T(0)), e2b(T(0));
    index_t k = 0;
    for (; k + 2 * width <= count; k += 2 * width) {
      const batch<T> u = batch<T>::load_unaligned(a + k) * scale, v = batch<T>::load_unaligned(b + k) * scale;
      const batch<T> u1 = batch<T>::load_unaligned(a + k + width) * scale,
                     v1 = batch<T>::load_unaligned(b + k + width) * scale;
      const batch<T> d = u - v, d1 = u1 - v1;
      x2 = xsimd::fma(u, u, x2), y2 = xsimd::fma(v, v, y2), xy = xsimd::fma(u, v, xy), e2 = xsimd::fma(d, d, e2);
      x2b = xsimd::fma(u1, u1, x2b), y2b = xsimd::fma(v1, v1, y2b), xyb = xsimd::fma(u1, v1, xyb),
      e2b = xsimd::fma(d1, d1, e2b);
    }
    for_each_batch<T>(count - k, [&](index_t i, index_t m, auto tail) {
      constexpr bool is_tail = decltype(tail)::value;
      const batch<T> u = load<is_tail>(a + k + i, m, T(0)) * scale, v = load<is_tail>(b + k + i, m, T(0)) * scale;
      const batch<T> d = u - v;
      x2 = xsimd::fma(u, u, x2), y2 = xsimd::fma(v, v, y2), xy = xsimd::fma(u, v, xy), e2 = xsimd::fma(d, d, e2);
    });
    s.x2 += std::ldexp(static_cast<double>(xsimd::hadd(x2 + x2b)), 2 * e);
    s.y2 += std::ldexp(static_cast<double>(xsimd::hadd(y2 + y2b)), 2 * e);
    s.xy += std::ldexp(static_cast<double>(xsimd::hadd(xy + xyb)), 2 * e);
    s.e2 += std::ldexp(static_cast<double>(xsimd::hadd(e2 + e2b)), 2 * e);
  }
  return s;
}

}  // namespace qsafe::detail::simd

#include "qsafe/execution.hpp"

namespace qsafe::detail {

template <class T>
error_sums error_row(simd_t, index_t n, const T* x, const T* y) {
  return simd::error_row(n, x, y);
}

}  // namespace qsafe::detail
