// The \code snippets of qsafe/histogram.hpp and qsafe/histogram_estimators.hpp, compiled and run as tests.
// Keep them in sync with the headers' doc comments.
#include <catch2/catch.hpp>
#include <cstdint>
#include <vector>

#include "qsafe/qsafe.hpp"
#include "snippet_data.hpp"

using qsafe::test::normal_values;

TEST_CASE("histogram.hpp snippet: two passes, then a fixed grid merged across parts", "[doc]") {
  const std::vector<float> a = normal_values(4096, 1), b = normal_values(4096, 2);
  const std::vector<qsafe::matrix_view<const float>> views = {{a.data(), 64, 64}, {b.data(), 64, 64}};
  const std::span<const qsafe::matrix_view<const float>> batches(views);
  const qsafe::matrix_view<const float> my_batch = views[1];
  // --8<-- [histogram]
  qsafe::histogram<float> h;                  // per tensor, 2048 bins
  qsafe::calibrate(qsafe::simd, h, batches);  // pass 1: min-max (fixes the grid), pass 2: counts
  std::vector<std::int64_t> c = h.counts(0);
  // --8<-- [histogram]
  const std::vector<qsafe::value_range> ranges = {h.grid(0)};
  std::vector<std::uint8_t> received;  // another process's bytes, here our own
  const auto send = [&](std::vector<std::uint8_t> bytes) { received = std::move(bytes); };
  // --8<-- [merge]
  qsafe::histogram<float> total(ranges), part(ranges);  // fixed grids: one pass
  part.observe(qsafe::simd, my_batch);
  total.merge(part);     // exact: integer counts on identical edges
  send(part.to_bytes()); /* elsewhere: */
  total.merge(qsafe::histogram<float>::from_bytes(received));
  // --8<-- [merge]
  std::int64_t sum = 0;
  for (const std::int64_t v : c) sum += v;
  CHECK(sum == 8192);
  CHECK(total.total(0) == 8192);  // the part merged twice: directly and through its bytes
}

TEST_CASE("histogram_estimators.hpp snippet: a 4-bit MSE search", "[doc]") {
  const std::vector<float> a = normal_values(4096, 3);
  const std::vector<qsafe::matrix_view<const float>> views = {{a.data(), 64, 64}};
  const std::span<const qsafe::matrix_view<const float>> batches(views);
  // --8<-- [mse]
  qsafe::histogram_mse_estimator<float> est(4, qsafe::quant_mode::asymmetric);
  qsafe::calibrate(qsafe::simd, est, batches);  // pass 1 min-max, pass 2 counts
  qsafe::quant_params p = est.qparams(4, qsafe::quant_mode::asymmetric);
  // --8<-- [mse]
  // The 4-bit MSE optimum for N(0, 1) clips near 2.5 sigma: a range much narrower than the min-max one (~3.5-4).
  CHECK(p.scale * 15 < 6.5);
  CHECK(p.scale * 15 > 3.0);
}
