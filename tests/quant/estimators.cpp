// Range estimators against independent references: min-max and its exact merge, the running average, percentiles
// against a full sort (sizes up to 10^7), the MSE search against a brute-force long-double search, and per-channel
// estimators against per-tensor estimators on each channel's values.

#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <vector>

#include "qsafe/estimators.hpp"
#include "quant/quant_reference.hpp"
#include "support/backends.hpp"

using namespace qsafe;
using namespace qsafe::test;

namespace {

// The percentile definition (REFERENCE §2) on fully sorted values: h = (n − 1)·(p/100) in double as documented,
// the interpolation in long double.
template <class T>
real percentile_of_sorted(const std::vector<T>& v, double p) {
  const double h = static_cast<double>(v.size() - 1) * (p / 100.0);
  const auto k = static_cast<std::size_t>(std::floor(h));
  const real below = v[k], above = v[std::min(k + 1, v.size() - 1)];
  return below + (static_cast<real>(h) - std::floor(static_cast<real>(h))) * (above - below);
}

template <class T>
real sorted_percentile(std::vector<T> v, double p) {
  std::sort(v.begin(), v.end());
  return percentile_of_sorted(v, p);
}

// The percentile's interpolation runs in double: its error is a few ulp of the larger neighbour.
template <class T>
bool percentile_close(double got, real expected, real scale) {
  return std::fabs(static_cast<real>(got) - expected) <= 4 * std::numeric_limits<double>::epsilon() * scale;
}

}  // namespace

TEMPLATE_TEST_CASE("min-max estimator gives the extremes over all batches and merges exactly", "[estimators][min_max]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (const data_kind kind : all_data_kinds) {
    const index_t cols = random.integer(1, 300);
    const int batches = static_cast<int>(random.integer(1, 5));
    min_max_estimator<T> whole, left, right;
    T lo = std::numeric_limits<T>::infinity(), hi = -lo;
    for (int b = 0; b < batches; ++b) {
      // A row stride with NaN padding: values outside the view must never be read.
      const index_t rows = random.integer(1, 5), stride = cols + random.integer(0, 3);
      const std::vector<T> x = make_data<T>(random, kind, rows * cols);
      std::vector<T> padded(static_cast<std::size_t>(rows * stride), std::numeric_limits<T>::quiet_NaN());
      for (index_t r = 0; r < rows; ++r) std::copy_n(x.begin() + r * cols, cols, padded.begin() + r * stride);
      const matrix_view<const T> xv(padded.data(), rows, cols, stride);
      whole.observe(TestType::policy, xv);
      (b % 2 == 0 ? left : right).observe(TestType::policy, xv);
      for (const T v : x) lo = std::min(lo, v), hi = std::max(hi, v);
    }
    INFO(name(kind) << ", " << batches << " batches of " << cols << " columns");
    CHECK(whole.range().lo == static_cast<double>(lo));
    CHECK(whole.range().hi == static_cast<double>(hi));
    right.merge(left);  // merge order does not matter: the union's extremes
    CHECK(right.range().lo == whole.range().lo);
    CHECK(right.range().hi == whole.range().hi);
    CHECK(whole.qparams(8, quant_mode::asymmetric) == make_qparams<T>({lo, hi}, 8, quant_mode::asymmetric));
    CHECK_FALSE(whole.next_pass());
  }
}

