#pragma once
// The softmax family's reference kernels: one row at a time, accumulation in double, written to be read next to
// REFERENCE §1. Kernels trust their inputs; the public functions in qsafe/softmax.hpp check them.

#include <algorithm>
#include <cmath>
#include <limits>

#include "qsafe/softmax_variant.hpp"

namespace qsafe::detail::scalar {

// clip(v, 0, 1) that lets NaN through (a NaN row must stay NaN).
inline double clip01(double v) {
  return v < 0.0 ? 0.0 : (v > 1.0 ? 1.0 : v);
}

// The shift of a row: its max over the valid keys (max(m, 0) off-by-one); -inf when the row is fully masked
// (L = 0 or every key -inf); NaN when a valid key is NaN.
template <class Variant, class T>
double row_shift(const T* x, index_t length) {
  double m = -std::numeric_limits<double>::infinity();
  for (index_t j = 0; j < length; ++j) {
    if (std::isnan(x[j])) return std::numeric_limits<double>::quiet_NaN();
    m = std::max(m, static_cast<double>(x[j]));
  }
  if (Variant::off_by_one && m > -std::numeric_limits<double>::infinity()) m = std::max(m, 0.0);
  return m;
}

template <class Variant, class T>
double softmax_denominator(const T* x, index_t length, double m) {
  double sum = Variant::off_by_one ? std::exp(-m) : 0.0;
  for (index_t j = 0; j < length; ++j) sum += std::exp(static_cast<double>(x[j]) - m);
  return sum;
}

// Output for a row that has no finite shift: zeros (fully masked) or NaN (a NaN row).
inline bool degenerate(double m) {
  return !(m > -std::numeric_limits<double>::infinity());
}

template <class Variant, class T>
void forward_row(const Variant& variant, index_t length, index_t cols, const T* x, T* y, T* p) {
  const double m = row_shift<Variant>(x, length);
  if (degenerate(m)) {
    const T value = static_cast<T>(std::isnan(m) ? m : 0.0);
    for (index_t j = 0; j < cols; ++j) {
      y[j] = j < length ? value : T(0);
      if (p != nullptr) p[j] = y[j];
    }
    return;
  }
  const double sum = softmax_denominator<Variant>(x, length, m);
  const clip_affine a = variant.affine_for(length);
  for (index_t j = 0; j < length; ++j) {
    const double pj = std::exp(static_cast<double>(x[j]) - m) / sum;
    if (p != nullptr) p[j] = static_cast<T>(pj);
    y[j] = static_cast<T>(Variant::clips ? clip01(a.scale * pj + a.shift) : pj);
  }
  for (index_t j = length; j < cols; ++j) {
    y[j] = T(0);
    if (p != nullptr) p[j] = T(0);
  }
}

// g_j = (zeta - gamma)·[0 <= v_j <= 1]·dy_j, the gradient reaching p_j through the (clipped) affine map.
template <class Variant>
double upstream_gradient(const clip_affine& a, double p, double dy) {
  if constexpr (Variant::clips) {
    const double v = a.scale * p + a.shift;
    return (v >= 0.0 && v <= 1.0) ? a.scale * dy : 0.0;
  } else {
    return dy;
  }
}

// dx_j = p_j (g_j - sum_k p_k g_k); `p` may be computed on the fly by `prob(j)`.
template <class Variant, class T, class Prob>
void backward_row(const Variant& variant, index_t length, index_t cols, Prob prob, const T* dy, T* dx) {
  const clip_affine a = variant.affine_for(length);
  double dot = 0.0;
  for (index_t j = 0; j < length; ++j) {
    const double pj = prob(j);
    dot += pj * upstream_gradient<Variant>(a, pj, static_cast<double>(dy[j]));
  }
  for (index_t j = 0; j < length; ++j) {
    const double pj = prob(j);
    dx[j] = static_cast<T>(pj * (upstream_gradient<Variant>(a, pj, static_cast<double>(dy[j])) - dot));
  }
  for (index_t j = length; j < cols; ++j) dx[j] = T(0);
}

template <class Variant, class T>
void backward_from_probabilities_row(const Variant& variant, index_t length, index_t cols, const T* p, const T* dy,
                                     T* dx) {
  backward_row(
      variant, length, cols, [p](index_t j) { return static_cast<double>(p[j]); }, dy, dx);
}

template <class Variant, class T>
void backward_from_scores_row(const Variant& variant, index_t length, index_t cols, const T* x, const T* dy, T* dx) {
  const double m = row_shift<Variant>(x, length);
  if (degenerate(m)) {
    for (index_t j = 0; j < cols; ++j) dx[j] = static_cast<T>(j < length && std::isnan(m) ? m : 0.0);
    return;
  }
  const double sum = softmax_denominator<Variant>(x, length, m);
  backward_row(
      variant, length, cols, [&](index_t j) { return std::exp(static_cast<double>(x[j]) - m) / sum; }, dy, dx);
}

}  // namespace qsafe::detail::scalar

#include "qsafe/execution.hpp"

namespace qsafe::detail {

// The reference backend's entry points, chosen by overload on the policy.
template <class Variant, class T>
void softmax_forward_row(cpu_t, const Variant& v, index_t length, index_t cols, const T* x, T* y, T* p) {
  scalar::forward_row(v, length, cols, x, y, p);
}
template <class Variant, class T>
void softmax_backward_row(cpu_t, const Variant& v, index_t length, index_t cols, const T* p, const T* dy, T* dx) {
  scalar::backward_from_probabilities_row(v, length, cols, p, dy, dx);
}
template <class Variant, class T>
void softmax_backward_from_scores_row(cpu_t, const Variant& v, index_t length, index_t cols, const T* x, const T* dy,
                                      T* dx) {
  scalar::backward_from_scores_row(v, length, cols, x, dy, dx);
}

}  // namespace qsafe::detail
