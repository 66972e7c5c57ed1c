#pragma once
// Histogram kernels on xsimd batches (see detail/scalar/histogram.hpp for the bin function they reproduce).
// A scatter-increment does not vectorize on AVX2 (no conflict detection): the bins of a chunk of 1024 values are
// computed with vector operations into a small index buffer, then counted by scalar increments spread round-robin
// over up to four tables, so that runs of equal bins (concentrated data) do not serialize on store-to-load
// forwarding. Four tables of 32-bit counts for 2048 bins fill 32 KiB, the L1 of the dev machine (AMD EPYC, AVX2);
// measured in bench/bench_calibration.cpp.

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <xsimd/xsimd.hpp>

#include "qsafe/detail/scalar/histogram.hpp"
#include "qsafe/detail/simd/batch_io.hpp"

namespace qsafe::detail::simd {

inline constexpr index_t histogram_chunk = 1024;

// The bins of x[0..n) (n <= histogram_chunk) into idx; the same operations as scalar::bin_of.
template <class T>
void bins_of(const grid_lanes<T>& g, const T* x, index_t n, std::int32_t* idx) {
  if constexpr (std::is_same_v<T, float>) {
    const batch<float> lo(g.lo), hi(g.hi), scale(g.scale), last(g.last), dump(static_cast<float>(g.bins));
    for_each_batch<float>(n, [&](index_t j, index_t m, auto tail) {
      constexpr bool is_tail = decltype(tail)::value;
      const batch<float> v = load<is_tail>(x + j, m, g.lo);
      const auto valid = (v >= lo) && (v <= hi);
      const batch<float> t = xsimd::select(valid, xsimd::min((v - lo) * scale, last), dump);
      const auto b = xsimd::batch_cast<std::int32_t>(t);
      if constexpr (is_tail) {
        alignas(64) std::int32_t buffer[batch<float>::size];
        b.store_aligned(buffer);
        std::copy(buffer, buffer + m, idx + j);
      } else {
        b.store_unaligned(idx + j);
      }
    });
  } else {
    // double: AVX2 has no double -> int conversion worth using; the scalar bin function, the same operations.
    for (index_t j = 0; j < n; ++j) idx[j] = scalar::bin_of(g, x[j]);
  }
}

template <class T, class Count>
std::int64_t histogram_row(const grid_lanes<T>& g, const T* x, index_t n, Count* tables, index_t table_count) {
  alignas(64) std::int32_t idx[histogram_chunk];
  const index_t stride = g.bins + 1;
  Count* t0 = tables;
  Count* t1 = table_count > 1 ? tables + stride : t0;
  Count* t2 = table_count > 2 ? tables + 2 * stride : t0;
  Count* t3 = table_count > 3 ? tables + 3 * stride : t1;
  auto outside_slots = [&] {
    Count sum = 0;
    for (index_t t = 0; t < std::min<index_t>(table_count, 4); ++t) sum += tables[t * stride + g.bins];
    return sum;
  };
  const Count outside_before = outside_slots();
  for (index_t start = 0; start < n; start += histogram_chunk) {
    const index_t m = std::min(histogram_chunk, n - start);
    bins_of(g, x + start, m, idx);
    index_t k = 0;
    for (; k + 4 <= m; k += 4) {
      ++t0[idx[k]];
      ++t1[idx[k + 1]];
      ++t2[idx[k + 2]];
      ++t3[idx[k + 3]];
    }
    for (; k < m; ++k) ++t0[idx[k]];
  }
  return static_cast<std::int64_t>(outside_slots() - outside_before);
}

// Column j is channel j (counts + j·(bins + 1) is its table); consecutive values go to different tables, so no
// round-robin is needed.
template <class T, class Count>
std::int64_t histogram_columns(const grid_lanes<T>* g, const T* x, index_t n, Count* counts) {
  return scalar::histogram_columns(g, x, n, counts);
}

// Finite min and max with NaN and ±inf counts: ±inf and NaN lanes fail |v| <= max; the last partial batch goes
// through the scalar kernel (a filler lane would take part in the min and max).
template <class T>
void finite_range_row(const T* x, index_t n, finite_range<T>& r) {
  constexpr T inf = std::numeric_limits<T>::infinity(), big = std::numeric_limits<T>::max();
  constexpr index_t width = static_cast<index_t>(batch<T>::size);
  batch<T> lo(inf), hi(-inf);
  constexpr index_t flush = index_t(1) << 20;  // lane counts stay exact integers in T (2^20 < 2^24)
  const index_t body = n - n % width;
  for (index_t start = 0; start < body; start += flush) {
    batch<T> nan_lanes(T(0)), inf_lanes(T(0));
    const index_t end = std::min(body, start + flush);
    for (index_t j = start; j < end; j += width) {
      const batch<T> v = batch<T>::load_unaligned(x + j);
      const auto finite = xsimd::abs(v) <= batch<T>(big);
      const auto is_nan = xsimd::isnan(v);
      lo = xsimd::min(lo, xsimd::select(finite, v, batch<T>(inf)));
      hi = xsimd::max(hi, xsimd::select(finite, v, batch<T>(-inf)));
      nan_lanes += xsimd::select(is_nan, batch<T>(T(1)), batch<T>(T(0)));
      inf_lanes += xsimd::select(finite || is_nan, batch<T>(T(0)), batch<T>(T(1)));
    }
    r.nan += static_cast<std::int64_t>(xsimd::hadd(nan_lanes));
    r.inf += static_cast<std::int64_t>(xsimd::hadd(inf_lanes));
  }
  alignas(64) T buffer[batch<T>::size];
  lo.store_aligned(buffer);
  r.lo = std::min(r.lo, *std::min_element(buffer, buffer + batch<T>::size));
  r.hi = std::max(r.hi, reduce_max(hi));
  scalar::finite_range_row(x + body, n - body, r);
}

template <class T>
void finite_range_columns(const T* x, index_t n, finite_range<T>* r) {
  scalar::finite_range_columns(x, n, r);
}

}  // namespace qsafe::detail::simd

#include "qsafe/execution.hpp"

namespace qsafe::detail {

template <class T, class Count>
std::int64_t histogram_row(simd_t, const grid_lanes<T>& g, const T* x, index_t n, Count* tables, index_t table_count) {
  return simd::histogram_row(g, x, n, tables, table_count);
}
template <class T, class Count>
std::int64_t histogram_columns(simd_t, const grid_lanes<T>* g, const T* x, index_t n, Count* counts) {
  return simd::histogram_columns(g, x, n, counts);
}
template <class T>
void finite_range_row(simd_t, const T* x, index_t n, finite_range<T>& r) {
  simd::finite_range_row(x, n, r);
}
template <class T>
void finite_range_columns(simd_t, const T* x, index_t n, finite_range<T>* r) {
  simd::finite_range_columns(x, n, r);
}

}  // namespace qsafe::detail