TEMPLATE_TEST_CASE(
    "min-max ranges are the same for 1, 2 and 3 threads, per tensor and per channel; a NaN in any "
    "thread's rows is found",
    "[estimators][min_max][threads]", float, double) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  const index_t rows = random.integer(2, 60), cols = random.integer(1, 200);
  std::vector<T> x = make_data<T>(random, data_kind::heavy_tailed, rows * cols);
  // Non-negative with both zeros planted in one column, in the first and the last row (the first and the last
  // thread's blocks): that column's minimum is a zero whose sign a different grouping of the fold could change.
  for (T& v : x) v = std::fabs(v);
  const index_t zero_col = random.integer(0, cols - 1);
  x[static_cast<std::size_t>(zero_col)] = T(-0.0);
  x[static_cast<std::size_t>((rows - 1) * cols + zero_col)] = T(0.0);
  const matrix_view<const T> xv(x.data(), rows, cols);
  for (const channel_layout layout :
       {channel_layout{}, channel_layout{channel_axis::column, cols}, channel_layout{channel_axis::row, rows}}) {
    INFO(rows << " x " << cols << ", axis " << static_cast<int>(layout.axis) << ", " << layout.channels << " channels");
    min_max_estimator<T> one(layout);
    one.observe(simd, xv);
    for (const int threads : {2, 3}) {
      min_max_estimator<T> many(layout);
      many.observe(simd_t{threads}, xv);
      for (index_t c = 0; c < layout.channels; ++c) {
        const auto a = one.ranges()[static_cast<std::size_t>(c)], b = many.ranges()[static_cast<std::size_t>(c)];
        CHECK(std::bit_cast<std::uint64_t>(a.lo) == std::bit_cast<std::uint64_t>(b.lo));  // signed zeros too
        CHECK(std::bit_cast<std::uint64_t>(a.hi) == std::bit_cast<std::uint64_t>(b.hi));
      }
    }
    for (const index_t r : {index_t(0), rows - 1}) {  // the first thread's block and the last one's
      std::vector<T> bad = x;
      bad[static_cast<std::size_t>(r * cols + random.integer(0, cols - 1))] = std::numeric_limits<T>::quiet_NaN();
      min_max_estimator<T> e(layout);
      CHECK_THROWS_WITH(e.observe(simd_t{3}, matrix_view<const T>(bad.data(), rows, cols)), Catch::Contains("NaN"));
    }
  }
}

TEMPLATE_TEST_CASE("running min-max averages batch extremes with momentum, the first batch initializing",
                   "[estimators][running]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  const double momentum = random.coin() ? 0.9 : random.uniform(0.0, 0.99);
  running_min_max_estimator<T> est(momentum);
  real lo = 0, hi = 0;
  for (int b = 0; b < 16; ++b) {
    const std::vector<T> x = make_data<T>(random, data_kind::heavy_tailed, 8 * 64);
    est.observe(TestType::policy, matrix_view<const T>(x.data(), 8, 64));
    const auto [mn, mx] = std::minmax_element(x.begin(), x.end());
    lo = b == 0 ? *mn : momentum * lo + (1 - momentum) * *mn;
    hi = b == 0 ? *mx : momentum * hi + (1 - momentum) * *mx;
    INFO("momentum " << momentum << ", batch " << b);
    // The estimator averages in double: 16 steps of a convex combination cost a few ulp of the extremes.
    const real tol = 16 * std::numeric_limits<double>::epsilon() * (std::fabs(lo) + std::fabs(hi));
    REQUIRE(std::fabs(est.range().lo - lo) <= tol);
    REQUIRE(std::fabs(est.range().hi - hi) <= tol);
  }
}

TEMPLATE_TEST_CASE("percentiles are exact against a full sort for every distribution and size",
                   "[estimators][percentile]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (const data_kind kind : all_data_kinds) {
    // 300000 > the selection's gather limit: constant and offset data take the refinement passes.
    for (const index_t n :
         {index_t(1), index_t(2), index_t(17), index_t(1000), index_t(300000), random.integer(3, 200000)}) {
      const index_t cols = n % 7 == 0 ? 7 : 1;
      const std::vector<T> x = make_data<T>(random, kind, n);
      const std::vector<double> ps{0.0, 100.0, 50.0, 99.999, 0.001, random.uniform(0.0, 100.0), 25.0};
      INFO(name(kind) << ", n " << n);
      const std::vector<double> got =
          percentiles(TestType::policy, matrix_view<const T>(x.data(), n / cols, cols), std::span<const double>(ps));
      real scale = 0;
      for (const T v : x) scale = std::max(scale, std::fabs(static_cast<real>(v)));
      for (std::size_t i = 0; i < ps.size(); ++i) {
        INFO("p " << ps[i]);
        CHECK(percentile_close<T>(got[i], sorted_percentile(x, ps[i]), scale));
      }
    }
  }
}

