// Learnable fake-quant (LSQ / LSQ+): the forward is fake_quantize with the rounded zero point; the backward's dx
// bit for bit and its scale / zero-point gradients against a long-double definition; finite differences in double
// away from rounding steps (of the straight-through surrogate, and of the true forward for the scale); per channel
// against per tensor; threads; the zero point rounded the same way in forward and backward; errors.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "qsafe/lsq.hpp"
#include "quant/quant_reference.hpp"
#include "support/backends.hpp"

using namespace qsafe;
using namespace qsafe::test;
using Catch::Matchers::Contains;

namespace {

// One element's role in the backward, from the definition (contract of lsq.hpp), in long double.
struct element_terms {
  bool inside = false, below = false, above = false;
  real v = 0, rounded = 0;  // v = x·inv_s (rounded in T), round(v)
};

template <class T>
element_terms classify(const quant_params& q, ste_mask mask, T x) {
  const T s = static_cast<T>(q.scale), inv = T(1) / s, product = x * inv;
  element_terms e;
  if (std::isnan(x)) return e;
  e.v = product;
  e.rounded = std::isinf(product) ? static_cast<real>(product) : round_half_even(static_cast<real>(product));
  if (mask == ste_mask::rounded_code) {
    const real u = q.zero_point + e.rounded;
    e.below = u<q.quant_min, e.above = u> q.quant_max;
  } else {
    const T lo = static_cast<T>(q.quant_min - q.zero_point) * s, hi = static_cast<T>(q.quant_max - q.zero_point) * s;
    e.below = x<lo, e.above = x> hi;
  }
  e.inside = !e.below && !e.above;
  return e;
}

struct reference_gradients {
  real scale = 0, zero_point = 0, magnitude = 0;  // magnitude: Σ|term| of the scale sum, for error bounds
};

// d scale and d zero point of L = Σ dy·x̂ over the given elements (half-to-even rounding).
template <class T>
reference_gradients reference_lsq(const quant_params& q, ste_mask mask, const std::vector<T>& x,
                                  const std::vector<T>& dy, real g) {
  reference_gradients r;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const element_terms e = classify(q, mask, x[i]);
    if (std::isnan(x[i])) continue;
    real ds = 0, dz = 0;
    if (e.inside) {
      ds = (e.rounded - e.v) * dy[i];
    } else {
      ds = (static_cast<real>(e.below ? q.quant_min : q.quant_max) - q.zero_point) * dy[i];
      dz = -static_cast<real>(static_cast<T>(q.scale)) * dy[i];
    }
    r.scale += g * ds;
    r.zero_point += g * dz;
    r.magnitude += g * (std::fabs(ds) + std::fabs(dz));
  }
  return r;
}

// The bound on |computed − reference| for the gradient sums: cpu sums terms of up to two double roundings each in
// double ((n + 2)·eps_double: CI met 1.07 eps with one term); simd rounds each term to T and sums T lanes over at
// most 16 terms before double (20 eps_T).
template <class Policy, class T>
real gradient_tolerance(real magnitude, std::size_t n) {
  const real per = std::is_same_v<Policy, cpu_t> ? real(0) : 20 * static_cast<real>(std::numeric_limits<T>::epsilon());
  return (per + static_cast<real>(n + 2) * std::numeric_limits<double>::epsilon()) * magnitude + 1e-300L;
}

template <class T>
learnable_qparams random_learnable(rng& random) {
  learnable_qparams p;
  const int bits = static_cast<int>(random.integer(2, 10));
  if (random.coin()) {
    p.quant_min = 0, p.quant_max = (1 << bits) - 1;
  } else {
    p.quant_min = -(1 << (bits - 1)), p.quant_max = (1 << (bits - 1)) - 1;
  }
  p.scale = std::exp(random.normal(-3.0, 1.0));
  p.zero_point = random.uniform(p.quant_min - 0.4, p.quant_max + 0.4);
  return p;
}

