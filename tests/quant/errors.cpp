// Bad input: std::invalid_argument naming the argument, before any output is written or any estimator state
// changes; results asked for too early: std::logic_error.

#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <vector>

#include "qsafe/estimators.hpp"
#include "qsafe/quant.hpp"
#include "qsafe/stats.hpp"

using namespace qsafe;
using Catch::Matchers::Contains;

namespace {

struct buffers {
  std::vector<float> x = std::vector<float>(12, 1.0f), y = std::vector<float>(12, 7.0f);
  std::vector<std::uint8_t> q = std::vector<std::uint8_t>(12, 7);
  matrix_view<const float> xv{x.data(), 3, 4};
  matrix_view<float> yv{y.data(), 3, 4};
  bool untouched() const {
    return std::all_of(y.begin(), y.end(), [](float v) { return v == 7.0f; }) &&
           std::all_of(q.begin(), q.end(), [](std::uint8_t v) { return v == 7; });
  }
};

}  // namespace

TEST_CASE("quantizer parameter errors name the argument and write nothing", "[quant][errors]") {
  buffers b;
  CHECK_THROWS_WITH(make_qparams<float>({0, 1}, 1, quant_mode::asymmetric), Contains("'bits'") && Contains("[2, 16]"));
  CHECK_THROWS_WITH(make_qparams<float>({0, 1}, 17, quant_mode::symmetric), Contains("'bits'"));
  CHECK_THROWS_WITH(make_qparams<float>({0, 1}, 8, static_cast<quant_mode>(7)), Contains("'mode'"));
  CHECK_THROWS_WITH(make_qparams<float>({2, 1}, 8, quant_mode::asymmetric), Contains("'range'"));
  CHECK_THROWS_WITH(make_qparams<float>({0, std::numeric_limits<double>::quiet_NaN()}, 8, quant_mode::asymmetric),
                    Contains("'range'"));
  CHECK_THROWS_WITH(make_qparams<float>({-3e38, 3e38}, 8, quant_mode::asymmetric),
                    Contains("'range'") && Contains("wide"));
  CHECK_NOTHROW(make_qparams<float>({-3e38, 3e38}, 8, quant_mode::symmetric));
  CHECK_THROWS_WITH(fake_quantize(simd, b.xv, quant_params{0.0, 0, 0, 255}, b.yv),
                    Contains("'params'") && Contains("scale"));
  CHECK_THROWS_WITH(fake_quantize(cpu, b.xv, quant_params{std::numeric_limits<double>::infinity(), 0, 0, 255}, b.yv),
                    Contains("'params'") && Contains("scale"));
  CHECK_THROWS_WITH(fake_quantize(simd, b.xv, quant_params{1.0, 300, 0, 255}, b.yv), Contains("zero_point"));
  CHECK_THROWS_WITH(fake_quantize(simd, b.xv, quant_params{1.0, 0, 0, 70000}, b.yv), Contains("16 bits"));
  CHECK_THROWS_WITH(fake_quantize(simd, b.xv, quant_params{1.0, 0, 5, 5}, b.yv), Contains("non-empty"));
  CHECK_THROWS_WITH(quantize(simd, b.xv, quant_params{1.0, 0, -128, 127}, matrix_view<std::uint8_t>(b.q.data(), 3, 4)),
                    Contains("does not fit"));
  CHECK_THROWS_WITH(fake_quantize(simd, b.xv, quant_params{}, matrix_view<float>(b.y.data(), 4, 3)),
                    Contains("'y'") && Contains("shape"));
  CHECK_THROWS_WITH(
      fake_quantize_backward(simd, b.xv, quant_params{}, matrix_view<const float>(b.x.data(), 2, 4), b.yv),
      Contains("'dy'"));
  CHECK_THROWS_WITH(fake_quantize(cpu, matrix_view<const float>(nullptr, 3, 4), quant_params{}, b.yv),
                    Contains("'x'") && Contains("null"));
  CHECK(b.untouched());
}

