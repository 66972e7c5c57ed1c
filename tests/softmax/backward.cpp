// Backward of every variant and length mode: against the long-double reference (from saved p and from scores),
// and against central finite differences of the forward in double, on rows where probabilities clip at 0 and 1.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>

#include "qsafe/softmax.hpp"
#include "support/backends.hpp"
#include "support/softmax_reference.hpp"

using namespace qsafe;
using namespace qsafe::test;

namespace {

// A key's clip mask is decided by v = a·p + b rounded in T; within a few eps of 0 or 1 the backend and the exact
// reference may legitimately decide differently, which changes the whole row's gradient. Such rows are skipped
// (they are rare: the tests require that most rows are checked). The row's gradient does not depend on the mask of
// a p_j of exactly 0, nor of a p_j of 1 in a one-hot row; a p_j rounded to 1 beside nonzero p_k is ambiguous when
// zeta = 1 (the other keys' dx hold p_k·(zeta - gamma)·h_j).
// `p_error` bounds the relative error of the backend's p (a few eps when p is given, more when recomputed).
template <class P>
bool mask_is_ambiguous(const reference_params& v, const P* p, index_t length, real eps, real p_error) {
  if (!v.clips) return false;
  const bool one_hot = std::count_if(p, p + length, [](P pj) { return pj != 0; }) == 1;
  for (index_t j = 0; j < length; ++j) {
    if (p[j] == 0 || (p[j] == 1 && one_hot)) continue;
    const real affine = (v.zeta - v.gamma) * static_cast<real>(p[j]) + v.gamma;
    const real slack =
        4 * (std::fabs(v.zeta - v.gamma) * static_cast<real>(p[j]) * (p_error + eps) + eps * std::fabs(v.gamma));
    if (std::fabs(affine) <= slack || std::fabs(affine - 1) <= slack) return true;
  }
  return false;
}

}  // namespace

TEMPLATE_TEST_CASE("backward from saved p matches the long-double reference", "[softmax][backward]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  const real eps = std::numeric_limits<T>::epsilon();
  QSAFE_TEST_RNG(random);
  index_t rows_checked = 0, rows_skipped = 0;
  for (const index_t cols : test_columns(random)) {
    for (const length_kind kind : all_length_kinds) {
      for_each_variant([&](const auto& variant) {
        const shape s = random_shape(random, cols);
        const length_data lengths = length_data::make(random, kind, s.rows, s.cols);
        INFO("cols " << cols << ", rows " << s.rows << ", stride " << s.stride << ", lengths " << name(kind));
        strided_matrix<T> x(s.rows, s.cols, s.stride, s.misalign), y(s.rows, s.cols, s.stride, 0),
            p(s.rows, s.cols, s.stride, s.misalign), dy(s.rows, s.cols, s.stride, 0),
            dx(s.rows, s.cols, s.stride, s.misalign);
        fill_scores(random, x, random.coin(0.3));
        for (index_t r = 0; r < s.rows; ++r)
          for (index_t c = 0; c < s.cols; ++c) dy(r, c) = static_cast<T>(random.normal());
        lengths.visit([&](const auto& mode) {
          softmax_forward(TestType::policy, variant, mode, x.cview(), y.view, p.view);
          softmax_backward(TestType::policy, variant, mode, p.cview(), dy.cview(), dx.view);
        });
        REQUIRE(dx.padding_untouched());
        lengths.visit([&](const auto& mode) {
          for (index_t r = 0; r < s.rows; ++r) {
            const index_t length = mode.row_length(r, s.cols);
            const reference_params params = params_for(variant, length);
            if (mask_is_ambiguous(params, p.view.row(r), length, eps, 4 * eps)) {
              ++rows_skipped;
              continue;
            }
            ++rows_checked;
            const std::vector<real> want = reference_backward(params, p.view.row(r), dy.view.row(r), length, s.cols);
            // |error| <= eps·(8 + L/8)·p_j·(|g_j| + sum_k p_k |g_k|): the sum's accumulated rounding and a few
            // roundings of the product, relative to the magnitudes that enter them.
            real magnitude = 0;
            const real a = params.clips ? params.zeta - params.gamma : 1;
            for (index_t k = 0; k < length; ++k) magnitude += std::fabs(p(r, k) * a * dy(r, k));
            for (index_t c = 0; c < s.cols; ++c) {
              const real tol = eps * (8 + static_cast<real>(length) / 8) * static_cast<real>(p(r, c)) *
                                   (std::fabs(a * dy(r, c)) + magnitude) +
                               16 * std::numeric_limits<T>::min();
              INFO("row " << r << " length " << length << " col " << c);
              if (c >= length) {
                REQUIRE(dx(r, c) == 0);
              } else {
                REQUIRE(std::fabs(dx(r, c) - want[c]) <= tol);
              }
            }
          }
        });
      });
    }
  }
  CHECK(rows_skipped * 20 < rows_checked);
}

