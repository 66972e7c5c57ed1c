// The \code snippets of qsafe/lsq.hpp and qsafe/metrics.hpp, and the fake-quant options example of
// docs/quantization.md, compiled and run as tests. Keep them in sync with the headers' doc comments.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "qsafe/qsafe.hpp"
#include "snippet_data.hpp"

using qsafe::test::normal_values;

TEST_CASE("docs/quantization.md snippet: fake-quant options", "[doc]") {
  const std::vector<float> xs = normal_values(512, 1), ones(512, 1.0f);
  std::vector<float> ys(512), dxs(512);
  const qsafe::matrix_view<const float> x(xs.data(), 8, 64), dy(ones.data(), 8, 64);
  const qsafe::matrix_view<float> y(ys.data(), 8, 64), dx(dxs.data(), 8, 64);
  const std::uint64_t step = 7;
  // --8<-- [options]
  const qsafe::quant_params w = qsafe::make_qparams<float>({-3.0, 3.0}, 8, qsafe::quant_mode::symmetric,
                                                           {.narrow_range = true});  // codes [-127, 127]
  const qsafe::fake_quant_options o{
      .rounding = qsafe::rounding_mode::stochastic, .seed = step, .mask = qsafe::ste_mask::float_range};
  qsafe::fake_quantize(qsafe::simd, x, w, y, o);
  qsafe::fake_quantize_backward(qsafe::simd, x, w, dy, dx, o);  // the same options: the same draws
  // --8<-- [options]
  CHECK(w.quant_min == -127);
  for (std::size_t i = 0; i < xs.size(); ++i) {
    CHECK(std::fabs(ys[i] - xs[i]) < static_cast<float>(w.scale));  // stochastic: within one step
    CHECK(dxs[i] == 1.0f);                                          // |x| < 3 here: inside the float range
  }
}

TEST_CASE("lsq.hpp snippet: learnable scale and zero point", "[doc]") {
  const std::vector<float> xs = normal_values(512, 2), dys = normal_values(512, 3);
  std::vector<float> ys(512), dxs(512);
  const qsafe::matrix_view<const float> x(xs.data(), 8, 64), dy(dys.data(), 8, 64);
  const qsafe::matrix_view<float> y(ys.data(), 8, 64), dx(dxs.data(), 8, 64);
  const double lr = 1e-3;
  // --8<-- [lsq]
  qsafe::learnable_qparams p{0.05, 128.0, 0, 255};  // scale, zero point (a float), codes
  qsafe::lsq_fake_quantize(qsafe::simd, x, p, y);
  const qsafe::lsq_gradients g = qsafe::lsq_fake_quantize_backward(qsafe::simd, x, p, dy, dx, {.gradient_scale = true});
  p.scale -= lr * g.scale;
  p.zero_point -= lr * g.zero_point;
  // --8<-- [lsq]
  CHECK(std::isfinite(p.scale));
  CHECK(p.scale != 0.05);
}

TEST_CASE("metrics.hpp snippet: SQNR, relative error, cosine, merge", "[doc]") {
  const std::vector<float> a = normal_values(4096, 4), b = normal_values(4096, 5);
  const qsafe::matrix_view<const float> x(a.data(), 64, 64);
  const qsafe::quant_params params = qsafe::make_qparams<float>({-4.0, 4.0}, 8, qsafe::quant_mode::asymmetric);
  const qsafe::quant_error other_batch =
      qsafe::tensor_quant_error(qsafe::cpu, qsafe::matrix_view<const float>(b.data(), 64, 64), params);
  // --8<-- [metrics]
  const qsafe::quant_error e = qsafe::tensor_quant_error(qsafe::simd, x, params);  // x vs fake_quantize(x)
  double db = e.sqnr_db(), rel = e.relative_l2(), cos = e.cosine_similarity();
  qsafe::quant_error all = e;
  all.merge(other_batch);  // sums add: batches, threads, processes
  // --8<-- [metrics]
  CHECK(db > 35.0);  // 8 bits over ±4σ of a normal: ~40 dB
  CHECK(rel < 0.02);
  CHECK(cos > 0.9998);
  CHECK(all.count == 8192);
}
