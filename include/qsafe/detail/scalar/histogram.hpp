#pragma once
// Histogram kernels, reference: the bin of a value on a fixed uniform grid, counting a row or the columns of a row
// into integer tables, and the first pass (finite min and max, NaN and ±inf counts). The bin function below is
// the definition every backend reproduces bit for bit:
//   bin(x) = min(trunc(fl(fl(x − lo) · scale)), bins − 1)   for lo <= x <= hi (in the element type T),
// and the extra "outside" slot `bins` for anything else (NaN, ±inf, values off the grid). Every operation is one
// correctly rounded T operation, so the same x gets the same bin in any batch, thread or backend.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "qsafe/matrix_view.hpp"

namespace qsafe::detail {

// One channel's grid in the element type: `bins` bins over [lo, hi], scale = bins / (hi − lo) (0 when hi == lo:
// every value is in bin 0).
template <class T>
struct grid_lanes {
  T lo, hi, scale, last;  // last = bins − 1, exact in T
  std::int32_t bins;
};

// First-pass state of one channel: min and max of the finite values, NaN and ±inf counts.
template <class T>
struct finite_range {
  T lo = std::numeric_limits<T>::infinity();
  T hi = -std::numeric_limits<T>::infinity();
  std::int64_t nan = 0, inf = 0;
};

// Slots from one count table of a channel to the next when a kernel spreads its increments over `tables` tables:
// at least bins + 1, padded so that consecutive tables start 4096/tables bytes apart modulo 4 KiB (else the same
// bin of neighbouring tables aliases in the CPU's 4 KiB store-to-load check and stalls on concentrated data).
template <class Count>
index_t histogram_table_stride(index_t bins, index_t tables) {
  if (tables <= 1) return bins + 1;
  constexpr index_t page = 4096, size = static_cast<index_t>(sizeof(Count));
  const index_t step = page / tables / size * size, need = (bins + 1) * size;
  const index_t bytes = need <= step ? step : (need - step + page - 1) / page * page + step;
  return bytes / size;
}

}  // namespace qsafe::detail

namespace qsafe::detail::scalar {

template <class T>
std::int32_t bin_of(const grid_lanes<T>& g, T x) {
  if (!(x >= g.lo && x <= g.hi)) return g.bins;
  return static_cast<std::int32_t>(std::min((x - g.lo) * g.scale, g.last));
}

// counts[bin(x_j)] += 1 for a row of one channel (counts has bins + 1 slots); returns how many went outside.
// (The caller may offer several tables to spread the increments over; the reference uses the first.)
template <class T, class Count>
std::int64_t histogram_row(const grid_lanes<T>& g, const T* x, index_t n, Count* counts) {
  std::int64_t outside = 0;
  for (index_t j = 0; j < n; ++j) {
    const std::int32_t b = bin_of(g, x[j]);
    outside += b == g.bins ? 1 : 0;
    ++counts[b];
  }
  return outside;
}

// Column j is channel j: counts + j·(bins + 1) is its table.
template <class T, class Count>
std::int64_t histogram_columns(const grid_lanes<T>* g, const T* x, index_t n, Count* counts) {
  std::int64_t outside = 0;
  for (index_t j = 0; j < n; ++j) {
    const std::int32_t b = bin_of(g[j], x[j]);
    outside += b == g[j].bins ? 1 : 0;
    ++counts[j * (g[j].bins + 1) + b];
  }
  return outside;
}

template <class T>
void finite_range_row(const T* x, index_t n, finite_range<T>& r) {
  for (index_t j = 0; j < n; ++j) {
    const T v = x[j];
    if (std::isnan(v)) {
      ++r.nan;
    } else if (std::isinf(v)) {
      ++r.inf;
    } else {
      r.lo = std::min(r.lo, v);
      r.hi = std::max(r.hi, v);
    }
  }
}

template <class T>
void finite_range_columns(const T* x, index_t n, finite_range<T>* r) {
  for (index_t j = 0; j < n; ++j) finite_range_row(x + j, 1, r[j]);
}

}  // namespace qsafe::detail::scalar

#include "qsafe/execution.hpp"

namespace qsafe::detail {

template <class T, class Count>
std::int64_t histogram_row(cpu_t, const grid_lanes<T>& g, const T* x, index_t n, Count* tables,
                           index_t /*table_count*/) {
  return scalar::histogram_row(g, x, n, tables);
}
template <class T, class Count>
std::int64_t histogram_columns(cpu_t, const grid_lanes<T>* g, const T* x, index_t n, Count* counts) {
  return scalar::histogram_columns(g, x, n, counts);
}
template <class T>
void finite_range_row(cpu_t, const T* x, index_t n, finite_range<T>& r) {
  scalar::finite_range_row(x, n, r);
}
template <class T>
void finite_range_columns(cpu_t, const T* x, index_t n, finite_range<T>* r) {
  scalar::finite_range_columns(x, n, r);
}

}  // namespace qsafe::detail
