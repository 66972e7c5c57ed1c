#pragma once
// Exact order statistics without sorting or copying the tensor: a two-pass radix selection on the float's
// bits. Each value maps to an order-preserving unsigned key (sign flipped for positives, all bits flipped for
// negatives). Pass 1 counts the keys' top 16 bits (65536 bins); the bins holding the wanted ranks follow from
// the prefix sums. Pass 2 gathers only the values in those bins and std::nth_element finds each rank among
// them. The answer is exact; the cost is two streaming reads, plus a selection over the gathered bins (small
// unless the data is concentrated in a few bins: a constant tensor gathers everything). Non-finite values
// land in the extreme bins and are counted there.

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "qsafe/detail/scalar/select.hpp"

namespace qsafe::detail::simd {

template <class T>
using key_t = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;

template <class T>
inline constexpr int bin_shift = static_cast<int>(8 * sizeof(T)) - 16;

template <class T>
key_t<T> order_key(T v) {
  using K = key_t<T>;
  const K bits = std::bit_cast<K>(v);
  constexpr K sign = K(1) << (8 * sizeof(T) - 1);
  return (bits & sign) ? ~bits : (bits | sign);
}

template <class T>
std::size_t bin_of(T v) {
  return static_cast<std::size_t>(order_key(v) >> bin_shift<T>);
}

template <class T>
selection<T> select_ranks(matrix_view<const T> x, std::span<const index_t> ranks) {
  constexpr std::size_t bins = 65536;
  selection<T> out;
  // Pass 1: 32-bit counts in the hot loop (a 256 KiB table), folded into 64-bit totals every 2^31 values.
  std::vector<std::uint64_t> total(bins, 0);
  std::vector<std::uint32_t> count(bins, 0);
  constexpr index_t segment = index_t(1) << 30;
  index_t pending = 0;
  for (index_t r = 0; r < x.rows; ++r) {
    const T* row = x.row(r);
    for (index_t begin = 0; begin < x.cols; begin += segment) {
      const index_t end = std::min(x.cols, begin + segment);
      for (index_t c = begin; c < end; ++c) ++count[bin_of(row[c])];
      pending += end - begin;
      if (pending >= (index_t(1) << 31)) {
        for (std::size_t b = 0; b < bins; ++b) total[b] += std::exchange(count[b], 0u);
        pending = 0;
      }
    }
  }
  for (std::size_t b = 0; b < bins; ++b) total[b] += count[b];
  // Non-finite keys: at or above +inf's bin, at or below -inf's bin (both infinities sit on bin edges).
  const std::size_t pos_inf = bin_of(std::numeric_limits<T>::infinity());
  const std::size_t neg_inf = bin_of(-std::numeric_limits<T>::infinity());
  for (std::size_t b = 0; b < bins; ++b)
    if (b >= pos_inf || b <= neg_inf) out.non_finite += static_cast<index_t>(total[b]);
  if (out.non_finite > 0) return out;

  // The bin of each rank, and the rank within that bin.
  std::vector<std::size_t> rank_bin;
  std::vector<index_t> rank_in_bin;
  std::vector<int> slot(bins, -1);
  std::vector<std::vector<T>> gathered;
  for (const index_t k : ranks) {
    std::uint64_t below = 0;
    std::size_t b = 0;
    while (below + total[b] <= static_cast<std::uint64_t>(k)) below += total[b++];
    rank_bin.push_back(b);
    rank_in_bin.push_back(k - static_cast<index_t>(below));
    if (slot[b] < 0) {
      slot[b] = static_cast<int>(gathered.size());
      gathered.emplace_back();
      gathered.back().reserve(static_cast<std::size_t>(total[b]));
    }
  }
  // Pass 2: gather the values of the wanted bins.
  for (index_t r = 0; r < x.rows; ++r) {
    const T* row = x.row(r);
    for (index_t c = 0; c < x.cols; ++c) {
      const int s = slot[bin_of(row[c])];
      if (s >= 0) gathered[static_cast<std::size_t>(s)].push_back(row[c]);
    }
  }
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    std::vector<T>& v = gathered[static_cast<std::size_t>(slot[rank_bin[i]])];
    const auto k = static_cast<std::ptrdiff_t>(rank_in_bin[i]);
    std::nth_element(v.begin(), v.begin() + k, v.end());
    out.values.push_back(v[static_cast<std::size_t>(k)]);
  }
  return out;
}

}  // namespace qsafe::detail::simd

#include "qsafe/execution.hpp"

namespace qsafe::detail {

template <class T>
selection<T> select_ranks(simd_t, matrix_view<const T> x, std::span<const index_t> ranks) {
  return simd::select_ranks(x, ranks);
}

}  // namespace qsafe::detail
