// Properties the papers' definitions imply, checked on fresh random inputs.

#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>

#include "qsafe/softmax.hpp"
#include "support/backends.hpp"
#include "support/softmax_reference.hpp"

using namespace qsafe;
using namespace qsafe::test;

namespace {

// Sum over a row of the unclipped v = (zeta - gamma)·p + gamma, from the saved p.
template <class T, class Variant>
real unclipped_row_sum(const Variant& variant, const T* p, index_t length) {
  const clip_affine a = variant.affine_for(length);
  real sum = 0;
  for (index_t j = 0; j < length; ++j) sum += a.scale * static_cast<real>(p[j]) + a.shift;
  return sum;
}

}  // namespace

TEMPLATE_TEST_CASE("NCS row sum before clipping equals beta for every length >= 2; CS's is zeta + (L-1) gamma",
                   "[softmax][properties]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  const index_t cols = 300;
  std::vector<std::int32_t> lengths(static_cast<std::size_t>(cols - 1));
  std::iota(lengths.begin(), lengths.end(), 2);  // every L from 2 to cols
  const index_t rows = static_cast<index_t>(lengths.size());
  std::vector<T> x(static_cast<std::size_t>(rows * cols)), y(x.size()), p(x.size());
  for (auto& v : x) v = static_cast<T>(random.normal(0.0, 3.0));
  const matrix_view<const T> xv(x.data(), rows, cols);
  const matrix_view<T> yv(y.data(), rows, cols), pv(p.data(), rows, cols);

  const normalized_clipped_softmax ncs{1.0 + random.uniform(0, 0.1), random.uniform(-3, 1)};
  const clipped_softmax cs{1.0 + random.uniform(0, 0.1), -random.uniform(0, 0.1)};
  INFO("ncs zeta " << ncs.zeta << " beta " << ncs.beta << "; cs zeta " << cs.zeta << " gamma " << cs.gamma);
  // sum_j v_j = (zeta - gamma)·sum_j p_j + L·gamma: the p sum is 1 within (L/8 + 8) eps, times |zeta - gamma|,
  // plus L roundings of terms of size <= |gamma| + p_j.
  const auto tolerance = [](real scale, real shift, index_t length) {
    const real eps = std::numeric_limits<T>::epsilon();
    return eps *
           ((8 + static_cast<real>(length) / 8) * std::fabs(scale) + static_cast<real>(length) * std::fabs(shift) + 1);
  };
  softmax_forward(TestType::policy, ncs, padded_rows{lengths}, xv, yv, pv);
  for (index_t r = 0; r < rows; ++r) {
    const index_t length = lengths[static_cast<std::size_t>(r)];
    const clip_affine a = ncs.affine_for(length);
    INFO("L = " << length);
    REQUIRE(std::fabs(unclipped_row_sum(ncs, pv.row(r), length) - ncs.beta) <= tolerance(a.scale, a.shift, length));
  }
  softmax_forward(TestType::policy, cs, padded_rows{lengths}, xv, yv, pv);
  for (index_t r = 0; r < rows; ++r) {
    const index_t length = lengths[static_cast<std::size_t>(r)];
    const real want = cs.zeta + static_cast<real>(length - 1) * cs.gamma;
    INFO("L = " << length);
    REQUIRE(std::fabs(unclipped_row_sum(cs, pv.row(r), length) - want) <=
            tolerance(cs.zeta - cs.gamma, cs.gamma, length));
  }
}

TEMPLATE_TEST_CASE("causal NCS equals per-row NCS with L = q + 1 + offset, bit for bit", "[softmax][properties]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  const index_t queries = random.integer(1, 40), blocks = random.integer(1, 4), cols = random.integer(1, 80);
  const index_t offset = random.integer(0, 10), rows = queries * blocks;
  INFO("queries " << queries << " blocks " << blocks << " cols " << cols << " offset " << offset);
  std::vector<std::int32_t> per_row;
  for (index_t r = 0; r < rows; ++r)
    per_row.push_back(static_cast<std::int32_t>(std::min(r % queries + 1 + offset, cols)));
  std::vector<T> x(static_cast<std::size_t>(rows * cols)), causal(x.size()), padded(x.size());
  for (auto& v : x) v = static_cast<T>(random.normal(0.0, 3.0));
  const normalized_clipped_softmax ncs{1.0, 0.9};
  const matrix_view<const T> xv(x.data(), rows, cols);
  softmax_forward(TestType::policy, ncs, causal_rows{queries, offset}, xv, matrix_view<T>(causal.data(), rows, cols));
  softmax_forward(TestType::policy, ncs, padded_rows{per_row}, xv, matrix_view<T>(padded.data(), rows, cols));
  CHECK(causal == padded);
  for (index_t r = 0; r < rows; ++r)
    CHECK(causal_rows{queries, offset}.row_length(r, cols) == per_row[static_cast<std::size_t>(r)]);
}