TEST_CASE("percentile of 10^7 floats with a strided view is exact on both backends",
          "[estimators][percentile][large]") {
  QSAFE_TEST_RNG(random);
  const index_t rows = 10000, cols = 1000, stride = 1003;
  std::vector<float> storage(static_cast<std::size_t>(rows * stride), std::numeric_limits<float>::quiet_NaN());
  std::vector<float> values;
  values.reserve(static_cast<std::size_t>(rows * cols));
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) {
      const float v = static_cast<float>(random.coin(1e-4) ? random.normal(0.0, 300.0) : random.normal(0.0, 1.0));
      storage[static_cast<std::size_t>(r * stride + c)] = v;  // the NaN padding must never be read
      values.push_back(v);
    }
  const matrix_view<const float> x(storage.data(), rows, cols, stride);
  const std::vector<double> ps{99.999, 0.001, 50.0, 99.0};
  std::sort(values.begin(), values.end());
  const std::vector<double> fast = percentiles(simd, x, std::span<const double>(ps));
  const std::vector<double> reference = percentiles(cpu, x, std::span<const double>(ps));
  for (std::size_t i = 0; i < ps.size(); ++i) {
    INFO("p " << ps[i]);
    CHECK(percentile_close<float>(fast[i], percentile_of_sorted(values, ps[i]),
                                  std::max(std::fabs(values.front()), std::fabs(values.back()))));
    CHECK(fast[i] == reference[i]);  // both exact, same interpolation
  }
}

TEMPLATE_TEST_CASE("percentile estimator averages each batch's exact tails with momentum", "[estimators][percentile]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  const double p = random.coin() ? 99.999 : random.uniform(50.5, 100.0), momentum = 0.9;
  percentile_estimator<T> est(p, momentum);
  real lo = 0, hi = 0;
  for (int b = 0; b < 4; ++b) {
    const std::vector<T> x = make_data<T>(random, data_kind::heavy_tailed, 4 * 512);
    est.observe(TestType::policy, matrix_view<const T>(x.data(), 4, 512));
    const real blo = sorted_percentile(x, 100.0 - p), bhi = sorted_percentile(x, p);
    lo = b == 0 ? blo : momentum * lo + (1 - momentum) * blo;
    hi = b == 0 ? bhi : momentum * hi + (1 - momentum) * bhi;
    INFO("p " << p << ", batch " << b);
    const real tol = 16 * std::numeric_limits<double>::epsilon() * 1000;  // |x| <= 1000 in this data
    REQUIRE(std::fabs(est.range().lo - lo) <= tol);
    REQUIRE(std::fabs(est.range().hi - hi) <= tol);
  }
}

TEMPLATE_TEST_CASE("MSE search finds the grid's minimum of the squared fake-quantization error", "[estimators][mse]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (const quant_mode mode : {quant_mode::asymmetric, quant_mode::symmetric}) {
    for (const data_kind kind : {data_kind::normal, data_kind::heavy_tailed}) {
      const int bits = static_cast<int>(random.integer(3, 8)), candidates = 100;
      mse_estimator<T> est(bits, mode, {}, candidates);
      std::vector<std::vector<T>> batches;
      std::vector<matrix_view<const T>> views;
      for (int b = 0; b < 3; ++b) batches.push_back(make_data<T>(random, kind, 2 * 300));
      for (const auto& b : batches) views.emplace_back(b.data(), 2, 300);
      calibrate(TestType::policy, est, std::span<const matrix_view<const T>>(views));

      // Brute force in long double over the documented grid.
      T lo = std::numeric_limits<T>::infinity(), hi = -lo;
      for (const auto& b : batches)
        for (const T v : b) lo = std::min(lo, v), hi = std::max(hi, v);
      const double glo = mode == quant_mode::asymmetric ? std::min<double>(lo, 0) : lo;
      const double ghi = mode == quant_mode::asymmetric ? std::max<double>(hi, 0) : hi;
      std::vector<real> loss(candidates, 0);
      for (int k = 0; k < candidates; ++k) {
        const double f = static_cast<double>(k + 1) / candidates;
        const value_range r = k + 1 == candidates ? value_range{glo, ghi} : value_range{glo * f, ghi * f};
        const reference_quantizer<T> ref(make_qparams<T>(r, bits, mode));
        for (const auto& b : batches)
          for (const T v : b) loss[static_cast<std::size_t>(k)] += std::pow(static_cast<real>(v) - ref.fake(v), 2);
      }
      const real best = *std::min_element(loss.begin(), loss.end());
      const quant_params chosen = est.qparams(bits, mode);
      const reference_quantizer<T> ref(chosen);
      real chosen_loss = 0;
      for (const auto& b : batches)
        for (const T v : b) chosen_loss += std::pow(static_cast<real>(v) - ref.fake(v), 2);
      INFO((mode == quant_mode::asymmetric ? "asymmetric" : "symmetric")
           << ", " << name(kind) << ", bits " << bits << ", best " << best << ", chosen " << chosen_loss);
      // Losses are summed in the element type over at most 16 terms per lane (simd), then in double: the chosen
      // candidate's loss is the minimum up to that relative error (1e-5 covers float).
      CHECK(chosen_loss <= best * (1 + 1e-5L));
      // The search must beat plain min-max on this data whenever min-max is not itself the grid's optimum.
      CHECK(chosen_loss <= loss.back());
    }
  }
}

