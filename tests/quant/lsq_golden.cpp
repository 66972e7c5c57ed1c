// Agreement with PyTorch's learnable fake-quant (torch._fake_quantize_learnable_per_tensor_affine and
// _per_channel_affine, torch 1.13.1 CPU kernels) on tests/golden/lsq.txt, written by
// tests/golden/generate_lsq_golden.py: the forward and dx bit for bit, the scale and zero-point gradients within
// PyTorch's float32 arithmetic, with and without LSQ's gradient factor; and at zero points where PyTorch's backward
// rounds the zero point differently from its forward (half-integers, negative non-integers) and qsafe does not.

#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "qsafe/lsq.hpp"
#include "quant/golden_records.hpp"
#include "support/backends.hpp"

using namespace qsafe;

namespace {

struct lsq_case {
  std::string name, layout;
  index_t rows = 0, cols = 0;
  std::int32_t quant_min = 0, quant_max = 0;
  double grad_factor = 1.0;
  std::map<std::string, std::vector<double>> values;  // scale, zero_point, x, dy, y, dx, dscale, dzero_point

  std::vector<float> floats(const std::string& key) const {
    const std::vector<double>& v = values.at(key);
    return {v.begin(), v.end()};
  }
  index_t channels() const { return static_cast<index_t>(values.at("scale").size()); }
};

// lsq.txt's records: "case <name> <layout> <rows> <cols> <quant_min> <quant_max> <grad_factor>", then that case's
// value lists, one key each.
std::vector<lsq_case> read_cases() {
  std::vector<lsq_case> cases;
  for (const test::record& r : test::read_golden("lsq.txt")) {
    if (r.key == "case") {
      lsq_case c;
      c.name = r.values.at(0);
      c.layout = r.values.at(1);
      c.rows = r.integer(2), c.cols = r.integer(3);
      c.quant_min = r.integer(4), c.quant_max = r.integer(5);
      c.grad_factor = r.number(6);
      cases.push_back(std::move(c));
      continue;
    }
    REQUIRE(!cases.empty());
    cases.back().values[r.key] = r.numbers<double>();
  }
  REQUIRE(cases.size() == 16);
  return cases;
}

struct result {
  std::vector<float> y, dx;
  std::vector<lsq_gradients> gradients;
};

template <class Policy>
result run(const Policy& policy, const lsq_case& c) {
  const std::vector<float> x = c.floats("x"), dy = c.floats("dy");
  std::vector<learnable_qparams> params;
  for (index_t k = 0; k < c.channels(); ++k) {
    params.push_back({c.values.at("scale")[static_cast<std::size_t>(k)],
                      c.values.at("zero_point")[static_cast<std::size_t>(k)], c.quant_min, c.quant_max});
  }
  lsq_options options;
  options.gradient_scale = c.grad_factor != 1.0;
  result r;
  r.y.assign(x.size(), 0.0f);
  r.dx.assign(x.size(), 0.0f);
  r.gradients.resize(params.size());
  const matrix_view<const float> xv(x.data(), c.rows, c.cols), dyv(dy.data(), c.rows, c.cols);
  const matrix_view<float> yv(r.y.data(), c.rows, c.cols), dxv(r.dx.data(), c.rows, c.cols);
  if (c.layout == "per_tensor") {
    lsq_fake_quantize(policy, xv, params[0], yv, options);
    r.gradients[0] = lsq_fake_quantize_backward(policy, xv, params[0], dyv, dxv, options);
  } else {
    const channel_axis axis = c.layout == "channel_rows" ? channel_axis::row : channel_axis::column;
    lsq_fake_quantize(policy, xv, std::span<const learnable_qparams>(params), axis, yv, options);
    lsq_fake_quantize_backward(policy, xv, std::span<const learnable_qparams>(params), axis, dyv, dxv,
                               std::span<lsq_gradients>(r.gradients), options);
  }
  return r;
}

// PyTorch sums float32 terms: per element ∂/∂s is (x̂ − x)/s from a rounded x̂ (a few ulp of |x|/s off qsafe's
// round(v) − v) or an end code minus z; both sums then carry float32 rounding. Bound: 2^-18 of the sum of the
// terms' magnitudes (a zero point off by one shifts the clipped terms by Σ dy over them, far above this).
struct bounds {
  std::vector<double> scale, zero_point;
};

bounds tolerances(const lsq_case& c) {
  const std::vector<double>& x = c.values.at("x");
  const std::vector<double>& dy = c.values.at("dy");
  const index_t channels = c.channels();
  bounds b{std::vector<double>(static_cast<std::size_t>(channels), 0.0),
           std::vector<double>(static_cast<std::size_t>(channels), 0.0)};
  for (index_t r = 0; r < c.rows; ++r)
    for (index_t j = 0; j < c.cols; ++j) {
      const index_t k = c.layout == "channel_columns" ? j : c.layout == "channel_rows" ? r % channels : 0;
      const auto i = static_cast<std::size_t>(r * c.cols + j);
      const double s = c.values.at("scale")[static_cast<std::size_t>(k)];
      b.scale[static_cast<std::size_t>(k)] +=
          std::ldexp(std::fabs(dy[i]) * (std::fabs(x[i]) / s + (c.quant_max - c.quant_min)) * c.grad_factor, -18);
      b.zero_point[static_cast<std::size_t>(k)] += std::ldexp(std::fabs(dy[i]) * s * c.grad_factor, -18);
    }
  return b;
}

// The torch run whose backward rounded its zero point to the one qsafe uses for `c` (c's "_same_z" partner), or
// null.
const lsq_case* same_z_partner(const std::vector<lsq_case>& cases, const lsq_case& c) {
  const auto lsq = c.name.find("_lsq");
  const std::string base = lsq == std::string::npos ? c.name : c.name.substr(0, lsq);
  const std::string suffix = lsq == std::string::npos ? "" : "_lsq";
  for (const lsq_case& p : cases)
    if (p.name == base + "_same_z" + suffix) return &p;
  return nullptr;
}

}  // namespace

