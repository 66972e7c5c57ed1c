// The softmax's float exp on its whole domain: every 61st float in [-87.3, 0] (17 million values) within 2
// ulp of the correctly rounded result, exactly 0 below -87.34 and for -inf, exactly 1 at 0.

#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>

#include "qsafe/detail/simd/exp.hpp"

using batch = xsimd::batch<float>;

namespace {
float ulp_distance(float a, float b) {
  const auto ia = std::bit_cast<std::int32_t>(a), ib = std::bit_cast<std::int32_t>(b);
  return static_cast<float>(std::abs(static_cast<std::int64_t>(ia) - ib));
}
}  // namespace

TEST_CASE("float exp of non-positive scores is within 2 ulp, 0 below the normal range", "[simd][exp]") {
  constexpr std::size_t width = batch::size;
  alignas(64) float in[width], out[width];
  float worst = 0, worst_at = 0;
  std::size_t filled = 0, checked = 0;
  const auto flush = [&] {
    qsafe::detail::simd::exp_nonpositive(batch::load_aligned(in)).store_aligned(out);
    for (std::size_t i = 0; i < filled; ++i) {
      const auto want = static_cast<float>(std::exp(static_cast<double>(in[i])));
      const float d = ulp_distance(out[i], want);
      if (d > worst) worst = d, worst_at = in[i];
    }
    checked += filled;
    filled = 0;
  };
  // Walk the bit patterns of negative floats from -0 down to -87.3.
  const auto stop = std::bit_cast<std::uint32_t>(-87.3f);
  for (std::uint32_t bits = std::bit_cast<std::uint32_t>(-0.0f); bits <= stop; bits += 61) {
    in[filled++] = std::bit_cast<float>(bits);
    if (filled == width) flush();
  }
  for (std::size_t i = filled; i < width; ++i) in[i] = 0.0f;
  flush();
  INFO("worst " << worst << " ulp at x = " << worst_at << " over " << checked << " values");
  CHECK(checked > 10'000'000);
  CHECK(worst <= 2);

  const float ninf = -std::numeric_limits<float>::infinity();
  alignas(64) float edge[width] = {0.0f, -0.0f, -87.4f, -100.0f, ninf, -1e30f, -88.0f, -1.0f};
  qsafe::detail::simd::exp_nonpositive(batch::load_aligned(edge)).store_aligned(out);
  CHECK(out[0] == 1.0f);
  CHECK(out[1] == 1.0f);
  CHECK(out[2] == 0.0f);
  CHECK(out[3] == 0.0f);
  CHECK(out[4] == 0.0f);
  CHECK(out[5] == 0.0f);
  CHECK(out[6] == 0.0f);
  CHECK(ulp_distance(out[7], static_cast<float>(std::exp(-1.0))) <= 2);
}
