#pragma once
/// \file
/// Views of Eigen row-major dense objects with direct access (`Matrix`, `Map`, `Ref`, row blocks) as
/// `qsafe::matrix_view`, without copies. Column-major objects are rejected at compile time unless they are a
/// single row, since the softmax family works along rows.

#include <Eigen/Core>
#include <stdexcept>

#include "qsafe/matrix_view.hpp"

namespace qsafe {

namespace detail {
template <class Derived>
concept eigen_direct = requires(Derived& d) {
  {d.data()};
  {d.outerStride()};
  {d.innerStride()};
};
}  // namespace detail

/// View an Eigen row-major object (`Eigen::Matrix<T, -1, -1, Eigen::RowMajor>`, a `Map` or `Ref` of one, a row
/// block, ...); temporaries such as `Eigen::Map<...>(ptr, r, c)` are accepted too. A const object gives a view of
/// const elements.
template <class Derived, class D = std::remove_cvref_t<Derived>>
requires detail::eigen_direct<D> &&(bool(D::IsRowMajor) || D::RowsAtCompileTime == 1) auto view(Derived&& m) {
  using T = std::remove_pointer_t<decltype(m.data())>;
  if (m.innerStride() != 1) {
    throw std::invalid_argument("qsafe::view: argument 'm' must have unit inner stride");
  }
  const index_t stride = m.rows() <= 1 ? static_cast<index_t>(m.cols()) : static_cast<index_t>(m.outerStride());
  return matrix_view<T>(m.data(), static_cast<index_t>(m.rows()), static_cast<index_t>(m.cols()), stride);
}

}  // namespace qsafe
