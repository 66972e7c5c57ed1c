// Quantization error metrics: the sums against long double, per channel against per tensor, threads, merge,
// the fused form against fake_quantize + the two-tensor form, known values and edge cases, errors.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <vector>

#include "qsafe/metrics.hpp"
#include "quant/quant_reference.hpp"
#include "support/backends.hpp"
#include "support/distributions.hpp"

using namespace qsafe;
using namespace qsafe::test;
using Catch::Matchers::Contains;

namespace {

struct reference_error {
  real x2 = 0, y2 = 0, xy = 0, e2 = 0, abs_xy = 0;
};

template <class T>
reference_error reference_sums(const T* x, const T* y, index_t n, index_t stride = 1) {
  reference_error r;
  for (index_t i = 0; i < n; ++i) {
    const real a = x[i * stride], b = y[i * stride], d = a - b;
    r.x2 += a * a, r.y2 += b * b, r.xy += a * b, r.e2 += d * d, r.abs_xy += std::fabs(a * b);
  }
  return r;
}

// cpu: terms exact in double for float (and rounded once for double), n·eps_double of summation; simd: the terms
// and up to 16 additions per lane in T (20 eps_T), then double. The difference x − y rounded in T on simd: its
// square carries 2 eps_T relative to |x − y|², and when y is not close to x, eps_T·(|x| + |y|)... bounded by
// 4 eps_T (x² + y²) overall.
template <class Policy, class T>
void check_sums(const quant_error& e, const reference_error& r, index_t n) {
  const real eps_t = std::numeric_limits<T>::epsilon(), eps_d = std::numeric_limits<double>::epsilon();
  const real per = std::is_same_v<Policy, cpu_t> ? real(0) : 20 * eps_t;
  const real sum_eps = static_cast<real>(n) * eps_d + per;
  CHECK(e.count == n);
  CHECK(std::fabs(e.sum_x2 - r.x2) <= sum_eps * r.x2);
  CHECK(std::fabs(e.sum_y2 - r.y2) <= sum_eps * r.y2);
  CHECK(std::fabs(e.sum_xy - r.xy) <= sum_eps * r.abs_xy);
  const real difference = std::is_same_v<Policy, cpu_t> ? real(0) : 4 * eps_t * (r.x2 + r.y2);
  CHECK(std::fabs(e.sum_e2 - r.e2) <= sum_eps * r.e2 + difference);
}

}  // namespace

TEMPLATE_TEST_CASE("error sums equal the long-double sums, two tensors and fused with fake_quantize", "[metrics]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  using Policy = typename TestType::policy_type;
  QSAFE_TEST_RNG(random);
  for (const data_kind kind : all_data_kinds) {
    // Column counts around the vector widths and the 16-batch flush, plus a fresh random one.
    for (const index_t cols : {index_t{1}, index_t{7}, index_t{17}, index_t{127}, index_t{129}, index_t{1000},
                               index_t{4097}, static_cast<index_t>(random.integer(2, 3000))}) {
      const index_t rows = random.integer(1, 5), stride = cols + random.integer(0, 3);
      std::vector<T> x = make_data<T>(random, kind, rows * stride), y(x.size());
      const double lo = *std::min_element(x.begin(), x.end()), hi = *std::max_element(x.begin(), x.end());
      fake_quant_options o;
      o.rounding = random.coin() ? rounding_mode::stochastic : rounding_mode::half_to_even;
      o.seed = 3;
      const quant_params p = make_qparams<T>({lo, hi}, static_cast<int>(random.integer(2, 12)),
                                             random.coin() ? quant_mode::asymmetric : quant_mode::symmetric);
      const matrix_view<const T> xv(x.data(), rows, cols, stride);
      fake_quantize(cpu, xv, p, matrix_view<T>(y.data(), rows, cols, stride), o);
      const matrix_view<const T> yv(y.data(), rows, cols, stride);
      INFO(name(kind) << ", " << rows << " x " << cols << ", scale " << p.scale);
      reference_error r;
      for (index_t row = 0; row < rows; ++row) {
        const reference_error part = reference_sums(x.data() + row * stride, y.data() + row * stride, cols);
        r.x2 += part.x2, r.y2 += part.y2, r.xy += part.xy, r.e2 += part.e2, r.abs_xy += part.abs_xy;
      }
      const quant_error two = tensor_quant_error(TestType::policy, xv, yv);
      check_sums<Policy, T>(two, r, rows * cols);
      // The fused form computes the same y row by row: the same sums bit for bit.
      const quant_error fused = tensor_quant_error(TestType::policy, xv, p, o);
      CHECK(fused.sum_x2 == two.sum_x2);
      CHECK(fused.sum_e2 == two.sum_e2);
      CHECK(fused.sum_xy == two.sum_xy);
      CHECK(fused.sum_y2 == two.sum_y2);
    }
  }
}

