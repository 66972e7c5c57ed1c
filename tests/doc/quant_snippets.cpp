// The \code snippets of qsafe/quant.hpp, qsafe/stats.hpp and qsafe/estimators.hpp, compiled and run as tests.
// Keep them in sync with the headers' doc comments.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "qsafe/qsafe.hpp"
#include "snippet_data.hpp"

using qsafe::test::normal_values;

TEST_CASE("quant.hpp snippet: fake-quantize and its straight-through gradient", "[doc]") {
  const std::vector<float> xs = normal_values(512, 1), ones(512, 1.0f);
  std::vector<float> ys(512), dxs(512);
  const qsafe::matrix_view<const float> x(xs.data(), 8, 64), dy(ones.data(), 8, 64);
  const qsafe::matrix_view<float> y(ys.data(), 8, 64), dx(dxs.data(), 8, 64);
  const float lo = -1.0f, hi = 1.0f;
  // --8<-- [quant]
  const qsafe::quant_params p = qsafe::make_qparams<float>({lo, hi}, 8, qsafe::quant_mode::asymmetric);
  qsafe::fake_quantize(qsafe::simd, x, p, y);
  qsafe::fake_quantize_backward(qsafe::simd, x, p, dy, dx);  // dx = dy inside the code range, else 0
  // --8<-- [quant]
  for (std::size_t i = 0; i < xs.size(); ++i) {
    CHECK(std::fabs(ys[i] - std::clamp(xs[i], -1.0f, 1.0f)) <= static_cast<float>(p.scale));
    if (std::fabs(xs[i]) < 0.99f) CHECK(dxs[i] == 1.0f);  // inside [lo, hi]: passed
    if (std::fabs(xs[i]) > 1.01f) CHECK(dxs[i] == 0.0f);  // clipped: blocked
  }
}

TEST_CASE("stats.hpp snippet: moments, kurtosis, merge", "[doc]") {
  const std::vector<float> a = normal_values(4096, 2), b = normal_values(4096, 3);
  const qsafe::matrix_view<const float> x(a.data(), 64, 64);
  const qsafe::moments batch1_moments = qsafe::tensor_moments(qsafe::cpu, x);
  const qsafe::moments batch2_moments =
      qsafe::tensor_moments(qsafe::cpu, qsafe::matrix_view<const float>(b.data(), 64, 64));
  // --8<-- [stats]
  const qsafe::moments m = qsafe::tensor_moments(qsafe::simd, x);
  double k = m.kurtosis(), inf_norm = m.inf_norm();
  qsafe::moments all = batch1_moments;
  all.merge(batch2_moments);  // exact combination, any order
  // --8<-- [stats]
  CHECK(std::fabs(k - 3.0) < 0.5);  // a normal sample of 4096
  CHECK(inf_norm > 2.0);
  CHECK(all.count == 8192);
}

TEST_CASE("estimators.hpp snippet: running min-max over batches, MSE search over a weight", "[doc]") {
  std::vector<std::vector<float>> data;
  std::vector<qsafe::matrix_view<const float>> calibration;
  for (unsigned i = 0; i < 16; ++i) data.push_back(normal_values(8 * 128, 10 + i));
  for (const auto& d : data) calibration.emplace_back(d.data(), 8, 128);
  const std::vector<float> w = normal_values(256 * 64, 99);
  const qsafe::matrix_view<const float> weight(w.data(), 256, 64);
  // --8<-- [estimators]
  qsafe::running_min_max_estimator<float> est(0.9);  // momentum 0.9, the papers' activations
  for (auto batch : calibration) est.observe(qsafe::simd, batch);
  qsafe::quant_params p = est.qparams(8, qsafe::quant_mode::asymmetric);

  qsafe::mse_estimator<float> mse(8, qsafe::quant_mode::symmetric);  // needs two passes over the data
  qsafe::calibrate(qsafe::simd, mse, weight);                        // runs them
  // --8<-- [estimators]
  CHECK(p.scale > 0.0);
  CHECK(mse.range().hi <= qsafe::tensor_moments(qsafe::simd, weight).inf_norm());
}