TEMPLATE_TEST_CASE("per-channel estimators equal per-tensor estimators on each channel's values",
                   "[estimators][per_channel]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (const channel_axis axis : {channel_axis::row, channel_axis::column}) {
    const index_t channels = random.integer(1, 6);
    const index_t rows = axis == channel_axis::row ? channels * random.integer(1, 3) : random.integer(1, 40);
    const index_t cols = axis == channel_axis::column ? channels : random.integer(1, 50);
    const std::vector<T> x = make_data<T>(random, data_kind::heavy_tailed, rows * cols);
    const matrix_view<const T> xv(x.data(), rows, cols);
    const channel_layout layout{axis, channels};
    min_max_estimator<T> mm(layout);
    running_min_max_estimator<T> run(0.9, layout);
    percentile_estimator<T> pct(99.0, 0.9, layout);
    mse_estimator<T> mse(4, quant_mode::asymmetric, layout, 20);
    mm.observe(TestType::policy, xv);
    run.observe(TestType::policy, xv);
    run.observe(TestType::policy, xv);
    pct.observe(TestType::policy, xv);
    calibrate(TestType::policy, mse, xv);
    const std::vector<quant_params> per_channel = mse.channel_qparams(4, quant_mode::asymmetric);
    for (index_t c = 0; c < channels; ++c) {
      std::vector<T> values;
      for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < cols; ++j)
          if ((axis == channel_axis::column ? j : r % channels) == c) values.push_back(xv(r, j));
      const matrix_view<const T> cv(values.data(), 1, static_cast<index_t>(values.size()));
      min_max_estimator<T> mm1;
      percentile_estimator<T> pct1(99.0, 0.9);
      mse_estimator<T> mse1(4, quant_mode::asymmetric, {}, 20);
      mm1.observe(TestType::policy, cv);
      pct1.observe(TestType::policy, cv);
      calibrate(TestType::policy, mse1, cv);
      INFO((axis == channel_axis::row ? "rows" : "columns") << ", channel " << c << " of " << channels);
      const auto i = static_cast<std::size_t>(c);
      CHECK(mm.ranges()[i].lo == mm1.range().lo);
      CHECK(mm.ranges()[i].hi == mm1.range().hi);
      CHECK(run.ranges()[i].lo == mm1.range().lo);  // two equal batches: the average is the batch's range
      CHECK(run.ranges()[i].hi == mm1.range().hi);
      CHECK(pct.ranges()[i].lo == pct1.range().lo);
      CHECK(pct.ranges()[i].hi == pct1.range().hi);
      CHECK(per_channel[i] == mse1.qparams(4, quant_mode::asymmetric));
    }
    CHECK(mm.channel_qparams(8, quant_mode::symmetric).size() == static_cast<std::size_t>(channels));
  }
}