template <class T>
std::vector<T> random_inputs(rng& random, const learnable_qparams& p, std::size_t n) {
  std::vector<T> x(n);
  const double width = (p.quant_max - p.quant_min) * p.scale;
  for (auto& v : x) {
    const long pick = random.integer(0, 9);
    if (pick == 0) {
      v = static_cast<T>((std::floor(random.uniform(p.quant_min, p.quant_max)) - p.zero_point + 0.5) * p.scale);
    } else if (pick == 1) {
      v = static_cast<T>(random.normal(0.0, 3.0 * width));
    } else {
      v = static_cast<T>(random.uniform(p.quant_min - p.zero_point - 3.0, p.quant_max - p.zero_point + 3.0) * p.scale);
    }
  }
  return x;
}

}  // namespace

TEMPLATE_TEST_CASE("LSQ backward: dx bit for bit, scale and zero-point gradients against long double", "[lsq]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  using Policy = typename TestType::policy_type;
  QSAFE_TEST_RNG(random);
  for (int trial = 0; trial < 200; ++trial) {
    const learnable_qparams p = random_learnable<T>(random);
    lsq_options o;
    o.quant.mask = random.coin() ? ste_mask::rounded_code : ste_mask::float_range;
    o.gradient_scale = random.coin();
    const index_t rows = random.integer(1, 5), cols = random.integer(1, 300);
    std::vector<T> x = random_inputs<T>(random, p, static_cast<std::size_t>(rows * cols));
    if (random.coin(0.2)) x[0] = std::numeric_limits<T>::quiet_NaN();
    if (random.coin(0.2)) x.back() = std::numeric_limits<T>::infinity();
    std::vector<T> dy(x.size()), dx(x.size()), y(x.size()), fq(x.size());
    for (auto& g : dy) g = static_cast<T>(random.normal());
    const matrix_view<const T> xv(x.data(), rows, cols);
    const quant_params q = to_quant_params<T>(p);
    INFO("trial " << trial << ", scale " << p.scale << ", zero point " << p.zero_point << " -> " << q.zero_point
                  << ", codes [" << p.quant_min << ", " << p.quant_max << "], mask "
                  << (o.quant.mask == ste_mask::rounded_code ? "code" : "range") << ", gradient scale "
                  << o.gradient_scale << ", " << rows << " x " << cols);
    lsq_fake_quantize(TestType::policy, xv, p, matrix_view<T>(y.data(), rows, cols), o);
    fake_quantize(TestType::policy, xv, q, matrix_view<T>(fq.data(), rows, cols));
    const lsq_gradients grad = lsq_fake_quantize_backward(
        TestType::policy, xv, p, matrix_view<const T>(dy.data(), rows, cols), matrix_view<T>(dx.data(), rows, cols), o);
    const real g = o.gradient_scale ? 1 / std::sqrt(static_cast<real>(x.size()) * std::max(p.quant_max, 1)) : 1;
    const reference_gradients ref = reference_lsq(q, o.quant.mask, x, dy, g);
    for (std::size_t i = 0; i < x.size(); ++i) {
      INFO("x = " << x[i]);
      REQUIRE(same(y[i], fq[i]));
      REQUIRE(dx[i] == (classify(q, o.quant.mask, x[i]).inside && !std::isnan(x[i]) ? dy[i] : T(0)));
    }
    const real tolerance = gradient_tolerance<Policy, T>(ref.magnitude, x.size());
    INFO("d scale " << grad.scale << " vs " << static_cast<double>(ref.scale) << ", d zero point " << grad.zero_point
                    << " vs " << static_cast<double>(ref.zero_point) << ", tolerance "
                    << static_cast<double>(tolerance));
    REQUIRE(std::fabs(grad.scale - ref.scale) <= tolerance);
    REQUIRE(std::fabs(grad.zero_point - ref.zero_point) <= tolerance);
  }
}

