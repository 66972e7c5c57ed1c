#pragma once
// An independent long-double implementation of REFERENCE §1, the oracle the softmax tests compare against, and
// the generators of shapes, strides and row-length modes the tests share.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

#include "qsafe/softmax.hpp"
#include "support/random.hpp"

namespace qsafe::test {

using real = long double;

struct reference_params {
  real zeta = 1, gamma = 0;
  bool clips = false, off_by_one = false;
};

inline reference_params params_for(const vanilla_softmax&, index_t) {
  return {};
}
inline reference_params params_for(const off_by_one_softmax&, index_t) {
  return {1, 0, false, true};
}
inline reference_params params_for(const clipped_softmax& v, index_t) {
  return {v.zeta, v.gamma, true, false};
}
inline reference_params params_for(const normalized_clipped_softmax& v, index_t length) {
  const real gamma = length >= 2 ? (static_cast<real>(v.beta) - v.zeta) / static_cast<real>(length - 1) : 0;
  return {v.zeta, gamma, true, false};
}

struct reference_row {
  std::vector<real> p, y;
  real shift = 0;  // m (or max(m, 0)): the tests' error bounds use |x_j - m|
};

// p and y of one row of valid length `length`; masked keys 0; a NaN row is NaN; a fully masked row is 0.
template <class T>
reference_row reference_forward(const reference_params& v, const T* x, index_t length, index_t cols) {
  reference_row out{std::vector<real>(static_cast<std::size_t>(cols), 0),
                    std::vector<real>(static_cast<std::size_t>(cols), 0)};
  bool any_nan = false;
  real m = -std::numeric_limits<real>::infinity();
  for (index_t j = 0; j < length; ++j) {
    any_nan = any_nan || std::isnan(x[j]);
    if (!std::isnan(x[j])) m = std::max(m, static_cast<real>(x[j]));
  }
  if (any_nan) {
    for (index_t j = 0; j < length; ++j) out.p[j] = out.y[j] = std::numeric_limits<real>::quiet_NaN();
    return out;
  }
  if (m == -std::numeric_limits<real>::infinity()) return out;
  if (v.off_by_one) m = std::max(m, real(0));
  real sum = v.off_by_one ? std::exp(-m) : 0;
  for (index_t j = 0; j < length; ++j) sum += std::exp(static_cast<real>(x[j]) - m);
  for (index_t j = 0; j < length; ++j) {
    const real p = std::exp(static_cast<real>(x[j]) - m) / sum;
    const real affine = (v.zeta - v.gamma) * p + v.gamma;
    out.p[j] = p;
    out.y[j] = v.clips ? std::clamp(affine, real(0), real(1)) : p;
  }
  out.shift = m;
  return out;
}

// dx from p and dy (REFERENCE §1, Gradients), with the inclusive clip mask evaluated exactly.
template <class P, class T>
std::vector<real> reference_backward(const reference_params& v, const P* p, const T* dy, index_t length, index_t cols) {
  std::vector<real> g(static_cast<std::size_t>(cols), 0), dx(static_cast<std::size_t>(cols), 0);
  real dot = 0;
  for (index_t j = 0; j < length; ++j) {
    const real pj = static_cast<real>(p[j]);
    const real affine = (v.zeta - v.gamma) * pj + v.gamma;
    const bool passes = !v.clips || (affine >= 0 && affine <= 1);
    g[j] = passes ? (v.clips ? (v.zeta - v.gamma) : 1) * static_cast<real>(dy[j]) : 0;
    dot += pj * g[j];
  }
  for (index_t j = 0; j < length; ++j) dx[j] = static_cast<real>(p[j]) * (g[j] - dot);
  return dx;
}

// ---------------------------------------------------------------------------------------------------------------
// Buffers with a row stride, a misaligned start, and poisoned padding (to see that nothing outside is written).

inline constexpr double poison = 12345.0;

template <class T>
struct strided_matrix {
  std::vector<T> storage;
  matrix_view<T> view;

  strided_matrix(index_t rows, index_t cols, index_t stride, index_t misalign)
      : storage(static_cast<std::size_t>(misalign + std::max<index_t>(rows * stride, 1)), static_cast<T>(poison)),
        view(storage.data() + misalign, rows, cols, stride) {}
  strided_matrix(const strided_matrix&) = delete;

  T& operator()(index_t r, index_t c) { return view(r, c); }
  matrix_view<const T> cview() const { return view; }