TEMPLATE_TEST_CASE(
    "LSQ agrees with PyTorch's learnable fake-quant: forward and dx bit for bit, scale and zero-point "
    "gradients within float32 summation",
    "[lsq][golden]", cpu_t, simd_t) {
  const std::vector<lsq_case> cases = read_cases();
  for (const lsq_case& c : cases) {
    // torch's backward uses another zero point than its forward: the next test
    if (same_z_partner(cases, c) != nullptr || c.name.find("_same_z") != std::string::npos) continue;
    INFO("case " << c.name << " (" << c.layout << ")");
    if (c.grad_factor != 1.0) {  // torch's grad_factor is LSQ's 1/√(N·Q_max), N per channel
      CHECK(c.grad_factor == Approx(lsq_gradient_scale(c.rows * c.cols / c.channels(), c.quant_max)).epsilon(1e-15));
    }
    const result r = run(TestType{}, c);
    CHECK(r.y == c.floats("y"));
    CHECK(r.dx == c.floats("dx"));
    const bounds b = tolerances(c);
    std::size_t clipped = 0;
    for (float d : c.floats("dx")) clipped += d == 0.0f ? 1 : 0;
    CHECK(clipped > c.floats("dx").size() / 10);  // the clipped branches are exercised
    for (index_t k = 0; k < c.channels(); ++k) {
      const auto kk = static_cast<std::size_t>(k);
      INFO("channel " << k);
      CHECK(std::fabs(r.gradients[kk].scale - c.values.at("dscale")[kk]) <= b.scale[kk]);
      CHECK(std::fabs(r.gradients[kk].zero_point - c.values.at("dzero_point")[kk]) <= b.zero_point[kk]);
    }
  }
}

TEMPLATE_TEST_CASE(
    "where PyTorch's backward rounds the zero point differently from its forward (2.5, -3.7), qsafe "
    "keeps the forward's: its backward is torch's backward run where that rounds to the same zero point",
    "[lsq][golden][zero_point]", cpu_t, simd_t) {
  const std::vector<lsq_case> cases = read_cases();
  int pairs = 0;
  for (const lsq_case& c : cases) {
    const lsq_case* same = same_z_partner(cases, c);
    if (same == nullptr) continue;
    ++pairs;
    INFO("case " << c.name << " (z = " << c.values.at("zero_point")[0] << ") against " << same->name
                 << " (z = " << same->values.at("zero_point")[0] << ")");
    const bounds b = tolerances(*same);
    // torch's own backward at z used another zero point: its mask and scale gradient differ from the partner's
    CHECK(c.floats("dx") != same->floats("dx"));
    CHECK(std::fabs(c.values.at("dscale")[0] - same->values.at("dscale")[0]) > 10 * b.scale[0]);
    const result r = run(TestType{}, c);
    CHECK(r.y == c.floats("y"));  // the forward as torch's
    CHECK(r.dx == same->floats("dx"));
    CHECK(std::fabs(r.gradients[0].scale - same->values.at("dscale")[0]) <= b.scale[0]);
    CHECK(std::fabs(r.gradients[0].zero_point - same->values.at("dzero_point")[0]) <= b.zero_point[0]);
  }
  CHECK(pairs == 4);  // tie and s8, each with and without the LSQ factor
}