namespace {

// x away from rounding steps and from the ends of the code range: |frac(v) − 0.5| >= 0.1, and the code (or, for
// the float-range mask, x) at least 0.1 steps from the clamp edges, and inside codes not at the end codes (the
// surrogate's kink): a step h of 1e-6 relative changes no rounding and no clamp decision.
std::vector<double> fd_inputs(rng& random, const quant_params& q, std::size_t n) {
  std::vector<double> x;
  while (x.size() < n) {
    const double code = random.uniform(q.quant_min - 6.0, q.quant_max + 6.0);  // unclamped code, real
    const double v = code - q.zero_point, frac = v - std::floor(v);
    if (std::fabs(frac - 0.5) < 0.1 || frac < 0.1 || frac > 0.9) continue;
    const double rounded = std::nearbyint(v) + q.zero_point;
    if (std::fabs(rounded - q.quant_min) < 0.5 || std::fabs(rounded - q.quant_max) < 0.5) continue;
    if (std::fabs(code - q.quant_min) < 0.6 || std::fabs(code - q.quant_max) < 0.6) continue;
    x.push_back(v * q.scale);
  }
  return x;
}

}  // namespace

TEMPLATE_TEST_CASE("LSQ gradients match finite differences in double away from rounding steps", "[lsq][fd]",
                   (test::config<double, cpu_t>), (test::config<double, simd_t>)) {
  QSAFE_TEST_RNG(random);
  for (int trial = 0; trial < 40; ++trial) {
    learnable_qparams p = random_learnable<double>(random);
    p.zero_point = std::nearbyint(p.zero_point) + random.uniform(-0.4, 0.4);  // away from the zero point's tie
    lsq_options o;
    o.quant.mask = random.coin() ? ste_mask::rounded_code : ste_mask::float_range;
    o.gradient_scale = random.coin();
    const quant_params q = to_quant_params<double>(p);
    const index_t n = random.integer(1, 200);
    const std::vector<double> x = fd_inputs(random, q, static_cast<std::size_t>(n));
    std::vector<double> dy(x.size()), dx(x.size());
    for (auto& g : dy) g = random.normal();
    const matrix_view<const double> xv(x.data(), 1, n), dyv(dy.data(), 1, n);
    const lsq_gradients grad =
        lsq_fake_quantize_backward(TestType::policy, xv, p, dyv, matrix_view<double>(dx.data(), 1, n), o);
    const double g = o.gradient_scale ? lsq_gradient_scale(n, p.quant_max) : 1.0;
    INFO("trial " << trial << ", scale " << p.scale << ", zero point " << p.zero_point << ", n " << n);

    // (1) The straight-through surrogate: round(t) replaced by t + (round(t0) − t0), frozen at the evaluation point
    // (for the codes and for the zero point), the clamp kept. Its derivatives are what the STE claims; central
    // differences with h = 1e-6 (relative) have error O(h²) — the surrogate is piecewise polynomial of degree 2
    // in (s, z) and does not cross a piece here, so the difference is exact up to rounding (~1e-9 relative).
    std::vector<element_terms> e;
    for (const double v : x) e.push_back(classify(q, o.quant.mask, v));
    const double cz = q.zero_point - p.zero_point;
    auto term = [&](std::size_t i, double xi, double s, double z) {
      const real c = e[i].rounded - e[i].v, zr = static_cast<real>(z) + cz;
      const real xhat = e[i].inside ? xi + c * s : (static_cast<real>(e[i].below ? q.quant_min : q.quant_max) - zr) * s;
      return dy[i] * xhat;
    };
    auto surrogate = [&](double s, double z) {
      real loss = 0;
      for (std::size_t i = 0; i < x.size(); ++i) loss += term(i, x[i], s, z);
      return loss;
    };
    // Central differences divided by the step actually taken ((a + h) − (a − h) in double, exact).
    const double s_up = p.scale + 1e-6 * p.scale, s_down = p.scale - 1e-6 * p.scale;
    const double z_up = p.zero_point + 1e-6, z_down = p.zero_point - 1e-6;
    const real fd_s = (surrogate(s_up, p.zero_point) - surrogate(s_down, p.zero_point)) / (s_up - s_down);
    const real fd_z = (surrogate(p.scale, z_up) - surrogate(p.scale, z_down)) / (z_up - z_down);
    real magnitude = 0;
    for (std::size_t i = 0; i < x.size(); ++i) magnitude += std::fabs(dy[i]) * (q.quant_max - q.quant_min + 1.0);
    CHECK(std::fabs(grad.scale - g * fd_s) <= 1e-8 * g * magnitude);
    CHECK(std::fabs(grad.zero_point - g * fd_z) <= 1e-8 * g * magnitude * p.scale);
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double x_up = x[i] + 1e-6 * p.scale, x_down = x[i] - 1e-6 * p.scale;
      const real fd_x =
          (term(i, x_up, p.scale, p.zero_point) - term(i, x_down, p.scale, p.zero_point)) / (x_up - x_down);
      CHECK(std::fabs(dx[i] - fd_x) <= 1e-8 * (1 + std::fabs(dy[i])));
    }

    // (2) The true forward, differentiated in s by central differences (no code changes within ±h here): clipped
    // elements give the same derivative as the backward, inside ones round(v) = (round(v) − v) + v, so
    // FD = d_scale/g + Σ_inside v·dy.
    auto loss = [&](double s) {
      learnable_qparams ps = p;
      ps.scale = s;
      std::vector<double> y(x.size());
      lsq_fake_quantize(TestType::policy, xv, ps, matrix_view<double>(y.data(), 1, n), o);
      real sum = 0;
      for (std::size_t i = 0; i < x.size(); ++i) sum += dy[i] * static_cast<real>(y[i]);
      return sum;
    };
    const real fd_true = (loss(s_up) - loss(s_down)) / (s_up - s_down);
    real inside_v = 0;
    for (std::size_t i = 0; i < x.size(); ++i) inside_v += e[i].inside ? e[i].v * dy[i] : 0;
    CHECK(std::fabs(grad.scale / g + inside_v - fd_true) <= 1e-6 * magnitude);
  }
}

