#pragma once
// Quantization error metrics, reference kernels: the sums Σx², Σy², Σxy and Σ(x − y)² of a row, in double (the
// difference taken in double, so Σ(x − y)² never cancels), and the same sums per column, added into running
// double arrays (one entry per column).

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
    s.x2 += a * a;
    s.y2 += b * b;
    s.xy += a * b;
    s.e2 += d * d;
  }
  return s;
}

// Element-wise into the column arrays: the compiler vectorizes this loop without reassociating anything, so it
// serves both backends (identical results).
template <class T>
void error_columns(index_t n, const T* x, const T* y, const error_column_sums& s) {
  for (index_t j = 0; j < n; ++j) {
    const double a = static_cast<double>(x[j]), b = static_cast<double>(y[j]), d = a - b;
    s.x2[j] += a * a;
    s.y2[j] += b * b;
    s.xy[j] += a * b;
    s.e2[j] += d * d;
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
