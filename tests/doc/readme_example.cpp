// The README's usage example, compiled and run as a test. Keep the two in sync (the README quotes this file).
#include <Eigen/Core>
#include <catch2/catch.hpp>
#include <cstdint>
#include <vector>

#include "qsafe/qsafe.hpp"

TEST_CASE("README example", "[doc]") {
  // --8<-- [readme]
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const int heads = 4, queries = 128, keys = 128;
  Matrix scores = Matrix::Random(heads * queries, keys) * 8.0f;  // (heads x queries) x keys
  Matrix y(scores.rows(), scores.cols()), p(scores.rows(), scores.cols());

  // Normalized clipped softmax, OPT's setting (zeta = 1, beta = 0.9), causal rows: query q sees q + 1 keys,
  // and gamma = (beta - zeta) / q is derived per row.
  const qsafe::normalized_clipped_softmax ncs{.zeta = 1.0, .beta = 0.9};
  const qsafe::causal_rows causal{.queries = queries};
  qsafe::softmax_forward(qsafe::simd, ncs, causal, qsafe::view(std::as_const(scores)), qsafe::view(y),
                         qsafe::view(p));  // p: the unclipped softmax, saved for the exact backward

  Matrix dy = Matrix::Random(y.rows(), y.cols()), dx(y.rows(), y.cols());
  qsafe::softmax_backward(qsafe::simd, ncs, causal, qsafe::view(std::as_const(p)), qsafe::view(std::as_const(dy)),
                          qsafe::view(dx));

  // Padding instead: one valid length per batch item, here 2 items of 2 heads x 128 queries.
  const std::vector<std::int32_t> lengths{100, 128};
  qsafe::softmax_forward(qsafe::cpu, qsafe::clipped_softmax::from_alpha(3.2, 128),
                         qsafe::padded_rows{.lengths = lengths, .rows_per_length = 2 * queries},
                         qsafe::view(std::as_const(scores)), qsafe::view(y));
  // --8<-- [readme]
  CHECK(y.block(0, 100, 2 * queries, 28).isZero(0));
  CHECK(dx.row(0).segment(1, keys - 1).isZero(0));  // query 0 sees key 0 only
  CHECK(p.row(queries - 1).sum() == Approx(1.0f));
}
