#pragma once
// Precondition checks shared by the public entry points: each throws std::invalid_argument naming the function
// and the argument, before anything is written.

#include <cmath>
#include <stdexcept>
#include <string>
#include <string_view>

#include "qsafe/matrix_view.hpp"

namespace qsafe::detail {

[[noreturn]] inline void fail(std::string_view function, std::string_view argument, const std::string& what) {
  throw std::invalid_argument("qsafe::" + std::string(function) + ": argument '" + std::string(argument) + "' " + what);
}

template <class T>
void check_view(std::string_view function, std::string_view argument, const matrix_view<T>& m) {
  if (m.rows < 0 || m.cols < 0) {
    fail(function, argument, "has a negative shape (" + std::to_string(m.rows) + " x " + std::to_string(m.cols) + ")");
  }
  if (m.rows > 1 && m.row_stride < m.cols) {
    fail(function, argument, "has row_stride " + std::to_string(m.row_stride) + " < cols " + std::to_string(m.cols));
  }
  if (m.data == nullptr && m.rows > 0 && m.cols > 0) fail(function, argument, "is a null pointer with a non-zero size");
}

template <class T, class U>
void check_same_shape(std::string_view function, std::string_view argument, const matrix_view<T>& m,
                      std::string_view reference_name, const matrix_view<U>& reference) {
  check_view(function, argument, m);
  if (m.rows != reference.rows || m.cols != reference.cols) {
    fail(function, argument,
         "has shape " + std::to_string(m.rows) + " x " + std::to_string(m.cols) + " but '" +
             std::string(reference_name) + "' has " + std::to_string(reference.rows) + " x " +
             std::to_string(reference.cols));
  }
}

// How many values of `x` are NaN or ±inf (for error messages: called only once a check has failed).
template <class T>
index_t count_non_finite(const matrix_view<const T>& x) {
  index_t bad = 0;
  for (index_t r = 0; r < x.rows; ++r)
    for (index_t c = 0; c < x.cols; ++c) bad += std::isfinite(x(r, c)) ? 0 : 1;
  return bad;
}

}  // namespace qsafe::detail