TEMPLATE_TEST_CASE("LSQ per channel equals per tensor channel by channel; threads change nothing", "[lsq][per_channel]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  using Policy = typename TestType::policy_type;
  QSAFE_TEST_RNG(random);
  for (int trial = 0; trial < 30; ++trial) {
    const bool along_columns = random.coin();
    const index_t channels = random.integer(1, 6);
    const index_t rows = along_columns ? random.integer(1, 150) : channels * random.integer(1, 3);
    const index_t cols = along_columns ? channels : random.integer(1, 80);
    std::vector<learnable_qparams> params;
    for (index_t c = 0; c < channels; ++c) params.push_back(random_learnable<T>(random));
    lsq_options o;
    o.gradient_scale = random.coin();
    o.quant.mask = random.coin() ? ste_mask::rounded_code : ste_mask::float_range;
    o.quant.rounding = random.coin() ? rounding_mode::stochastic : rounding_mode::half_to_even;
    o.quant.seed = 5;
    std::vector<T> x(static_cast<std::size_t>(rows * cols)), dy(x.size()), dx(x.size()), dx2(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      const auto& p = params[static_cast<std::size_t>(along_columns ? static_cast<index_t>(i) % cols
                                                                    : (static_cast<index_t>(i) / cols) % channels)];
      x[i] = static_cast<T>(random.uniform(p.quant_min - p.zero_point - 3, p.quant_max - p.zero_point + 3) * p.scale);
      dy[i] = static_cast<T>(random.normal());
    }
    const channel_axis axis = along_columns ? channel_axis::column : channel_axis::row;
    std::vector<lsq_gradients> grads(params.size()), grads2(params.size());
    const matrix_view<const T> xv(x.data(), rows, cols), dyv(dy.data(), rows, cols);
    INFO("trial " << trial << ", " << rows << " x " << cols << ", " << channels << " channels along "
                  << (along_columns ? "columns" : "rows"));
    lsq_fake_quantize_backward(TestType::policy, xv, std::span<const learnable_qparams>(params), axis, dyv,
                               matrix_view<T>(dx.data(), rows, cols), std::span<lsq_gradients>(grads), o);
    if constexpr (std::is_same_v<Policy, simd_t>) {
      lsq_fake_quantize_backward(simd_t{3}, xv, std::span<const learnable_qparams>(params), axis, dyv,
                                 matrix_view<T>(dx2.data(), rows, cols), std::span<lsq_gradients>(grads2), o);
      REQUIRE((dx == dx2));
      for (std::size_t c = 0; c < params.size(); ++c) {
        REQUIRE(grads[c].scale == grads2[c].scale);
        REQUIRE(grads[c].zero_point == grads2[c].zero_point);
      }
    }
    // Channel c alone: gather its elements (with their stream indices: one element per row along columns, so
    // use per-element calls with the element's offset), then per tensor.
    for (index_t c = 0; c < channels; ++c) {
      const learnable_qparams& p = params[static_cast<std::size_t>(c)];
      real ds = 0, dz = 0, magnitude = 0;
      const index_t count = along_columns ? rows : (rows / channels) * cols;
      for (index_t r = 0; r < rows; ++r) {
        for (index_t k = 0; k < cols; ++k) {
          if (along_columns ? k != c : r % channels != c) continue;
          lsq_options one = o;
          one.quant.index_offset = static_cast<std::uint64_t>(r * cols + k);
          one.gradient_scale = false;
          T d = 0;
          const auto i = static_cast<std::size_t>(r * cols + k);
          const lsq_gradients g1 =
              lsq_fake_quantize_backward(TestType::policy, matrix_view<const T>(&x[i], 1, 1), p,
                                         matrix_view<const T>(&dy[i], 1, 1), matrix_view<T>(&d, 1, 1), one);
          REQUIRE(d == dx[i]);
          ds += g1.scale, dz += g1.zero_point;
          magnitude += std::fabs(g1.scale) + std::fabs(g1.zero_point);
        }
      }
      const real g = o.gradient_scale ? lsq_gradient_scale(count, p.quant_max) : 1;
      const real tolerance = gradient_tolerance<Policy, T>(g * magnitude, static_cast<std::size_t>(count));
      REQUIRE(std::fabs(grads[static_cast<std::size_t>(c)].scale - g * ds) <= tolerance);
      REQUIRE(std::fabs(grads[static_cast<std::size_t>(c)].zero_point - g * dz) <= tolerance);
    }
  }
}