TEST_CASE("row-length modes give the documented lengths", "[softmax][properties]") {
  const std::vector<std::int32_t> lengths{3, 0, 5};
  // padding: one length per batch item of 2 rows
  const padded_rows padded{lengths, 2};
  CHECK(padded.row_length(0, 5) == 3);
  CHECK(padded.row_length(1, 5) == 3);
  CHECK(padded.row_length(2, 5) == 0);
  CHECK(padded.row_length(5, 5) == 5);
  // causal: two stacked blocks of 3 queries after 2 cached keys
  const causal_rows causal{3, 2};
  CHECK(causal.row_length(0, 10) == 3);
  CHECK(causal.row_length(2, 10) == 5);
  CHECK(causal.row_length(3, 10) == 3);
  CHECK(causal.row_length(2, 4) == 4);  // capped at cols
  CHECK(causal_rows{}.row_length(7, 100) == 8);
  // both: the minimum
  const causal_padded_rows both{3, 0, lengths, 2};
  CHECK(both.row_length(1, 10) == 2);
  CHECK(both.row_length(2, 10) == 0);
  CHECK(both.row_length(4, 10) == 2);
}

TEMPLATE_TEST_CASE("masked keys are exactly zero in y, p and dx", "[softmax][properties]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  const index_t rows = 6, cols = 37;
  std::vector<std::int32_t> lengths{0, 1, 2, 20, 36, 37};
  std::vector<T> x(rows * cols), y(x.size(), T(7)), p(x.size(), T(7)), dx(x.size(), T(7)), dy(x.size());
  for (auto& v : x) v = static_cast<T>(random.normal(0.0, 30.0));  // large scores: saturated probabilities too
  for (auto& v : dy) v = static_cast<T>(random.normal());
  for_each_variant([&](const auto& variant) {
    softmax_forward(TestType::policy, variant, padded_rows{lengths}, matrix_view<const T>(x.data(), rows, cols),
                    matrix_view<T>(y.data(), rows, cols), matrix_view<T>(p.data(), rows, cols));
    softmax_backward(TestType::policy, variant, padded_rows{lengths}, matrix_view<const T>(p.data(), rows, cols),
                     matrix_view<const T>(dy.data(), rows, cols), matrix_view<T>(dx.data(), rows, cols));
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = lengths[static_cast<std::size_t>(r)]; c < cols; ++c) {
        const auto i = static_cast<std::size_t>(r * cols + c);
        REQUIRE(y[i] == 0);
        REQUIRE(p[i] == 0);
        REQUIRE(dx[i] == 0);
        REQUIRE(!std::signbit(dx[i]));
      }
  });
}

TEMPLATE_TEST_CASE("simd and cpu backends agree, and threads do not change a bit", "[softmax][properties]", float,
                   double) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  const index_t rows = random.integer(1, 64), cols = random.integer(1, 2000);
  INFO("rows " << rows << " cols " << cols);
  std::vector<T> x(static_cast<std::size_t>(rows * cols)), dy(x.size()), y_cpu(x.size()), y_simd(x.size()),
      y_par(x.size()), dx_simd(x.size()), dx_par(x.size());
  for (auto& v : x) v = static_cast<T>(random.normal(0.0, 3.0));
  for (auto& v : dy) v = static_cast<T>(random.normal());
  const auto xv = matrix_view<const T>(x.data(), rows, cols);
  const normalized_clipped_softmax ncs{1.0, 0.9};
  softmax_forward(cpu, ncs, causal_rows{}, xv, matrix_view<T>(y_cpu.data(), rows, cols));
  softmax_forward(simd, ncs, causal_rows{}, xv, matrix_view<T>(y_simd.data(), rows, cols));
  softmax_forward(simd_parallel, ncs, causal_rows{}, xv, matrix_view<T>(y_par.data(), rows, cols));
  CHECK(y_simd == y_par);
  softmax_backward_from_scores(simd, ncs, causal_rows{}, xv, matrix_view<const T>(dy.data(), rows, cols),
                               matrix_view<T>(dx_simd.data(), rows, cols));
  softmax_backward_from_scores(simd_t{3}, ncs, causal_rows{}, xv, matrix_view<const T>(dy.data(), rows, cols),
                               matrix_view<T>(dx_par.data(), rows, cols));
  CHECK(dx_simd == dx_par);
  // Both are within the forward bound of the exact value, so within twice it of each other; |x - m| <= 40 here.
  const T eps = std::numeric_limits<T>::epsilon();
  for (std::size_t i = 0; i < x.size(); ++i) {
    REQUIRE(std::fabs(y_cpu[i] - y_simd[i]) <= 2 * eps * (50 + static_cast<T>(cols) / 8) * (y_cpu[i] + T(0.2)));
  }
}
