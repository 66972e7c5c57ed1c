#pragma once
// Ranges and quantization losses on xsimd batches (see detail/scalar/range.hpp). Non-finite values are
// detected with |x| <= max (false for NaN and ±inf), since a vector min or max may drop a NaN.

#include <algorithm>
#include <cmath>
#include <limits>
#include <xsimd/xsimd.hpp>

#include "qsafe/detail/scalar/range.hpp"
#include "qsafe/detail/simd/batch_io.hpp"
#include "qsafe/detail/simd/quant.hpp"

namespace qsafe::detail::simd {

template <class T>
row_range_result<T> row_range(const T* x, index_t n) {
  constexpr T inf = std::numeric_limits<T>::infinity(), big = std::numeric_limits<T>::max();
  batch<T> lo(inf), hi(-inf);
  auto finite = batch<T>(T(0)) == batch<T>(T(0));
  for_each_batch<T>(n, [&](index_t j, index_t m, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const batch<T> v = load<is_tail>(x + j, m, x[0]);
    lo = xsimd::min(lo, v);
    hi = xsimd::max(hi, v);
    finite = finite && (xsimd::abs(v) <= big);
  });
  alignas(64) T buffer[batch<T>::size];
  lo.store_aligned(buffer);
  const T lo_min = *std::min_element(buffer, buffer + batch<T>::size);
  return {lo_min, reduce_max(hi), xsimd::all(finite)};
}

template <class T>
bool column_range(const T* x, index_t n, T* lo, T* hi) {
  constexpr T big = std::numeric_limits<T>::max();
  auto finite = batch<T>(T(0)) == batch<T>(T(0));
  for_each_batch<T>(n, [&](index_t j, index_t m, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const batch<T> v = load<is_tail>(x + j, m, T(0));
    store<is_tail>(lo + j, m, xsimd::min(load<is_tail>(lo + j, m, T(0)), v));
    store<is_tail>(hi + j, m, xsimd::max(load<is_tail>(hi + j, m, T(0)), v));
    finite = finite && (xsimd::abs(v) <= big);
  });
  return xsimd::all(finite);
}

// Squares summed in the element type's lanes over at most 16 batches, then in double.
template <class T>
double squared_error(const uniform_params<T>& params, index_t n, const T* x) {
  const uniform_lanes<T> lanes(params);
  const lane_batches<T>& p = lanes.b;
  constexpr index_t flush = 16 * static_cast<index_t>(batch<T>::size);
  double sum = 0.0;
  for (index_t start = 0; start < n; start += flush) {
    batch<T> acc(T(0));
    for_each_batch<T>(std::min(flush, n - start), [&](index_t j, index_t m, auto tail) {
      constexpr bool is_tail = decltype(tail)::value;
      const batch<T> v = load<is_tail>(x + start + j, m, T(0));
      const batch<T> e = v - (clamp_code(p, unclamped_code(p, v)) - p.zero_point) * p.scale;
      acc = xsimd::fma(e, e, acc);
    });
    sum += static_cast<double>(xsimd::hadd(acc));
  }
  return sum;
}

}  // namespace qsafe::detail::simd

#include "qsafe/execution.hpp"

namespace qsafe::detail {

template <class T>
row_range_result<T> row_range(simd_t, const T* x, index_t n) {
  return simd::row_range(x, n);
}
template <class T>
bool column_range(simd_t, const T* x, index_t n, T* lo, T* hi) {
  return simd::column_range(x, n, lo, hi);
}
template <class T>
double squared_error(simd_t, const uniform_params<T>& params, index_t n, const T* x) {
  return simd::squared_error(params, n, x);
}

}  // namespace qsafe::detail