TEST_CASE("per-channel errors name the axis or the parameter list", "[quant][errors]") {
  buffers b;
  const std::vector<quant_params> three(3), four(4), two(2);
  CHECK_THROWS_WITH(fake_quantize(simd, b.xv, std::span<const quant_params>(three), channel_axis::column, b.yv),
                    Contains("'params'") && Contains("columns"));
  CHECK_THROWS_WITH(fake_quantize(simd, b.xv, std::span<const quant_params>(two), channel_axis::row, b.yv),
                    Contains("'params'") && Contains("divide"));
  CHECK_THROWS_WITH(fake_quantize(simd, b.xv, std::span<const quant_params>(four), static_cast<channel_axis>(2), b.yv),
                    Contains("'axis'"));
  std::vector<quant_params> bad(4);
  bad[2].scale = -1.0;
  CHECK_THROWS_WITH(fake_quantize(cpu, b.xv, std::span<const quant_params>(bad), channel_axis::column, b.yv),
                    Contains("'params[2]'"));
  CHECK(b.untouched());
  CHECK_NOTHROW(fake_quantize(simd, b.xv, std::span<const quant_params>(four), channel_axis::column, b.yv));
  CHECK_NOTHROW(fake_quantize(simd, b.xv, std::span<const quant_params>(three), channel_axis::row, b.yv));
}

TEST_CASE("estimators reject NaN, infinities and empty batches, and keep their state", "[estimators][errors]") {
  std::vector<float> good{1, 2, 3, 4}, nan_data{1, std::numeric_limits<float>::quiet_NaN(), 3, 4},
      inf_data{1, 2, -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity()};
  const matrix_view<const float> g(good.data(), 1, 4), n(nan_data.data(), 1, 4), i(inf_data.data(), 1, 4),
      empty(nullptr, 0, 4);
  min_max_estimator<float> mm;
  running_min_max_estimator<float> run;
  percentile_estimator<float> pct;
  mse_estimator<float> mse(8, quant_mode::asymmetric);
  mm.observe(simd, g);
  run.observe(cpu, g);
  pct.observe(simd, g);
  CHECK_THROWS_WITH(mm.observe(simd, n), Contains("'x'") && Contains("1 NaN or infinite"));
  CHECK_THROWS_WITH(mm.observe(cpu, i), Contains("'x'") && Contains("2 NaN or infinite"));
  CHECK_THROWS_WITH(run.observe(simd, n), Contains("'x'") && Contains("NaN"));
  CHECK_THROWS_WITH(pct.observe(simd, i), Contains("'x'") && Contains("2 NaN or infinite"));
  CHECK_THROWS_WITH(pct.observe(cpu, n), Contains("'x'") && Contains("1 NaN or infinite"));
  CHECK_THROWS_WITH(mse.observe(simd, n), Contains("'x'") && Contains("NaN"));
  CHECK_THROWS_WITH(mm.observe(simd, empty), Contains("'x'") && Contains("empty"));
  CHECK(mm.range().lo == 1.0);
  CHECK(mm.range().hi == 4.0);
  CHECK(run.range().hi == 4.0);
  CHECK(pct.range().hi <= 4.0);
  CHECK(std::isfinite(pct.range().lo));
}

