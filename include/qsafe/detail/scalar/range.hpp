#pragma once
// Ranges and quantization losses for the estimators, reference kernels: the min and max of a row, of each
// column (folded into running arrays), and the squared fake-quantization error of a row, accumulated in double.

#include <cmath>
#include <limits>

#include "qsafe/detail/scalar/quant.hpp"
#include "qsafe/matrix_view.hpp"

namespace qsafe::detail {

template <class T>
struct row_range_result {
  T lo, hi;
  bool finite;  // no NaN or ±inf among the values
};

}  // namespace qsafe::detail

namespace qsafe::detail::scalar {

template <class T>
row_range_result<T> row_range(const T* x, index_t n) {
  T lo = std::numeric_limits<T>::infinity(), hi = -lo;
  bool finite = true;
  for (index_t j = 0; j < n; ++j) {
    finite = finite && std::isfinite(x[j]);
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  return {lo, hi, finite};
}

// lo[j] = min(lo[j], x[j]), hi[j] = max(hi[j], x[j]); returns whether every x[j] is finite.
template <class T>
bool column_range(const T* x, index_t n, T* lo, T* hi) {
  bool finite = true;
  for (index_t j = 0; j < n; ++j) {
    finite = finite && std::isfinite(x[j]);
    lo[j] = std::min(lo[j], x[j]);
    hi[j] = std::max(hi[j], x[j]);
  }
  return finite;
}

// sum_j (x_j − fake_quantize(x_j))^2 in double.
template <class T>
double squared_error(const uniform_params<T>& params, index_t n, const T* x) {
  double sum = 0.0;
  for (index_t j = 0; j < n; ++j) {
    const lane_params<T> p = params.p;
    const T y = (clamp_code(p, unclamped_code(p, x[j])) - p.zero_point) * p.scale;
    const double e = static_cast<double>(x[j]) - static_cast<double>(y);
    sum += e * e;
  }
  return sum;
}

}  // namespace qsafe::detail::scalar

#include "qsafe/execution.hpp"

namespace qsafe::detail {

template <class T>
row_range_result<T> row_range(cpu_t, const T* x, index_t n) {
  return scalar::row_range(x, n);
}
template <class T>
bool column_range(cpu_t, const T* x, index_t n, T* lo, T* hi) {
  return scalar::column_range(x, n, lo, hi);
}
template <class T>
double squared_error(cpu_t, const uniform_params<T>& params, index_t n, const T* x) {
  return scalar::squared_error(params, n, x);
}

}  // namespace qsafe::detail