TEMPLATE_TEST_CASE("backward from scores matches the long-double reference", "[softmax][backward]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  const real eps = std::numeric_limits<T>::epsilon();
  QSAFE_TEST_RNG(random);
  index_t rows_checked = 0, rows_skipped = 0;
  for (const index_t cols : test_columns(random)) {
    for (const length_kind kind : all_length_kinds) {
      for_each_variant([&](const auto& variant) {
        const shape s = random_shape(random, cols);
        const length_data lengths = length_data::make(random, kind, s.rows, s.cols);
        INFO("cols " << cols << ", rows " << s.rows << ", stride " << s.stride << ", lengths " << name(kind));
        strided_matrix<T> x(s.rows, s.cols, s.stride, s.misalign), dy(s.rows, s.cols, s.stride, 0),
            dx(s.rows, s.cols, s.stride, s.misalign);
        fill_scores(random, x, random.coin(0.3));
        for (index_t r = 0; r < s.rows; ++r)
          for (index_t c = 0; c < s.cols; ++c) dy(r, c) = static_cast<T>(random.normal());
        lengths.visit([&](const auto& mode) {
          softmax_backward_from_scores(TestType::policy, variant, mode, x.cview(), dy.cview(), dx.view);
        });
        REQUIRE(dx.padding_untouched());
        lengths.visit([&](const auto& mode) {
          for (index_t r = 0; r < s.rows; ++r) {
            const index_t length = mode.row_length(r, s.cols);
            const reference_params params = params_for(variant, length);
            const reference_row ref = reference_forward(params, x.view.row(r), length, s.cols);
            // As above, with the relative error of p itself (see forward.cpp) added: the largest in the row.
            real magnitude = 0, p_error = 0;
            const real a = params.clips ? params.zeta - params.gamma : 1;
            for (index_t k = 0; k < length; ++k) {
              magnitude += std::fabs(ref.p[k] * a * dy(r, k));
              const real x_minus_m = std::isinf(x(r, k)) ? 0 : x(r, k) - ref.shift;
              p_error = std::max(p_error, eps * (8 + std::fabs(x_minus_m) + static_cast<real>(length) / 8));
            }
            if (mask_is_ambiguous(params, ref.p.data(), length, eps, p_error)) {
              ++rows_skipped;
              continue;
            }
            ++rows_checked;
            const std::vector<real> want = reference_backward(params, ref.p.data(), dy.view.row(r), length, s.cols);
            for (index_t c = 0; c < s.cols; ++c) {
              const real tol =
                  3 * p_error * ref.p[c] * (std::fabs(a * dy(r, c)) + magnitude) + 16 * std::numeric_limits<T>::min();
              INFO("row " << r << " length " << length << " col " << c);
              if (c >= length) {
                REQUIRE(dx(r, c) == 0);
              } else {
                REQUIRE(std::fabs(dx(r, c) - want[c]) <= tol);
              }
            }
          }
        });
      });
    }
  }
  CHECK(rows_skipped * 20 < rows_checked);
}