TEMPLATE_TEST_CASE("the zero point is rounded the same way in forward and backward", "[lsq][zero_point]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  // z = 2.5 (a tie): half to even gives 2 in both passes (PyTorch's backward would use 3). One element far above
  // the range: x̂ = (15 − z_r)·s and d scale = (15 − z_r)·dy tell z_r.
  learnable_qparams p{0.5, 2.5, 0, 15};
  const T x = 100, dy = 1;
  T y = 0, dx = 1;
  for (const rounding_mode rounding : {rounding_mode::half_to_even, rounding_mode::half_away_from_zero}) {
    lsq_options o;
    o.quant.rounding = rounding;
    const T z = rounding == rounding_mode::half_to_even ? T(2) : T(3);
    lsq_fake_quantize(TestType::policy, matrix_view<const T>(&x, 1, 1), p, matrix_view<T>(&y, 1, 1), o);
    const lsq_gradients g = lsq_fake_quantize_backward(TestType::policy, matrix_view<const T>(&x, 1, 1), p,
                                                       matrix_view<const T>(&dy, 1, 1), matrix_view<T>(&dx, 1, 1), o);
    CHECK(y == (T(15) - z) * T(0.5));
    CHECK(g.scale == static_cast<double>(T(15) - z));
    CHECK(g.zero_point == -0.5);
    CHECK(dx == T(0));
  }
}

