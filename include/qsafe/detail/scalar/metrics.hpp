#pragma once
// Quantization error metrics, reference kernels: the sums Σx², Σy², Σxy and Σ(x − y)² of a row, in double (the
// difference taken in double, so Σ(x − y)² never cancels), and the same sums per column, added into running
// double arrays (one entry per column). Each term is added with an explicit fma, so the result does not depend on
// whether the compiler contracts a multiply-add where the kernel is inlined (it would differ between call sites).

#include <cmath>

#include "qsafe/matrix_view.hpp"

namespace qsafe::detail {

// Per-column running sums, one entry per column.
struct error_column_sums {
  double *x2, *y2, *xy, *e2;
};

// A row's sums (the fields of quant_error but the count).
struct error_sums {
  double x2 = 0.0, y2 = 0.0, xy = 0.0, e2 = 0.0;
};

}  // namespace qsafe::detail

namespace qsafe::detail::scalar {

template <class T>
error_sums error_row(index_t n, const T* x, const T* y) {
  error_sums s;
  for (index_t j = 0; j < n; ++j) {
    const double a = static_cast<double>(x[j]), b = static_cast<double>(y[j]), d = a - b;
    s.x2 = std::fma(a, a, s.x2);
    s.y2 = std::fma(b, b, s.y2);
    s.xy = std::fma(a, b, s.xy);
    s.e2 = std::fma(d, d, s.e2);
  }
  return s;
}

// Element-wise into the column arrays: the compiler vectorizes this loop without reassociating anything, so it
// serves both backends (identical results).
template <class T>
void error_columns(index_t n, const T* x, const T* y, const error_column_sums& s) {
  for (index_t j = 0; j < n; ++j) {
    const double a = static_cast<double>(x[j]), b = static_cast<double>(y[j]), d = a - b;
    s.x2[j] = std::fma(a, a, s.x2[j]);
    s.y2[j] = std::fma(b, b, s.y2[j]);
    s.xy[j] = std::fma(a, b, s.xy[j]);
    s.e2[j] = std::fma(d, d, s.e2[j]);
  }
}

}  // namespace qsafe::detail::scalar

#include "qsafe/execution.hpp"

namespace qsafe::detail {

template <class T>
error_sums error_row(cpu_t, index_t n, const T* x, const T* y) {
  return scalar::error_row(n, x, y);
}

}  // namespace qsafe::detail
