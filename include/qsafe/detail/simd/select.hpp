#pragma once
// Exact order statistics without sorting or copying the tensor: a radix selection on the float's bits. Each value
// maps to an order-preserving unsigned key (sign flipped for positives, all bits flipped for negatives). Pass 1
// counts the keys' top 16 bits (65536 bins); the bin holding each wanted rank, and the rank within it, follow from
// the prefix sums. While a wanted bin holds more than `gather_limit` values, one more pass counts the next 16 bits
// of the values in that bin (for float, two levels give the whole key: the value itself, without any copy). Then
// one last pass gathers the (few) values of the remaining bins and std::nth_element finds each rank among them.
// Exact; the cost is two to four streaming reads. Non-finite values land in the extreme bins of pass 1 and are
// counted there.

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
inline constexpr int key_bits = static_cast<int>(8 * sizeof(T));

template <class T>
key_t<T> order_key(T v) {
  using K = key_t<T>;
  const K bits = std::bit_cast<K>(v);
  constexpr K sign = K(1) << (key_bits<T> - 1);
  return (bits & sign) ? ~bits : (bits | sign);
}

template <class T>
T from_key(key_t<T> key) {
  using K = key_t<T>;
  constexpr K sign = K(1) << (key_bits<T> - 1);
  return std::bit_cast<T>((key & sign) ? (key ^ sign) : ~key);
}

template <class T>
std::size_t top_bin(T v) {
  return static_cast<std::size_t>(order_key(v) >> (key_bits<T> - 16));
}

// Values a wanted bin may hold and still be gathered rather than refined by another counting pass.
inline constexpr std::uint64_t gather_limit = 65536;

template <class T, class F>
void for_each_value(const matrix_view<const T>& x, F&& f) {
  for (index_t r = 0; r < x.rows; ++r) {
    const T* row = x.row(r);
    for (index_t c = 0; c < x.cols; ++c) f(row[c]);
  }
}

// One wanted rank: the key bits known so far (`known` leading bits equal to `prefix`), the rank among the values
// that share them, and how many values share them.
template <class T>
struct rank_target {
  key_t<T> prefix = 0;
  int known = 0;
  std::uint64_t rank = 0, group = 0;

  bool matches(key_t<T> key) const { return (key >> (key_bits<T> - known)) == prefix; }
  // Descends into the histogram bin holding the rank.
  void descend(const std::vector<std::uint64_t>& histogram) {
    std::uint64_t below = 0;
    std::size_t b = 0;
    while (below + histogram[b] <= rank) below += histogram[b++];
    prefix = static_cast<key_t<T>>((prefix << 16) | b);
    known += 16;
    rank -= below;
    group = histogram[b];
  }
};

template <class T>
selection<T> select_ranks(matrix_view<const T> x, std::span<const index_t> ranks) {
  using K = key_t<T>;
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
      for (index_t c = begin; c < end; ++c) ++count[top_bin(row[c])];
      pending += end - begin;
      if (pending >= (index_t(1) << 31)) {
        for (std::size_t b = 0; b < bins; ++b) total[b] += std::exchange(count[b], 0u);
        pending = 0;
      }
    }
  }
  for (std::size_t b = 0; b < bins; ++b) total[b] += count[b];
  // Non-finite keys: at or above +inf's bin, at or below -inf's bin (both infinities sit on bin edges).
  const std::size_t pos_inf = top_bin(std::numeric_limits<T>::infinity());
  const std::size_t neg_inf = top_bin(-std::numeric_limits<T>::infinity());
  for (std::size_t b = 0; b < bins; ++b)
    if (b >= pos_inf || b <= neg_inf) out.non_finite += static_cast<index_t>(total[b]);
  if (out.non_finite > 0) return out;

  std::vector<rank_target<T>> targets(ranks.size());
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    targets[i].rank = static_cast<std::uint64_t>(ranks[i]);
    targets[i].descend(total);
  }

  // Refinement passes: the next 16 bits of the values in each still-large wanted bin.
  auto needs_refining = [](const rank_target<T>& t) { return t.known < key_bits<T> && t.group > gather_limit; };
  while (std::any_of(targets.begin(), targets.end(), needs_refining)) {
    std::vector<rank_target<T>> groups;  // distinct (prefix, known) to count
    for (const auto& t : targets)
      if (needs_refining(t) && std::none_of(groups.begin(), groups.end(), [&](const rank_target<T>& g) {
            return g.prefix == t.prefix && g.known == t.known;
          }))
        groups.push_back(t);
    std::vector<std::vector<std::uint64_t>> histograms(groups.size(), std::vector<std::uint64_t>(bins, 0));
    for_each_value(x, [&](T v) {
      const K key = order_key(v);
      for (std::size_t g = 0; g < groups.size(); ++g) {
        if (groups[g].matches(key)) ++histograms[g][(key >> (key_bits<T> - groups[g].known - 16)) & 0xFFFF];
      }
    });
    for (auto& t : targets) {
      if (!needs_refining(t)) continue;
      for (std::size_t g = 0; g < groups.size(); ++g)
        if (groups[g].prefix == t.prefix && groups[g].known == t.known) {
          t.descend(histograms[g]);
          break;
        }
    }
  }

  // Last pass: gather the values of the bins whose key is not yet complete.
  std::vector<std::vector<T>> gathered(targets.size());
  bool any = false;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (targets[i].known < key_bits<T>) {
      gathered[i].reserve(static_cast<std::size_t>(targets[i].group));
      any = true;
    }
  }
  const bool first_level = std::all_of(targets.begin(), targets.end(),
                                       [](const rank_target<T>& t) { return t.known == 16 || t.known == key_bits<T>; });
  if (any && first_level) {
    // The common case (no refinement): one table lookup per value finds its target, if any.
    std::vector<int> slot(bins, -1);
    for (std::size_t i = 0; i < targets.size(); ++i)
      if (targets[i].known < key_bits<T> && slot[targets[i].prefix] < 0) slot[targets[i].prefix] = static_cast<int>(i);
    for_each_value(x, [&](T v) {
      const int s = slot[top_bin(v)];
      if (s >= 0) gathered[static_cast<std::size_t>(s)].push_back(v);
    });
    for (std::size_t i = 0; i < targets.size(); ++i)  // targets sharing a bin share its values
      if (targets[i].known < key_bits<T> && slot[targets[i].prefix] != static_cast<int>(i))
        gathered[i] = gathered[static_cast<std::size_t>(slot[targets[i].prefix])];
  } else if (any) {
    for_each_value(x, [&](T v) {
      const K key = order_key(v);
      for (std::size_t i = 0; i < targets.size(); ++i)
        if (targets[i].known < key_bits<T> && targets[i].matches(key)) gathered[i].push_back(v);
    });
  }
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (targets[i].known == key_bits<T>) {
      out.values.push_back(from_key<T>(targets[i].prefix));  // every value in the group has this key
      continue;
    }
    std::vector<T>& v = gathered[i];
    const auto k = static_cast<std::ptrdiff_t>(targets[i].rank);
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
