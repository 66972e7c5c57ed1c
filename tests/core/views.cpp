// matrix_view and its adapters: Eigen row-major objects (Matrix, Map, Ref, row blocks, const), spans.

#include <catch2/catch.hpp>
#include <vector>

#include "qsafe/eigen.hpp"
#include "qsafe/matrix_view.hpp"

using Catch::Matchers::Contains;
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

TEST_CASE("views of Eigen row-major objects share their memory, shape and stride", "[core][views]") {
  RowMatrix m = RowMatrix::Random(5, 7);
  const auto whole = qsafe::view(m);
  CHECK(whole.data == m.data());
  CHECK(whole.rows == 5);
  CHECK(whole.cols == 7);
  CHECK(whole.row_stride == 7);
  CHECK(whole(3, 4) == m(3, 4));

  // A block keeps the parent's row stride.
  const auto block = qsafe::view(m.block(1, 2, 3, 4));
  CHECK(block.data == &m(1, 2));
  CHECK(block.rows == 3);
  CHECK(block.cols == 4);
  CHECK(block.row_stride == 7);
  CHECK(block(2, 3) == m(3, 5));

  // Map and Ref with an outer stride, and const objects giving const views.
  std::vector<double> storage(4 * 10, 1.0);
  Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0, Eigen::OuterStride<>> map(
      storage.data(), 4, 6, Eigen::OuterStride<>(10));
  const auto mv = qsafe::view(map);
  CHECK(mv.row_stride == 10);
  CHECK(mv.cols == 6);
  Eigen::Ref<RowMatrix> ref(m);
  CHECK(qsafe::view(ref).data == m.data());
  const RowMatrix& cm = m;
  const qsafe::matrix_view<const float> cv = qsafe::view(cm);
  CHECK(cv.data == m.data());
  static_assert(std::is_same_v<decltype(qsafe::view(cm)), qsafe::matrix_view<const float>>);

  // A single row of a column-major matrix is fine (unit inner stride is checked at run time otherwise).
  Eigen::RowVectorXf row = Eigen::RowVectorXf::Random(9);
  CHECK(qsafe::view(row).cols == 9);
}

TEST_CASE("views of spans need cols to divide the size", "[core][views]") {
  std::vector<float> v(12);
  const auto m = qsafe::view(std::span<float>(v), 4);
  CHECK(m.rows == 3);
  CHECK(m.cols == 4);
  CHECK(qsafe::view(std::span<float>(v)).rows == 1);
  CHECK_THROWS_WITH(qsafe::view(std::span<float>(v), 5), Contains("'cols'"));
  CHECK_THROWS_WITH(qsafe::view(std::span<float>(v), 0), Contains("'cols'"));
  const qsafe::matrix_view<const float> c = m;  // mutable converts to const
  CHECK(c.data == v.data());
}