TEMPLATE_TEST_CASE("LSQ: NaN contributes nothing, infinities are clipped, gradient scale is 1/sqrt(N Qmax)",
                   "[lsq][edge]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  const learnable_qparams p{0.25, 3.0, -8, 7};
  std::vector<T> x{T(0.1), T(-0.6), T(1.3), T(0.77)}, dy{T(1), T(-2), T(0.5), T(3)}, dx(6);
  const lsq_gradients base =
      lsq_fake_quantize_backward(TestType::policy, matrix_view<const T>(x.data(), 1, 4), p,
                                 matrix_view<const T>(dy.data(), 1, 4), matrix_view<T>(dx.data(), 1, 4));
  x.push_back(std::numeric_limits<T>::quiet_NaN());
  x.push_back(std::numeric_limits<T>::infinity());
  dy.push_back(T(5));
  dy.push_back(T(2));
  const lsq_gradients more =
      lsq_fake_quantize_backward(TestType::policy, matrix_view<const T>(x.data(), 1, 6), p,
                                 matrix_view<const T>(dy.data(), 1, 6), matrix_view<T>(dx.data(), 1, 6));
  // The NaN adds nothing; +inf is clipped above: d scale += (7 − 3)·2, d zero point += −0.25·2.
  CHECK(more.scale == Approx(base.scale + 8.0).epsilon(1e-12));
  CHECK(more.zero_point == Approx(base.zero_point - 0.5).epsilon(1e-12));
  CHECK(dx[4] == T(0));
  CHECK(dx[5] == T(0));
  const lsq_gradients scaled = lsq_fake_quantize_backward(TestType::policy, matrix_view<const T>(x.data(), 1, 6), p,
                                                          matrix_view<const T>(dy.data(), 1, 6),
                                                          matrix_view<T>(dx.data(), 1, 6), {.gradient_scale = true});
  const double g = 1.0 / std::sqrt(6.0 * 7.0);
  CHECK(lsq_gradient_scale(6, 7) == g);
  CHECK(scaled.scale == g * more.scale);
  CHECK(scaled.zero_point == g * more.zero_point);
}

TEST_CASE("LSQ errors name the argument and write nothing", "[lsq][errors]") {
  std::vector<float> x(12, 1.0f), dx(12, 7.0f);
  const matrix_view<const float> xv(x.data(), 3, 4);
  const matrix_view<float> dxv(dx.data(), 3, 4);
  lsq_options unclipped;
  unclipped.quant.mask = ste_mask::unclipped;
  CHECK_THROWS_WITH(lsq_fake_quantize_backward(simd, xv, learnable_qparams{}, xv, dxv, unclipped),
                    Contains("lsq_fake_quantize_backward") && Contains("'options'") && Contains("unclipped"));
  CHECK_THROWS_WITH(lsq_fake_quantize(cpu, xv, learnable_qparams{0.0, 0.0, 0, 255}, dxv), Contains("'params'"));
  CHECK_THROWS_WITH(lsq_fake_quantize(cpu, xv, learnable_qparams{1e-50, 0.0, 0, 255}, dxv),
                    Contains("'params'") && Contains("element type"));
  CHECK_THROWS_WITH(lsq_fake_quantize_backward(simd, xv, learnable_qparams{1.0, std::nan(""), 0, 255}, xv, dxv),
                    Contains("'params'") && Contains("zero_point"));
  const std::vector<learnable_qparams> four(4);
  std::vector<lsq_gradients> three(3);
  CHECK_THROWS_WITH(lsq_fake_quantize_backward(simd, xv, std::span<const learnable_qparams>(four), channel_axis::column,
                                               xv, dxv, std::span<lsq_gradients>(three)),
                    Contains("'gradients'"));
  std::vector<learnable_qparams> bad(four);
  bad[1].scale = -1;
  std::vector<lsq_gradients> grads(4);
  CHECK_THROWS_WITH(lsq_fake_quantize_backward(cpu, xv, std::span<const learnable_qparams>(bad), channel_axis::column,
                                               xv, dxv, std::span<lsq_gradients>(grads)),
                    Contains("'params[1]'"));
  CHECK_THROWS_WITH(lsq_fake_quantize_backward(cpu, xv, std::span<const learnable_qparams>(four), channel_axis::row, xv,
                                               dxv, std::span<lsq_gradients>(grads)),
                    Contains("'params'") && Contains("divide"));
  CHECK(std::all_of(dx.begin(), dx.end(), [](float v) { return v == 7.0f; }));
}