TEST_CASE("estimator parameters and layouts are checked, results asked too early are logic errors",
          "[estimators][errors]") {
  CHECK_THROWS_WITH(percentile_estimator<float>(50.0), Contains("'percentile'") && Contains("(50, 100]"));
  CHECK_THROWS_WITH(percentile_estimator<float>(100.5), Contains("'percentile'"));
  CHECK_NOTHROW(percentile_estimator<float>(100.0));
  CHECK_THROWS_WITH(running_min_max_estimator<float>(1.0), Contains("'momentum'"));
  CHECK_THROWS_WITH(running_min_max_estimator<float>(-0.1), Contains("'momentum'"));
  CHECK_THROWS_WITH(mse_estimator<double>(1, quant_mode::symmetric), Contains("'bits'"));
  CHECK_THROWS_WITH(mse_estimator<double>(8, quant_mode::symmetric, {}, 0), Contains("'candidates'"));
  CHECK_THROWS_WITH(min_max_estimator<float>(channel_layout{channel_axis::row, 0}), Contains("'layout.channels'"));
  CHECK_THROWS_WITH(min_max_estimator<float>(channel_layout{static_cast<channel_axis>(5), 2}),
                    Contains("'layout.axis'"));

  std::vector<float> x(12, 1.0f);
  min_max_estimator<float> columns(channel_layout{channel_axis::column, 5});
  CHECK_THROWS_WITH(columns.observe(simd, matrix_view<const float>(x.data(), 3, 4)),
                    Contains("'x'") && Contains("columns"));
  min_max_estimator<float> rows(channel_layout{channel_axis::row, 5});
  CHECK_THROWS_WITH(rows.observe(simd, matrix_view<const float>(x.data(), 3, 4)), Contains("'x'") && Contains("rows"));
  min_max_estimator<float> other(channel_layout{channel_axis::row, 3});
  CHECK_THROWS_WITH(rows.merge(other), Contains("'other'"));

  min_max_estimator<float> fresh;
  CHECK_THROWS_AS(fresh.range(), std::logic_error);
  min_max_estimator<float> per_row(channel_layout{channel_axis::row, 3});
  per_row.observe(cpu, matrix_view<const float>(x.data(), 3, 4));
  CHECK_THROWS_WITH(per_row.range(), Contains("ranges()"));

  mse_estimator<float> mse(8, quant_mode::asymmetric);
  mse.observe(simd, matrix_view<const float>(x.data(), 3, 4));
  CHECK_THROWS_WITH(mse.range(), Contains("two passes"));
  CHECK(mse.next_pass());
  mse.observe(simd, matrix_view<const float>(x.data(), 3, 4));
  CHECK_FALSE(mse.next_pass());
  CHECK_THROWS_WITH(mse.qparams(4, quant_mode::asymmetric), Contains("'bits'"));
  CHECK_THROWS_WITH(mse.qparams(8, quant_mode::symmetric), Contains("'mode'"));
  CHECK_NOTHROW(mse.qparams(8, quant_mode::asymmetric));
  CHECK_THROWS_AS(mse.observe(simd, matrix_view<const float>(x.data(), 3, 4)), std::logic_error);

  CHECK_THROWS_WITH(percentile(simd, matrix_view<const float>(x.data(), 3, 4), 101.0), Contains("'p'"));
  CHECK_THROWS_WITH(percentile(cpu, matrix_view<const float>(nullptr, 0, 0), 50.0),
                    Contains("'x'") && Contains("empty"));
}

TEST_CASE("statistics reject NaN, infinities and empty tensors and write nothing", "[stats][errors]") {
  std::vector<double> x{1, 2, std::numeric_limits<double>::quiet_NaN(), 4, 5, 6};
  std::vector<moments> out(2);
  out[0].count = 99;
  CHECK_THROWS_WITH(tensor_moments(simd, matrix_view<const double>(x.data(), 2, 3)),
                    Contains("'x'") && Contains("1 NaN or infinite"));
  CHECK_THROWS_WITH(row_moments(cpu, matrix_view<const double>(x.data(), 2, 3), std::span<moments>(out)),
                    Contains("'x'") && Contains("1 NaN"));
  CHECK(out[0].count == 99);
  x[2] = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(tensor_moments(cpu, matrix_view<const double>(x.data(), 2, 3)), Contains("'x'"));
  CHECK_THROWS_WITH(osp_excess_kurtosis(simd, matrix_view<const double>(x.data(), 2, 3)), Contains("'x'"));
  CHECK_THROWS_WITH(tensor_moments(simd, matrix_view<const double>(nullptr, 0, 3)),
                    Contains("'x'") && Contains("empty"));
  x[2] = 3;
  CHECK_THROWS_WITH(row_moments(simd, matrix_view<const double>(x.data(), 2, 3), std::span<moments>(out.data(), 1)),
                    Contains("'out'"));
}