  // Every element outside the view still holds the poison.
  bool padding_untouched() const {
    for (std::size_t i = 0; i < storage.size(); ++i) {
      const auto offset = static_cast<index_t>(i) - (view.data - storage.data());
      const bool inside = offset >= 0 && offset < view.rows * view.row_stride && offset % view.row_stride < view.cols;
      if (!inside && storage[i] != static_cast<T>(poison)) return false;
    }
    return true;
  }
};

struct shape {
  index_t rows, cols, stride, misalign;
};

// The columns the issue names, plus one fresh random size.
inline std::vector<index_t> test_columns(rng& random) {
  return {1, 7, 15, 16, 17, 127, 1000, 4097, static_cast<index_t>(random.integer(2, 300))};
}

inline shape random_shape(rng& random, index_t cols) {
  const index_t rows = cols > 1000 ? random.integer(1, 4) : random.integer(1, 12);
  return {rows, cols, cols + (random.coin() ? 0 : random.integer(1, 9)), random.coin() ? 0 : random.integer(1, 3)};
}

// ---------------------------------------------------------------------------------------------------------------
// Row-length modes: the data behind them, and a visitor handing each mode to a generic lambda.

enum class length_kind { full, padded, causal, causal_padded };
inline constexpr length_kind all_length_kinds[] = {length_kind::full, length_kind::padded, length_kind::causal,
                                                   length_kind::causal_padded};

inline const char* name(length_kind k) {
  switch (k) {
    case length_kind::full:
      return "full";
    case length_kind::padded:
      return "padded";
    case length_kind::causal:
      return "causal";
    case length_kind::causal_padded:
      return "causal+padded";
  }
  return "?";
}

inline index_t random_divisor(rng& random, index_t n) {
  std::vector<index_t> divisors;
  for (index_t d = 1; d <= n; ++d)
    if (n % d == 0) divisors.push_back(d);
  return divisors[static_cast<std::size_t>(random.integer(0, static_cast<long>(divisors.size()) - 1))];
}

struct length_data {
  length_kind kind = length_kind::full;
  std::vector<std::int32_t> lengths;
  index_t rows_per_length = 1, queries = 0, offset = 0;

  static length_data make(rng& random, length_kind kind, index_t rows, index_t cols) {
    length_data d;
    d.kind = kind;
    d.rows_per_length = random_divisor(random, rows);
    for (index_t i = 0; i < rows / d.rows_per_length; ++i) {
      // 0, 1 and cols come up often: they are the edge cases.
      const long pick = random.integer(0, 5);
      const long length = pick == 0 ? 0 : pick == 1 ? 1 : pick == 2 ? cols : random.integer(0, cols);
      d.lengths.push_back(static_cast<std::int32_t>(length));
    }
    d.queries = random.coin() ? 0 : random_divisor(random, rows);
    d.offset = random.coin() ? 0 : random.integer(0, cols);
    return d;
  }

  template <class F>
  decltype(auto) visit(F&& f) const {
    switch (kind) {
      case length_kind::padded:
        return f(padded_rows{lengths, rows_per_length});
      case length_kind::causal:
        return f(causal_rows{queries, offset});
      case length_kind::causal_padded:
        return f(causal_padded_rows{queries, offset, lengths, rows_per_length});
      case length_kind::full:
        break;
    }
    return f(full_rows{});
  }
};

// The variants every test runs: each with parameters that make some probabilities clip at 0 and, for zeta > 1, at 1.
inline auto test_variants() {
  return std::tuple{vanilla_softmax{},
                    clipped_softmax::from_alpha(3.2, 128),
                    clipped_softmax{1.3, -0.05},
                    normalized_clipped_softmax{1.0, 0.9},
                    normalized_clipped_softmax::from_alpha(3.2, 128),
                    normalized_clipped_softmax{1.2, 1.2},
                    off_by_one_softmax{}};
}

template <class F>
void for_each_variant(F&& f) {
  std::apply([&](const auto&... v) { (f(v), ...); }, test_variants());
}

// Scores: normal with spread 3 (so clipping happens), sometimes with -inf keys mixed in.
template <class T>
void fill_scores(rng& random, strided_matrix<T>& x, bool with_neg_inf) {
  for (index_t r = 0; r < x.view.rows; ++r)
    for (index_t c = 0; c < x.view.cols; ++c)
      x(r, c) = (with_neg_inf && random.coin(0.1)) ? -std::numeric_limits<T>::infinity()
                                                   : static_cast<T>(random.normal(0.0, 3.0));
}

}  // namespace qsafe::test