TEMPLATE_TEST_CASE("per-channel error sums equal the per-tensor sums of each channel; threads change nothing",
                   "[metrics][per_channel]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  using Policy = typename TestType::policy_type;
  QSAFE_TEST_RNG(random);
  for (int trial = 0; trial < 30; ++trial) {
    const bool along_columns = random.coin();
    const index_t channels = random.integer(1, 7);
    const index_t rows = along_columns ? random.integer(1, 200) : channels * random.integer(1, 4);
    const index_t cols = along_columns ? channels : random.integer(1, 100);
    std::vector<T> x(static_cast<std::size_t>(rows * cols)), y(x.size());
    for (auto& v : x) v = static_cast<T>(random.normal(0.0, 2.0));
    std::vector<quant_params> params;
    for (index_t c = 0; c < channels; ++c)
      params.push_back(make_qparams<T>({-random.uniform(0.5, 4), random.uniform(0.5, 4)}, 4, quant_mode::asymmetric));
    const channel_axis axis = along_columns ? channel_axis::column : channel_axis::row;
    const matrix_view<const T> xv(x.data(), rows, cols);
    fake_quantize(cpu, xv, std::span<const quant_params>(params), axis, matrix_view<T>(y.data(), rows, cols));
    const matrix_view<const T> yv(y.data(), rows, cols);
    std::vector<quant_error> two(params.size()), fused(params.size()), threaded(params.size());
    channel_quant_error(TestType::policy, xv, yv, axis, std::span<quant_error>(two));
    channel_quant_error(TestType::policy, xv, std::span<const quant_params>(params), axis,
                        std::span<quant_error>(fused));
    INFO("trial " << trial << ", " << rows << " x " << cols << ", channels along "
                  << (along_columns ? "columns" : "rows"));
    for (std::size_t c = 0; c < params.size(); ++c) {
      // Channel c's elements gathered, against long double.
      std::vector<T> xc, yc;
      for (index_t r = 0; r < rows; ++r)
        for (index_t k = 0; k < cols; ++k)
          if (along_columns ? static_cast<std::size_t>(k) == c : static_cast<std::size_t>(r % channels) == c) {
            xc.push_back(x[static_cast<std::size_t>(r * cols + k)]);
            yc.push_back(y[static_cast<std::size_t>(r * cols + k)]);
          }
      const auto n = static_cast<index_t>(xc.size());
      check_sums<Policy, T>(two[c], reference_sums(xc.data(), yc.data(), n), n);
      CHECK(fused[c].sum_e2 == two[c].sum_e2);
      CHECK(fused[c].sum_xy == two[c].sum_xy);
    }
    if constexpr (std::is_same_v<Policy, simd_t>) {
      channel_quant_error(simd_t{3}, xv, yv, axis, std::span<quant_error>(threaded));
      for (std::size_t c = 0; c < params.size(); ++c) {
        REQUIRE(threaded[c].sum_e2 == two[c].sum_e2);
        REQUIRE(threaded[c].sum_x2 == two[c].sum_x2);
      }
      const quant_error one = tensor_quant_error(simd, xv, yv), three = tensor_quant_error(simd_t{3}, xv, yv);
      REQUIRE(one.sum_e2 == three.sum_e2);
      REQUIRE(one.sum_xy == three.sum_xy);
    }
  }
}

TEMPLATE_TEST_CASE("metrics: known values, merge, and the documented edge cases", "[metrics][edge]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  constexpr double inf = std::numeric_limits<double>::infinity();
  // x = (3, 4), y = (3, 0): Σx² = 25, Σ(x − y)² = 16, Σxy = 9, Σy² = 9.
  const std::vector<T> x{3, 4}, y{3, 0}, zero{0, 0}, minus{-3, -4}, twice{6, 8};
  auto error = [&](const std::vector<T>& a, const std::vector<T>& b) {
    return tensor_quant_error(TestType::policy, matrix_view<const T>(a.data(), 1, 2),
                              matrix_view<const T>(b.data(), 1, 2));
  };
  const quant_error e = error(x, y);
  CHECK(e.sqnr_db() == Approx(10 * std::log10(25.0 / 16.0)).epsilon(1e-15));
  CHECK(e.relative_l2() == Approx(0.8).epsilon(1e-15));
  CHECK(e.cosine_similarity() == Approx(0.6).epsilon(1e-15));
  CHECK(e.mse() == 8.0);
  // Identical tensors: no error.
  CHECK(error(x, x).sqnr_db() == inf);
  CHECK(error(x, x).relative_l2() == 0.0);
  CHECK(error(x, x).cosine_similarity() == Approx(1.0).epsilon(1e-15));
  // All zeros on both sides: no error, no direction.
  CHECK(error(zero, zero).sqnr_db() == inf);
  CHECK(error(zero, zero).relative_l2() == 0.0);
  CHECK(std::isnan(error(zero, zero).cosine_similarity()));
  // A zero signal with an error; an approximation quantized to all zeros.
  CHECK(error(zero, x).sqnr_db() == -inf);
  CHECK(error(zero, x).relative_l2() == inf);
  CHECK(error(x, zero).sqnr_db() == 0.0);
  CHECK(error(x, zero).relative_l2() == 1.0);
  CHECK(std::isnan(error(x, zero).cosine_similarity()));
  // Opposite and scaled copies: cosine −1 and 1 (clamped), SQNR of y = 2x is 0 dB (the error equals the signal).
  CHECK(error(x, minus).cosine_similarity() == Approx(-1.0).epsilon(1e-15));
  CHECK(error(x, minus).cosine_similarity() >= -1.0);
  CHECK(error(x, twice).cosine_similarity() <= 1.0);
  CHECK(error(x, twice).sqnr_db() == 0.0);
  // Merge: batches add up to the whole.
  quant_error merged = error(x, y);
  merged.merge(error(x, minus));
  const std::vector<T> both_x{3, 4, 3, 4}, both_y{3, 0, -3, -4};
  const quant_error whole = tensor_quant_error(TestType::policy, matrix_view<const T>(both_x.data(), 1, 4),
                                               matrix_view<const T>(both_y.data(), 1, 4));
  CHECK(merged.count == whole.count);
  CHECK(merged.sum_e2 == whole.sum_e2);  // small integers: exact in any order
  CHECK(merged.sum_xy == whole.sum_xy);
}

