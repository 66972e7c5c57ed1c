// Forward of every variant and row-length mode against the long-double reference, on fresh random inputs of the
// sizes the issue names, with strides larger than cols, misaligned starts and poisoned padding.

#include <catch2/catch.hpp>
#include <cmath>

#include "qsafe/softmax.hpp"
#include "support/backends.hpp"
#include "support/softmax_reference.hpp"

using namespace qsafe;
using namespace qsafe::test;

namespace {

// Error bound on p_j, relative: eps·(8 + |x_j - m| + L/8). The rounding of x_j - m is amplified by exp into a
// relative error eps·|x_j - m|; exp itself and the division cost a few ulp (8 covers them and the final rounding);
// a sum of L positive terms accumulated in >= 8 lanes (simd) has relative error <= (L/8)·eps. The cpu backend
// accumulates in double, far inside this bound for float; for double its error grows like sqrt(L)·eps.
template <class T>
real p_tolerance(real x_minus_m, index_t length) {
  if (std::isinf(x_minus_m)) x_minus_m = 0;  // a -inf key: p = 0 exactly
  return std::numeric_limits<T>::epsilon() * (8 + std::fabs(x_minus_m) + static_cast<real>(length) / 8);
}

// Propagated through v = a·p + b and the 1-Lipschitz clip: |a|·p·tol_p + eps·(|a|·p + 2|b|), plus an absolute
// floor for results that underflow (exp of very negative scores).
template <class T>
real y_tolerance(const reference_params& v, real p, real x_minus_m, index_t length) {
  const real eps = std::numeric_limits<T>::epsilon();
  const real a = v.clips ? v.zeta - v.gamma : 1, b = v.clips ? v.gamma : 0;
  return std::fabs(a) * p * p_tolerance<T>(x_minus_m, length) + eps * (std::fabs(a) * p + 2 * std::fabs(b)) +
         16 * std::numeric_limits<T>::min();
}

}  // namespace

TEMPLATE_TEST_CASE("forward matches the long-double reference for every variant, length mode and shape",
                   "[softmax][forward]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (const index_t cols : test_columns(random)) {
    for (const length_kind kind : all_length_kinds) {
      for_each_variant([&](const auto& variant) {
        const shape s = random_shape(random, cols);
        const length_data lengths = length_data::make(random, kind, s.rows, s.cols);
        const bool with_neg_inf = random.coin(0.3);
        const bool save_p = random.coin();
        INFO("cols " << cols << ", rows " << s.rows << ", stride " << s.stride << ", misalign " << s.misalign
                     << ", lengths " << name(kind) << ", -inf keys " << with_neg_inf << ", save p " << save_p);

        strided_matrix<T> x(s.rows, s.cols, s.stride, s.misalign), y(s.rows, s.cols, s.stride, s.misalign),
            p(s.rows, s.cols, s.stride, 0);
        fill_scores(random, x, with_neg_inf);
        lengths.visit([&](const auto& mode) {
          if (save_p) {
            softmax_forward(TestType::policy, variant, mode, x.cview(), y.view, p.view);
          } else {
            softmax_forward(TestType::policy, variant, mode, x.cview(), y.view);
          }
        });
        REQUIRE(y.padding_untouched());
        REQUIRE(p.padding_untouched());

        bool all_within = true;
        lengths.visit([&](const auto& mode) {
          for (index_t r = 0; r < s.rows && all_within; ++r) {
            const index_t length = mode.row_length(r, s.cols);
            const reference_params params = params_for(variant, length);
            const reference_row ref = reference_forward(params, x.view.row(r), length, s.cols);
            for (index_t c = 0; c < s.cols; ++c) {
              const real got = y(r, c);
              const real tol = y_tolerance<T>(params, ref.p[c], x(r, c) - ref.shift, length);
              if (c >= length) {
                all_within = all_within && got == 0;  // masked keys are exactly zero
              } else if (!(std::fabs(got - ref.y[c]) <= tol)) {
                all_within = false;
              }
              if (save_p && c < length) {
                const real p_tol =
                    ref.p[c] * p_tolerance<T>(x(r, c) - ref.shift, length) + 16 * std::numeric_limits<T>::min();
                all_within = all_within && std::fabs(p(r, c) - ref.p[c]) <= p_tol;
              }
              if (save_p && c >= length) all_within = all_within && p(r, c) == 0;
              if (!all_within) {
                INFO("row " << r << " (length " << length << ") col " << c << ": got " << got << " want "
                            << static_cast<double>(ref.y[c]) << " p " << static_cast<double>(ref.p[c]) << " tol "
                            << static_cast<double>(tol));
                CHECK(all_within);
                break;
              }
            }
          }
        });
        CHECK(all_within);
      });
    }
  }
}

TEMPLATE_TEST_CASE("forward in place (y aliasing x) equals the out-of-place result", "[softmax][forward]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (const index_t cols : test_columns(random)) {
    const shape s = random_shape(random, cols);
    strided_matrix<T> x(s.rows, s.cols, s.stride, s.misalign), y(s.rows, s.cols, s.stride, s.misalign);
    fill_scores(random, x, true);
    const auto variant = normalized_clipped_softmax{1.0, 0.9};
    softmax_forward(TestType::policy, variant, causal_rows{}, x.cview(), y.view);
    softmax_forward(TestType::policy, variant, causal_rows{}, x.cview(), x.view);
    CHECK(x.storage == y.storage);
  }
}
