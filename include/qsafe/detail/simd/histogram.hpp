#pragma once
// Histogram kernels on xsimd batches (see detail/scalar/histogram.hpp for the bin function they reproduce).
// A scatter-increment does not vectorize on AVX2 (no conflict detection): the bins of two batches are computed with
// vector operations, then counted by scalar increments spread over up to eight tables, so that runs of equal bins
// (concentrated data) do not serialize on store-to-load forwarding; measured in bench/bench_calibration.cpp.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <xsimd/xsimd.hpp>

#include "qsafe/detail/scalar/histogram.hpp"
#include "qsafe/detail/simd/batch_io.hpp"

namespace qsafe::detail::simd {

// Counts x[0..n) into `table_count` tables `histogram_table_stride` apart (lane u into table u mod table_count).
// Float: the slots (bin + table offset) of two batches go through a 64-byte buffer straight to the increments: no
// index buffer of a whole chunk, no branch per value. Double and tails: the scalar bin function.
template <class T, class Count>
std::int64_t histogram_row(const grid_lanes<T>& g, const T* x, index_t n, Count* tables, index_t table_count) {
  const index_t stride = histogram_table_stride<Count>(g.bins, table_count);
  auto outside_slots = [&] {
    Count sum = 0;
    for (index_t t = 0; t < table_count; ++t) sum += tables[t * stride + g.bins];
    return sum;
  };
  const Count outside_before = outside_slots();
  index_t k = 0;
  if constexpr (std::is_same_v<T, float> && batch<std::int32_t>::size == batch<float>::size) {
    using lanes = batch<std::int32_t>;
    constexpr index_t width = static_cast<index_t>(batch<float>::size);
    alignas(64) std::int32_t offset[width];
    for (index_t u = 0; u < width; ++u) offset[u] = static_cast<std::int32_t>((u % table_count) * stride);
    const lanes offsets = lanes::load_aligned(offset);
    const batch<float> lo(g.lo), hi(g.hi), scale(g.scale), last(g.last), dump(static_cast<float>(g.bins));
    auto slots = [&](const float* p) {
      const batch<float> v = batch<float>::load_unaligned(p);
      const batch<float> t = xsimd::select((v >= lo) && (v <= hi), xsimd::min((v - lo) * scale, last), dump);
      return xsimd::batch_cast<std::int32_t>(t) + offsets;
    };
    constexpr index_t prefetch_distance = 4096;  // values ahead: 16 KiB
    for (; k + 2 * width <= n; k += 2 * width) {
      __builtin_prefetch(x + k + prefetch_distance);
      alignas(64) std::int32_t slot[2 * width];
      slots(x + k).store_aligned(slot);
      slots(x + k + width).store_aligned(slot + width);
      for (index_t u = 0; u < 2 * width; u += 2) {  // two slots per 64-bit read: fewer lane extractions
        std::uint64_t pair;
        std::memcpy(&pair, slot + u, sizeof pair);
        ++tables[static_cast<std::uint32_t>(pair)];
        ++tables[pair >> 32];
      }
    }
  }
  Count* t[4];
  for (index_t u = 0; u < 4; ++u) t[u] = tables + (u % table_count) * stride;
  for (; k + 4 <= n; k += 4) {
    ++t[0][scalar::bin_of(g, x[k])];
    ++t[1][scalar::bin_of(g, x[k + 1])];
    ++t[2][scalar::bin_of(g, x[k + 2])];
    ++t[3][scalar::bin_of(g, x[k + 3])];
  }
  for (; k < n; ++k) ++t[0][scalar::bin_of(g, x[k])];
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