namespace {

template <class Policy, class Variant, class Mode>
double weighted_output(const Policy& policy, const Variant& variant, const Mode& mode, const matrix_view<double>& x,
                       const std::vector<double>& w) {
  std::vector<double> y(static_cast<std::size_t>(x.rows * x.cols));
  softmax_forward(policy, variant, mode, matrix_view<const double>(x), matrix_view<double>(y.data(), x.rows, x.cols));
  double total = 0;
  for (std::size_t i = 0; i < y.size(); ++i) total += w[i] * y[i];
  return total;
}

}  // namespace

TEMPLATE_TEST_CASE("backward equals central finite differences of the forward (double)", "[softmax][backward]",
                   qsafe::cpu_t, qsafe::simd_t) {
  const TestType policy{};
  QSAFE_TEST_RNG(random);
  index_t clipped_at_zero = 0, clipped_at_one = 0, checked = 0;
  for (const index_t cols : {1, 2, 7, 17, 33}) {
    for (const length_kind kind : all_length_kinds) {
      for_each_variant([&](const auto& variant) {
        const index_t rows = random.integer(1, 4);
        const length_data lengths = length_data::make(random, kind, rows, cols);
        INFO("cols " << cols << ", rows " << rows << ", lengths " << name(kind));
        std::vector<double> x(static_cast<std::size_t>(rows * cols)), w(x.size()), p(x.size()), dx(x.size());
        for (auto& v : x) v = random.normal(0.0, 3.0);
        for (auto& v : w) v = random.normal();
        const matrix_view<double> xv(x.data(), rows, cols);
        lengths.visit([&](const auto& mode) {
          std::vector<double> y(x.size());
          softmax_forward(policy, variant, mode, matrix_view<const double>(xv),
                          matrix_view<double>(y.data(), rows, cols), matrix_view<double>(p.data(), rows, cols));
          softmax_backward(policy, variant, mode, matrix_view<const double>(p.data(), rows, cols),
                           matrix_view<const double>(w.data(), rows, cols), matrix_view<double>(dx.data(), rows, cols));
          for (index_t r = 0; r < rows; ++r) {
            const index_t length = mode.row_length(r, cols);
            const reference_params params = params_for(variant, length);
            // Skip rows with a clip boundary within reach of the step: the function has a kink there.
            bool near_kink = false;
            for (index_t j = 0; j < length && params.clips; ++j) {
              const double v = static_cast<double>((params.zeta - params.gamma) * p[r * cols + j] + params.gamma);
              near_kink = near_kink || std::fabs(v) < 1e-4 || std::fabs(v - 1) < 1e-4;
              if (length > 1 && v < 0) ++clipped_at_zero;
              if (length > 1 && v > 1) ++clipped_at_one;
            }
            if (near_kink) continue;
            for (index_t c = 0; c < cols; ++c) {
              const double h = 1e-6;
              const std::size_t i = static_cast<std::size_t>(r * cols + c);
              const double saved = x[i];
              x[i] = saved + h;
              const double up = weighted_output(policy, variant, mode, xv, w);
              x[i] = saved - h;
              const double down = weighted_output(policy, variant, mode, xv, w);
              x[i] = saved;
              const double numeric = (up - down) / (2 * h);
              // Central differences: truncation O(h^2) ~ 1e-12 and cancellation ~ eps·|f|/h ~ 1e-9 here.
              INFO("row " << r << " length " << length << " col " << c);
              REQUIRE(std::fabs(dx[i] - numeric) <= 1e-7 + 1e-6 * std::fabs(numeric));
              ++checked;
            }
          }
        });
      });
    }
  }
  CHECK(checked > 1000);
  CHECK(clipped_at_zero > 0);  // the checks above really covered probabilities clipped at 0 ...
  CHECK(clipped_at_one > 0);   // ... and at 1 (zeta > 1)
}
