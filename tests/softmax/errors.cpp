// Bad input throws std::invalid_argument naming the argument, before any output is written.

#include <catch2/catch.hpp>
#include <limits>

#include "qsafe/softmax.hpp"

using namespace qsafe;
using Catch::Matchers::Contains;

namespace {

struct buffers {
  std::vector<float> x = std::vector<float>(12, 1.0f), y = std::vector<float>(12, 7.0f),
                     dx = std::vector<float>(12, 7.0f);
  matrix_view<const float> xv{x.data(), 3, 4};
  matrix_view<float> yv{y.data(), 3, 4}, dxv{dx.data(), 3, 4};
  bool untouched() const {
    return std::all_of(y.begin(), y.end(), [](float v) { return v == 7.0f; }) &&
           std::all_of(dx.begin(), dx.end(), [](float v) { return v == 7.0f; });
  }
};

}  // namespace

TEST_CASE("shape and pointer errors name the argument and write nothing", "[softmax][errors]") {
  buffers b;
  CHECK_THROWS_WITH(softmax_forward(simd, vanilla_softmax{}, full_rows{}, b.xv, matrix_view<float>(b.y.data(), 4, 3)),
                    Contains("'y'") && Contains("shape"));
  CHECK_THROWS_WITH(softmax_forward(cpu, vanilla_softmax{}, full_rows{}, matrix_view<const float>(nullptr, 3, 4), b.yv),
                    Contains("'x'") && Contains("null"));
  CHECK_THROWS_WITH(
      softmax_forward(simd, vanilla_softmax{}, full_rows{}, matrix_view<const float>(b.x.data(), 3, 4, 2), b.yv),
      Contains("'x'") && Contains("row_stride"));
  CHECK_THROWS_WITH(
      softmax_forward(simd, vanilla_softmax{}, full_rows{}, b.xv, b.yv, matrix_view<float>(b.dx.data(), 3, 3)),
      Contains("'probabilities'"));
  CHECK_THROWS_WITH(
      softmax_backward(simd, vanilla_softmax{}, full_rows{}, b.xv, matrix_view<const float>(b.x.data(), 2, 4), b.dxv),
      Contains("'dy'"));
  CHECK_THROWS_WITH(softmax_backward_from_scores(simd, vanilla_softmax{}, full_rows{}, b.xv, b.yv, b.yv),
                    Contains("'dx'") && Contains("alias"));
  CHECK_THROWS_WITH(
      softmax_forward(simd, vanilla_softmax{}, full_rows{}, matrix_view<const float>(b.x.data(), -1, 4), b.yv),
      Contains("'x'") && Contains("negative"));
  CHECK(b.untouched());
  // An empty matrix is fine, null or not.
  CHECK_NOTHROW(softmax_forward(simd, vanilla_softmax{}, full_rows{}, matrix_view<const float>(nullptr, 0, 4),
                                matrix_view<float>(nullptr, 0, 4)));
}

TEST_CASE("length errors name the argument and write nothing", "[softmax][errors]") {
  buffers b;
  const std::vector<std::int32_t> too_long{1, 5, 2}, negative{1, -1, 2}, too_few{1, 2};
  CHECK_THROWS_WITH(softmax_forward(simd, vanilla_softmax{}, padded_rows{too_long}, b.xv, b.yv),
                    Contains("lengths") && Contains("entry 1 is 5"));
  CHECK_THROWS_WITH(softmax_forward(cpu, vanilla_softmax{}, padded_rows{negative}, b.xv, b.yv),
                    Contains("lengths") && Contains("-1"));
  CHECK_THROWS_WITH(softmax_forward(simd, vanilla_softmax{}, padded_rows{too_few}, b.xv, b.yv),
                    Contains("lengths.lengths") && Contains("2 entries"));
  CHECK_THROWS_WITH(softmax_forward(simd, vanilla_softmax{}, padded_rows{too_long, 0}, b.xv, b.yv),
                    Contains("rows_per_length"));
  CHECK_THROWS_WITH(softmax_forward(simd, vanilla_softmax{}, causal_rows{2, 0}, b.xv, b.yv),
                    Contains("lengths.queries"));
  CHECK_THROWS_WITH(softmax_forward(simd, vanilla_softmax{}, causal_rows{0, -3}, b.xv, b.yv),
                    Contains("lengths.offset"));
  CHECK_THROWS_WITH(softmax_backward(simd, vanilla_softmax{}, causal_padded_rows{3, 0, too_long, 1}, b.xv, b.xv, b.dxv),
                    Contains("lengths.lengths"));
  CHECK(b.untouched());
}

TEST_CASE("parameter errors name the argument and write nothing", "[softmax][errors]") {
  buffers b;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(softmax_forward(simd, clipped_softmax{0.9, -0.1}, full_rows{}, b.xv, b.yv),
                    Contains("variant.zeta"));
  CHECK_THROWS_WITH(softmax_forward(simd, clipped_softmax{1.0, 0.1}, full_rows{}, b.xv, b.yv),
                    Contains("variant.gamma"));
  CHECK_THROWS_WITH(softmax_forward(cpu, clipped_softmax{1.0, nan}, full_rows{}, b.xv, b.yv),
                    Contains("variant.gamma"));
  CHECK_THROWS_WITH(softmax_backward(simd, normalized_clipped_softmax{0.5, 0.9}, full_rows{}, b.xv, b.xv, b.dxv),
                    Contains("variant.zeta"));
  CHECK_THROWS_WITH(softmax_forward(simd, normalized_clipped_softmax{1.0, nan}, full_rows{}, b.xv, b.yv),
                    Contains("variant.beta"));
  CHECK_THROWS_WITH(clipped_softmax::from_alpha(3.2, 0), Contains("pretraining_length"));
  CHECK_THROWS_WITH(clipped_softmax::from_alpha(-1, 128), Contains("alpha"));
  CHECK(b.untouched());
  CHECK(clipped_softmax::from_alpha(12, 512).gamma == Approx(-12.0 / 512));
  CHECK(normalized_clipped_softmax::from_alpha(3.2, 128).beta == Approx(-2.175));
}
