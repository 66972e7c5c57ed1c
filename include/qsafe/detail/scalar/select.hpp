#pragma once
// Exact order statistics (the k-th smallest value) of all elements of a matrix, reference version: copy the
// values, std::nth_element. Ranks are 0-based and ascending; NaN and ±inf are counted, not selected.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "qsafe/matrix_view.hpp"

namespace qsafe::detail {

template <class T>
struct selection {
  std::vector<T> values;   // values[i] is the ranks[i]-th smallest
  index_t non_finite = 0;  // NaN or ±inf found (then values is empty)
};

}  // namespace qsafe::detail

namespace qsafe::detail::scalar {

template <class T>
selection<T> select_ranks(matrix_view<const T> x, std::span<const index_t> ranks) {
  selection<T> out;
  std::vector<T> all;
  all.reserve(static_cast<std::size_t>(x.size()));
  for (index_t r = 0; r < x.rows; ++r)
    for (index_t c = 0; c < x.cols; ++c) {
      out.non_finite += std::isfinite(x(r, c)) ? 0 : 1;
      all.push_back(x(r, c));
    }
  if (out.non_finite > 0) return out;
  for (const index_t k : ranks) {
    std::nth_element(all.begin(), all.begin() + k, all.end());
    out.values.push_back(all[static_cast<std::size_t>(k)]);
  }
  return out;
}

}  // namespace qsafe::detail::scalar

#include "qsafe/execution.hpp"

namespace qsafe::detail {

template <class T>
selection<T> select_ranks(cpu_t, matrix_view<const T> x, std::span<const index_t> ranks) {
  return scalar::select_ranks(x, ranks);
}

}  // namespace qsafe::detail
