// The numeric edge cases of REFERENCE §1, each with its documented result.

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "qsafe/softmax.hpp"
#include "support/backends.hpp"
#include "support/softmax_reference.hpp"

using namespace qsafe;
using namespace qsafe::test;

namespace {

template <class Config, class Variant, class Mode>
struct row_result {
  std::vector<typename Config::element> y, p, dx_from_p, dx_from_scores;
};

// Runs forward (with p), both backwards on one row; dy is all ones plus the index_t so gradients are not trivial.
template <class Config, class Variant, class Mode = full_rows>
auto run_row(const Variant& variant, std::vector<typename Config::element> x, const Mode& mode = {}) {
  using T = typename Config::element;
  const index_t cols = static_cast<index_t>(x.size());
  row_result<Config, Variant, Mode> out{std::vector<T>(x.size(), T(7)), std::vector<T>(x.size(), T(7)),
                                        std::vector<T>(x.size(), T(7)), std::vector<T>(x.size(), T(7))};
  std::vector<T> dy(x.size());
  for (std::size_t i = 0; i < dy.size(); ++i) dy[i] = T(1) + static_cast<T>(i);
  const matrix_view<const T> xv(x.data(), 1, cols), dyv(dy.data(), 1, cols);
  softmax_forward(Config::policy, variant, mode, xv, matrix_view<T>(out.y.data(), 1, cols),
                  matrix_view<T>(out.p.data(), 1, cols));
  softmax_backward(Config::policy, variant, mode, matrix_view<const T>(out.p.data(), 1, cols), dyv,
                   matrix_view<T>(out.dx_from_p.data(), 1, cols));
  softmax_backward_from_scores(Config::policy, variant, mode, xv, dyv,
                               matrix_view<T>(out.dx_from_scores.data(), 1, cols));
  return out;
}

template <class T>
bool all_equal(const std::vector<T>& v, T value) {
  return std::all_of(v.begin(), v.end(), [&](T e) { return e == value; });
}

}  // namespace

TEMPLATE_TEST_CASE("a fully masked row (L = 0) is all zeros with zero gradient, never NaN", "[softmax][edge]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  const std::vector<std::int32_t> zero{0};
  for_each_variant([&](const auto& variant) {
    const auto r = run_row<TestType>(variant, std::vector<T>{1, 2, 3, 4, 5}, padded_rows{zero});
    CHECK(all_equal(r.y, T(0)));
    CHECK(all_equal(r.p, T(0)));
    CHECK(all_equal(r.dx_from_p, T(0)));
    CHECK(all_equal(r.dx_from_scores, T(0)));
  });
}

TEMPLATE_TEST_CASE("a row of all -inf is a fully masked row", "[softmax][edge]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  const T ninf = -std::numeric_limits<T>::infinity();
  for_each_variant([&](const auto& variant) {
    const auto r = run_row<TestType>(variant, std::vector<T>(19, ninf));
    CHECK(all_equal(r.y, T(0)));
    CHECK(all_equal(r.dx_from_p, T(0)));
    CHECK(all_equal(r.dx_from_scores, T(0)));
  });
}

TEMPLATE_TEST_CASE("L = 1 gives y = clip(zeta, 0, 1) whatever gamma is, and zero gradient", "[softmax][edge]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  const std::vector<std::int32_t> one{1};
  // zeta == beta is the case where the NCS authors' BERT code divides 0 by 0.
  for (const auto& ncs : {normalized_clipped_softmax{1.0, 1.0}, normalized_clipped_softmax{1.5, -2.175},
                          normalized_clipped_softmax{1.0, 0.9}}) {
    const auto r = run_row<TestType>(ncs, std::vector<T>{3, 1, 2}, padded_rows{one});
    CHECK(r.y[0] == T(1));  // clip(zeta >= 1, 0, 1)
    CHECK(r.p[0] == T(1));
    CHECK(r.y[1] == 0);
    CHECK(r.dx_from_p[0] == 0);
    CHECK(r.dx_from_scores[0] == 0);
  }
  const auto v = run_row<TestType>(vanilla_softmax{}, std::vector<T>{-1e20f});
  CHECK(v.y[0] == T(1));
  const auto o = run_row<TestType>(off_by_one_softmax{}, std::vector<T>{0});
  CHECK(o.y[0] == T(0.5));  // e^0 / (1 + e^0)
}

TEMPLATE_TEST_CASE("-inf keys in a valid row behave as masked keys", "[softmax][edge]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  const T ninf = -std::numeric_limits<T>::infinity();
  for_each_variant([&](const auto& variant) {
    const auto r = run_row<TestType>(variant, std::vector<T>{0.5, ninf, 1.5, ninf, -0.25});
    CHECK(r.y[1] == 0);
    CHECK(r.y[3] == 0);
    CHECK(r.dx_from_p[1] == 0);
    CHECK(r.dx_from_scores[3] == 0);
    CHECK(r.p[0] > 0);
  });
}

TEMPLATE_TEST_CASE("a NaN in a valid row makes that row NaN; masked NaN is ignored", "[softmax][edge]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  const T nan = std::numeric_limits<T>::quiet_NaN(), ninf = -std::numeric_limits<T>::infinity();
  for_each_variant([&](const auto& variant) {
    for (const auto& row : {std::vector<T>{1, nan, 2, 3}, std::vector<T>{ninf, nan, ninf, ninf},
                            std::vector<T>{nan, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}}) {
      const auto r = run_row<TestType>(variant, row);
      for (std::size_t j = 0; j < row.size(); ++j) {
        CHECK(std::isnan(r.y[j]));
        CHECK(std::isnan(r.dx_from_scores[j]));
        CHECK(std::isnan(r.dx_from_p[j]));
      }
    }
    const std::vector<std::int32_t> two{2};
    const auto masked = run_row<TestType>(variant, std::vector<T>{1, 2, nan}, padded_rows{two});
    CHECK(!std::isnan(masked.y[0]));
    CHECK(masked.y[2] == 0);
  });
}

TEMPLATE_TEST_CASE("huge finite scores (+-1e30) do not overflow", "[softmax][edge]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  const auto r = run_row<TestType>(vanilla_softmax{}, std::vector<T>{T(1e30), T(-1e30), T(1e30), T(0)});
  CHECK(r.y[0] == T(0.5));
  CHECK(r.y[1] == 0);
  CHECK(r.y[2] == T(0.5));
  CHECK(r.y[3] == 0);
  for (const T v : r.dx_from_scores) CHECK(std::isfinite(v));
  const auto o = run_row<TestType>(off_by_one_softmax{}, std::vector<T>{T(-1e30), T(-1e30)});
  CHECK(o.y[0] == 0);  // exp(-1e30) / (1 + ...) underflows to 0, no NaN
  const auto c = run_row<TestType>(clipped_softmax{1.0, -0.1}, std::vector<T>{T(1e30), T(-1e30)});
  CHECK(c.y[0] == 1);
  CHECK(c.y[1] == 0);
}
