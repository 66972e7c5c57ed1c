#pragma once
/// \file
/// `matrix_view<T>`: a non-owning view of a row-major matrix (pointer, rows, cols, row stride in elements).
/// Adapters from contiguous spans are here; adapters from Eigen are in `qsafe/eigen.hpp`.

#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace qsafe {

using index_t = std::ptrdiff_t;

template <class T>
struct matrix_view {
  T* data = nullptr;
  index_t rows = 0;
  index_t cols = 0;
  index_t row_stride = 0;  ///< elements between the starts of consecutive rows; >= cols

  constexpr matrix_view() = default;
  constexpr matrix_view(T* data_, index_t rows_, index_t cols_, index_t row_stride_)
      : data(data_), rows(rows_), cols(cols_), row_stride(row_stride_) {}
  constexpr matrix_view(T* data_, index_t rows_, index_t cols_) : matrix_view(data_, rows_, cols_, cols_) {}

  /// A view of mutable elements converts to a view of const elements.
  template <class U>
  requires(std::is_const_v<T>&& std::is_same_v<std::remove_const_t<T>, U>) constexpr matrix_view(
      const matrix_view<U>& other)  // NOLINT(google-explicit-constructor)
      : matrix_view(other.data, other.rows, other.cols, other.row_stride) {}

  constexpr T* row(index_t r) const { return data + r * row_stride; }
  constexpr T& operator()(index_t r, index_t c) const { return data[r * row_stride + c]; }
  constexpr index_t size() const { return rows * cols; }
  constexpr bool empty() const { return rows == 0 || cols == 0; }
};

/// View a contiguous span as a `rows x cols` matrix with `cols` given; the span's size must be a multiple of
/// `cols` (throws `std::invalid_argument` naming `cols` otherwise).
template <class T>
matrix_view<T> view(std::span<T> elements, index_t cols) {
  if (cols <= 0 || static_cast<index_t>(elements.size()) % cols != 0) {
    throw std::invalid_argument("qsafe::view: argument 'cols' (" + std::to_string(cols) +
                                ") must be positive and divide the span's size (" + std::to_string(elements.size()) +
                                ")");
  }
  return {elements.data(), static_cast<index_t>(elements.size()) / cols, cols};
}

/// View a contiguous span as one row.
template <class T>
matrix_view<T> view(std::span<T> elements) {
  return {elements.data(), elements.empty() ? 0 : 1, static_cast<index_t>(elements.size())};
}

}  // namespace qsafe
