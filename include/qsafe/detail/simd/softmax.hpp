#pragma once
// The softmax family on xsimd batches, one row at a time, three passes over a row that stays in cache:
// max; exp(x - m) stored and summed; the affine map and clip. Tails go through the same vector code.

#include <algorithm>
#include <cmath>
#include <limits>
#include <xsimd/xsimd.hpp>

#include "qsafe/detail/simd/batch_io.hpp"
#include "qsafe/detail/simd/exp.hpp"
#include "qsafe/softmax_variant.hpp"

namespace qsafe::detail::simd {

// clip(v, 0, 1) that lets NaN through (comparisons with NaN are false).
template <class T>
batch<T> clip01(const batch<T>& v) {
  const batch<T> zero(T(0)), one(T(1));
  return xsimd::select(v < zero, zero, xsimd::select(v > one, one, v));
}

// Max over the valid keys, and whether any of them is NaN (max drops NaN, so it is tracked on the side).
template <class T>
T row_max(const T* x, index_t length, bool& any_nan) {
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  batch<T> m(ninf);
  xsimd::batch_bool<T> nan(false);
  for_each_batch<T>(length, [&](index_t j, index_t n, auto tail) {
    const batch<T> v = load<decltype(tail)::value>(x + j, n, ninf);
    m = xsimd::max(m, v);
    nan = nan || xsimd::isnan(v);
  });
  any_nan = xsimd::any(nan);
  return reduce_max(m);
}

template <class T>
void fill_row(T* out, index_t begin, index_t end, T value) {
  if (out != nullptr) std::fill(out + begin, out + end, value);
}

// Writes exp(x_j - m) to e[0, length) and returns the denominator (with the off-by-one term). While the exp keeps
// the core busy, it prefetches [ahead, ahead + length): the next row when rows are contiguous (measured 1.35 ->
// 0.95 ns/element for the CS forward at T = 512 on 64 MiB, docs/performance.md). Prefetches never fault.
template <class Variant, class T>
T exp_and_sum(const T* x, index_t length, T m, T* e, const T* ahead) {
  const batch<T> shift(m);
  batch<T> sum(T(0));
  for_each_batch<T>(length, [&](index_t j, index_t n, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const batch<T> ej = exp_nonpositive(load<is_tail>(x + j, n, -std::numeric_limits<T>::infinity()) - shift);
    store<is_tail>(e + j, n, ej);
    prefetch(ahead + j);
    sum += ej;
  });
  T total = xsimd::hadd(sum);
  if constexpr (Variant::off_by_one) total += std::exp(-m);
  return total;
}

// Returns the shift m (row max, or max(m, 0) off-by-one), or -inf for a fully masked row, NaN for a NaN row.
template <class Variant, class T>
T row_shift(const T* x, index_t length) {
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  if (length == 0) return ninf;
  bool any_nan = false;
  T m = row_max(x, length, any_nan);
  if (any_nan) return std::numeric_limits<T>::quiet_NaN();
  if constexpr (Variant::off_by_one) m = std::max(m, T(0));
  return m;
}

template <class Variant, class T>
void forward_row(const Variant& variant, index_t length, index_t cols, const T* x, T* y, T* p) {
  const T m = row_shift<Variant>(x, length);
  if (!(m > -std::numeric_limits<T>::infinity())) {
    const T value = std::isnan(m) ? m : T(0);
    fill_row(y, 0, length, value);
    fill_row(p, 0, length, value);
  } else {
    T* e = p != nullptr ? p : y;
    const T sum = exp_and_sum<Variant>(x, length, m, e, x + cols);
    const clip_affine a = variant.affine_for(length);
    const batch<T> scale(static_cast<T>(a.scale)), shift(static_cast<T>(a.shift)), inv(T(1) / sum);
    for_each_batch<T>(length, [&](index_t j, index_t n, auto tail) {
      constexpr bool is_tail = decltype(tail)::value;
      const batch<T> pj = load<is_tail>(e + j, n, T(0)) * inv;
      if (p != nullptr) store<is_tail>(p + j, n, pj);
      if constexpr (Variant::clips) {
        store<is_tail>(y + j, n, clip01(xsimd::fma(scale, pj, shift)));
      } else {
        store<is_tail>(y + j, n, pj);
      }
    });
  }
  fill_row(y, length, cols, T(0));
  fill_row(p, length, cols, T(0));
}

// g = (zeta - gamma)·[0 <= v <= 1]·dy, the gradient reaching p through the (clipped) affine map.
template <class Variant, class T>
batch<T> upstream_gradient(const batch<T>& scale, const batch<T>& shift, const batch<T>& p, const batch<T>& dy) {
  if constexpr (Variant::clips) {
    const batch<T> v = xsimd::fma(scale, p, shift);
    return xsimd::select((v >= T(0)) && (v <= T(1)), scale * dy, batch<T>(T(0)));
  } else {
    return dy;
  }
}

// dx = p (g - sum_k p_k g_k), with p read from `p` times `p_factor` (1, or 1/sum when p holds exp(x - m)). The
// first pass prefetches the next rows of p and dy (as exp_and_sum does).
template <class Variant, class T>
void backward_row(const Variant& variant, index_t length, index_t cols, const T* p, T p_factor, const T* dy, T* dx) {
  const clip_affine a = variant.affine_for(length);
  const batch<T> scale(static_cast<T>(a.scale)), shift(static_cast<T>(a.shift)), factor(p_factor);
  batch<T> dot(T(0));
  for_each_batch<T>(length, [&](index_t j, index_t n, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const batch<T> pj = load<is_tail>(p + j, n, T(0)) * factor;
    prefetch(p + cols + j);
    prefetch(dy + cols + j);
    dot = xsimd::fma(pj, upstream_gradient<Variant>(scale, shift, pj, load<is_tail>(dy + j, n, T(0))), dot);
  });
  const batch<T> total(xsimd::hadd(dot));
  for_each_batch<T>(length, [&](index_t j, index_t n, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const batch<T> pj = load<is_tail>(p + j, n, T(0)) * factor;
    const batch<T> g = upstream_gradient<Variant>(scale, shift, pj, load<is_tail>(dy + j, n, T(0)));
    store<is_tail>(dx + j, n, pj * (g - total));
  });
  fill_row(dx, length, cols, T(0));
}

template <class Variant, class T>
void backward_from_probabilities_row(const Variant& variant, index_t length, index_t cols, const T* p, const T* dy,
                                     T* dx) {
  backward_row(variant, length, cols, p, T(1), dy, dx);
}

// Recomputes p from the scores into dx (so each exp is evaluated once), then runs the backward in place.
template <class Variant, class T>
void backward_from_scores_row(const Variant& variant, index_t length, index_t cols, const T* x, const T* dy, T* dx) {
  const T m = row_shift<Variant>(x, length);
  if (!(m > -std::numeric_limits<T>::infinity())) {
    fill_row(dx, 0, length, std::isnan(m) ? m : T(0));
    fill_row(dx, length, cols, T(0));
    return;
  }
  const T sum = exp_and_sum<Variant>(x, length, m, dx, x + cols);
  backward_row(variant, length, cols, dx, T(1) / sum, dy, dx);
}

}  // namespace qsafe::detail::simd

#include "qsafe/execution.hpp"

namespace qsafe::detail {

// The xsimd backend's entry points, chosen by overload on the policy.
template <class Variant, class T>
void softmax_forward_row(simd_t, const Variant& v, index_t length, index_t cols, const T* x, T* y, T* p) {
  simd::forward_row(v, length, cols, x, y, p);
}
template <class Variant, class T>
void softmax_backward_row(simd_t, const Variant& v, index_t length, index_t cols, const T* p, const T* dy, T* dx) {
  simd::backward_from_probabilities_row(v, length, cols, p, dy, dx);
}
template <class Variant, class T>
void softmax_backward_from_scores_row(simd_t, const Variant& v, index_t length, index_t cols, const T* x, const T* dy,
                                      T* dx) {
  simd::backward_from_scores_row(v, length, cols, x, dy, dx);
}

}  // namespace qsafe::detail