TEMPLATE_TEST_CASE("8-bit fake-quant of uniform data has the textbook SQNR", "[metrics][sqnr]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  // x uniform on [−1, 1], 8-bit symmetric (s = 1/127): noise power s²/12, signal 1/3, SQNR = 10·log10(4·127²)
  // = 48.16 dB. With n = 2^18 the sampling error of both means is ~0.3% (0.01 dB); allow 0.1 dB.
  const index_t n = index_t{1} << 18;
  std::vector<T> x(static_cast<std::size_t>(n));
  for (auto& v : x) v = static_cast<T>(random.uniform(-1.0, 1.0));
  const quant_params p = make_qparams<T>({-1.0, 1.0}, 8, quant_mode::symmetric);
  const quant_error e = tensor_quant_error(TestType::policy, matrix_view<const T>(x.data(), 64, n / 64), p);
  CHECK(e.sqnr_db() == Approx(10 * std::log10(4.0 * 127 * 127)).margin(0.1));
  CHECK(e.cosine_similarity() > 0.99999);
}

TEST_CASE("metric errors name the argument and write nothing", "[metrics][errors]") {
  std::vector<float> x{1, 2, 3, std::numeric_limits<float>::quiet_NaN(), 5, 6}, y{1, 2, 3, 4, 5, 6};
  const matrix_view<const float> xv(x.data(), 2, 3), yv(y.data(), 2, 3);
  CHECK_THROWS_WITH(tensor_quant_error(simd, xv, yv),
                    Contains("tensor_quant_error") && Contains("'x'") && Contains("1 NaN or infinite"));
  CHECK_THROWS_WITH(tensor_quant_error(cpu, yv, xv), Contains("'y'") && Contains("1 NaN"));
  CHECK_THROWS_WITH(tensor_quant_error(simd, xv, make_qparams<float>({-1, 6}, 8, quant_mode::asymmetric)),
                    Contains("'x'") && Contains("1 NaN"));
  x[3] = std::numeric_limits<float>::infinity();
  x[4] = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(tensor_quant_error(cpu, xv, yv), Contains("'x'") && Contains("2 NaN or infinite"));
  x[3] = 4, x[4] = 5;
  CHECK_THROWS_WITH(tensor_quant_error(simd, xv, matrix_view<const float>(y.data(), 3, 2)),
                    Contains("'y'") && Contains("shape"));
  CHECK_THROWS_WITH(tensor_quant_error(simd, matrix_view<const float>(nullptr, 0, 3), yv),
                    Contains("'x'") && Contains("empty"));
  std::vector<quant_error> out(2);
  out[0].count = 99;
  CHECK_THROWS_WITH(channel_quant_error(simd, xv, yv, channel_axis::column, std::span<quant_error>(out)),
                    Contains("'out'") && Contains("columns"));
  CHECK_THROWS_WITH(channel_quant_error(cpu, xv, yv, static_cast<channel_axis>(4), std::span<quant_error>(out)),
                    Contains("'axis'"));
  const std::vector<quant_params> three(3);
  CHECK_THROWS_WITH(channel_quant_error(simd, xv, std::span<const quant_params>(three), channel_axis::column,
                                        std::span<quant_error>(out)),
                    Contains("'out'"));
  CHECK_THROWS_WITH(tensor_quant_error(simd, xv, quant_params{-1.0, 0, 0, 255}), Contains("'params'"));
  x[0] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(channel_quant_error(simd, xv, yv, channel_axis::row, std::span<quant_error>(out)),
                    Contains("'x'") && Contains("1 NaN"));
  CHECK(out[0].count == 99);
}
