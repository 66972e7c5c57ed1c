// CUDA learnable fake-quant (LSQ / LSQ+) against qsafe::cpu run on the float values the GPU reads: forward and dx
// bit for bit (half / bfloat16: y rounded once), d scale and d zero point within the summation-order bound, per
// tensor and per channel along both axes, every element type; fresh random parameters (real zero points, exact
// half-integers among them), inputs with exact ties, NaN, ±inf and huge values, awkward shapes, poisoned outputs;
// every rounding mode (stochastic: the host's draws), both STE masks, the gradient scale, with and without a workspace;
// determinism; argument errors; the doc snippets of qsafe/cuda/lsq.cuh and qsafe/cuda/metrics.cuh.

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

#include "qsafe/cuda/lsq.cuh"
#include "qsafe/cuda/metrics.cuh"
#include "support.cuh"

using namespace qsafe;
using namespace qsafe::test;
using namespace qsafe::test::gpu;
using Catch::Matchers::Contains;

namespace {

// 2 to 10 bits, unsigned or signed codes, a real zero point (a quarter of the time an exact half-integer, where
// half-to-even rounding decides), sometimes outside the codes (clamped).
learnable_qparams random_learnable(rng& random) {
  const int bits = static_cast<int>(random.integer(2, 10));
  learnable_qparams p;
  if (random.coin()) {
    p.quant_min = 0;
    p.quant_max = (1 << bits) - 1;
  } else {
    p.quant_min = -(1 << (bits - 1));
    p.quant_max = (1 << (bits - 1)) - 1;
  }
  p.scale = random.uniform(0.01, 0.5);
  p.zero_point = random.coin(0.25) ? static_cast<double>(random.integer(p.quant_min - 1, p.quant_max)) + 0.5
                                   : random.uniform(p.quant_min - 1.5, p.quant_max + 1.5);
  return p;
}

// Around the quantizer of its channel: exact ties, NaN, ±inf, ±1e30, normal values over the code range.
float random_input(rng& random, const quant_params& q) {
  const long pick = random.integer(0, 19);
  const double code = static_cast<double>(random.integer(q.quant_min - 3, q.quant_max + 3) - q.zero_point);
  const double v = pick == 0   ? std::numeric_limits<double>::quiet_NaN()
                   : pick == 1 ? (random.coin() ? 1 : -1) * std::numeric_limits<double>::infinity()
                   : pick == 2 ? (random.coin() ? 1e30 : -1e30)
                   : pick < 8  ? (code + 0.5) * q.scale
                               : random.normal(0.0, q.scale * (q.quant_max - q.quant_min) / 3);
  return static_cast<float>(v);
}

// Every rounding (stochastic: a fresh seed and stream offset) and both masks LSQ accepts.
lsq_options random_options(rng& random) {
  lsq_options o;
  o.quant.rounding = static_cast<rounding_mode>(random.integer(0, 2));
  o.quant.seed = static_cast<std::uint64_t>(random.integer(0, 1L << 40));
  o.quant.index_offset = random.coin() ? 0 : static_cast<std::uint64_t>(random.integer(0, 1L << 40));
  o.quant.mask = random.coin() ? ste_mask::rounded_code : ste_mask::float_range;
  o.gradient_scale = random.coin();
  return o;
}

// Both sides sum the same terms, each exact in double, in different orders: each of the three sums differs from the
// exact one by at most (n − 1)·2^−53·Σ|terms| (recursive summation; the GPU's tree and sequential sums are no
// worse), so two differ by twice that. inside's terms are |round(v) − v|·|dy| <= |dy| (stochastic
// rounding goes to either neighbour), below's and above's |dy|;
// d scale weighs below / above by |quant_min − z|, |quant_max − z|, d zero point by s; +4 ulps for the finish.
struct gradient_bound {
  double scale, zero_point;
};
gradient_bound lsq_bound(const quant_params& q, double abs_dy_sum, index_t n, double g) {
  const double sum_error = (2.0 * static_cast<double>(n) + 4.0) * 0x1p-53 * abs_dy_sum * g;
  const double z = q.zero_point;
  return {sum_error * (1.0 + std::fabs(q.quant_min - z) + std::fabs(q.quant_max - z)) + 1e-300,
          sum_error * q.scale * 2.0 + 1e-300};
}

template <class T>
double abs_sum(const test_matrix<T>& m, index_t channel, index_t channels, channel_axis axis) {
  double s = 0;
  for (index_t r = 0; r < m.shape.rows; ++r)
    for (index_t c = 0; c < m.shape.cols; ++c) {
      const index_t owner = axis == channel_axis::column ? c : r % channels;
      if (channel < 0 || owner == channel) s += std::fabs(static_cast<double>(m(r, c)));
    }
  return s;
}

// dx (downloaded into `dx`) against the host's `want`, bit for bit, every element of the view written.
template <class T>
void check_dx(const test_matrix<T>& x, const test_matrix<T>& dx, const std::vector<float>& want) {
  for (index_t r = 0; r < x.shape.rows; ++r) {
    for (index_t c = 0; c < x.shape.cols; ++c) {
      const float w = want[static_cast<std::size_t>(r * x.shape.stride + c)];
      if (!same_bits(dx(r, c), w)) {
        FAIL_CHECK("dx differs at row " << r << ", col " << c << ": x " << x(r, c) << ", dx " << dx(r, c) << " want "
                                        << w);
        return;
      }
      if (std::isnan(x(r, c)) && dx(r, c) != 0.0f) {
        FAIL_CHECK("dx at NaN x (row " << r << ", col " << c << ") is " << dx(r, c) << ", not 0");
        return;
      }
    }
  }
}

template <class T>
void check_y(const test_matrix<T>& x, const test_matrix<T>& y, const std::vector<float>& want) {
  for (index_t r = 0; r < x.shape.rows; ++r) {
    for (index_t c = 0; c < x.shape.cols; ++c) {
      const float w = round_to<T>(want[static_cast<std::size_t>(r * x.shape.stride + c)]);
      if (!same_bits(y(r, c), w)) {
        FAIL_CHECK("y differs at row " << r << ", col " << c << ": x " << x(r, c) << ", y " << y(r, c) << " want "
                                       << w);
        return;
      }
    }
  }
}

void check_gradients(const lsq_gradients& got, const lsq_gradients& want, const gradient_bound& bound,
                     std::size_t channel) {
  INFO("channel " << channel << ": d scale " << got.scale << " want " << want.scale << " (bound " << bound.scale
                  << "), d zero point " << got.zero_point << " want " << want.zero_point << " (bound "
                  << bound.zero_point << ")");
  CHECK(std::fabs(got.scale - want.scale) <= bound.scale);
  CHECK(std::fabs(got.zero_point - want.zero_point) <= bound.zero_point);
}

}  // namespace

TEMPLATE_TEST_CASE("CUDA LSQ forward and backward per tensor equal the CPU reference", "[cuda][lsq]",
                   QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  int cases = 0;
  for (const index_t cols : {1L, 3L, 8L, 17L, 100L, 1000L, 4099L, 20000L, random.integer(2, 3000)}) {
    for (int trial = 0; trial < 4; ++trial) {
      const learnable_qparams params = random_learnable(random);
      const lsq_options options = random_options(random);
      const quant_params q = to_quant_params<float>(params, options.quant);
      const gpu_shape s = random_gpu_shape<T>(random, cols);
      const cuda_t policy = some_policy(random, workspace);
      INFO("cols " << cols << ", rows " << s.rows << ", stride " << s.stride << ", misalign " << s.misalign
                   << ", scale " << params.scale << ", zero point " << params.zero_point << " (rounded " << q.zero_point
                   << "), codes [" << params.quant_min << ", " << params.quant_max << "], mask "
                   << (options.quant.mask == ste_mask::float_range ? "float_range" : "rounded_code") << ", rounding "
                   << static_cast<int>(options.quant.rounding) << " (seed " << options.quant.seed << ", offset "
                   << options.quant.index_offset << "), gradient scale " << options.gradient_scale << ", workspace "
                   << (policy.workspace != nullptr));
      test_matrix<T> x(s), y(s), dy(s), dx(s);
      for (index_t r = 0; r < s.rows; ++r)
        for (index_t c = 0; c < s.cols; ++c) x(r, c) = round_to<T>(random_input(random, q));
      x.upload();
      fill_normal(random, dy);
      lsq_fake_quantize(policy, x.cview(), params, y.view(), options);
      const lsq_gradients got = lsq_fake_quantize_backward(policy, x.cview(), params, dy.cview(), dx.view(), options);
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
      REQUIRE(y.download());
      REQUIRE(dx.download());

      std::vector<float> want_y(x.host.size()), want_dx(x.host.size());
      lsq_fake_quantize(cpu, x.host_view(), params, matrix_view<float>(want_y.data(), s.rows, s.cols, s.stride),
                        options);
      const lsq_gradients want =
          lsq_fake_quantize_backward(cpu, x.host_view(), params, dy.host_view(),
                                     matrix_view<float>(want_dx.data(), s.rows, s.cols, s.stride), options);
      check_y(x, y, want_y);
      check_dx(x, dx, want_dx);
      const double g = options.gradient_scale ? lsq_gradient_scale(s.rows * s.cols, q.quant_max) : 1.0;
      check_gradients(got, want, lsq_bound(q, abs_sum(dy, -1, 1, channel_axis::row), s.rows * s.cols, g), 0);
      // The gradients are finite (dy is): ±inf and NaN x add finite dy or nothing.
      CHECK(std::isfinite(got.scale));
      CHECK(std::isfinite(got.zero_point));
      ++cases;
    }
  }
  CHECK(cases == 36);
}

TEMPLATE_TEST_CASE("CUDA LSQ backward per channel equals the CPU reference along rows and columns",
                   "[cuda][lsq][channels]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  int cases = 0;
  for (const index_t cols : {1L, 5L, 8L, 100L, 1001L, 2049L, random.integer(2, 3000)}) {
    for (const channel_axis axis : {channel_axis::row, channel_axis::column}) {
      gpu_shape s = random_gpu_shape<T>(random, cols);
      const index_t channels = axis == channel_axis::column ? cols : random.integer(1, 7);
      s.rows = (s.rows + channels - 1) / channels * channels;
      const lsq_options options = random_options(random);
      std::vector<learnable_qparams> params;
      std::vector<quant_params> fixed;
      for (index_t c = 0; c < channels; ++c) {
        params.push_back(random_learnable(random));
        fixed.push_back(to_quant_params<float>(params.back(), options.quant));
      }
      const cuda_t policy = some_policy(random, workspace);
      INFO("cols " << cols << ", rows " << s.rows << ", stride " << s.stride << ", misalign " << s.misalign << ", axis "
                   << (axis == channel_axis::row ? "row" : "column") << ", channels " << channels << ", mask "
                   << (options.quant.mask == ste_mask::float_range ? "float_range" : "rounded_code") << ", rounding "
                   << static_cast<int>(options.quant.rounding) << " (seed " << options.quant.seed << ", offset "
                   << options.quant.index_offset << "), gradient scale " << options.gradient_scale << ", workspace "
                   << (policy.workspace != nullptr));
      test_matrix<T> x(s), y(s), dy(s), dx(s);
      for (index_t r = 0; r < s.rows; ++r)
        for (index_t c = 0; c < s.cols; ++c)
          x(r, c) = round_to<T>(
              random_input(random, fixed[static_cast<std::size_t>(axis == channel_axis::column ? c : r % channels)]));
      x.upload();
      fill_normal(random, dy);
      const std::span<const learnable_qparams> ps(params);
      std::vector<lsq_gradients> got(params.size(), lsq_gradients{-7.0, -7.0});
      lsq_fake_quantize(policy, x.cview(), ps, axis, y.view(), options);
      lsq_fake_quantize_backward(policy, x.cview(), ps, axis, dy.cview(), dx.view(), std::span<lsq_gradients>(got),
                                 options);
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
      REQUIRE(y.download());
      REQUIRE(dx.download());

      std::vector<float> want_y(x.host.size()), want_dx(x.host.size());
      std::vector<lsq_gradients> want(params.size());
      lsq_fake_quantize(cpu, x.host_view(), ps, axis, matrix_view<float>(want_y.data(), s.rows, s.cols, s.stride),
                        options);
      lsq_fake_quantize_backward(cpu, x.host_view(), ps, axis, dy.host_view(),
                                 matrix_view<float>(want_dx.data(), s.rows, s.cols, s.stride),
                                 std::span<lsq_gradients>(want), options);
      check_y(x, y, want_y);
      check_dx(x, dx, want_dx);
      const index_t per_channel = s.rows * s.cols / channels;
      for (std::size_t c = 0; c < params.size(); ++c) {
        const double g = options.gradient_scale ? lsq_gradient_scale(per_channel, fixed[c].quant_max) : 1.0;
        check_gradients(got[c], want[c],
                        lsq_bound(fixed[c], abs_sum(dy, static_cast<index_t>(c), channels, axis), per_channel, g), c);
      }
      ++cases;
    }
  }
  CHECK(cases == 14);
}

TEST_CASE("CUDA LSQ parameter gradients are the same bits on every call", "[cuda][lsq][determinism]") {
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  // Many blocks: per tensor (one long row after flattening, and strided rows) and per channel on both axes.
  const gpu_shape s{1500, 2003, 2008, 0};
  test_matrix<float> x(s), dy(s), dx(s);
  const learnable_qparams params = random_learnable(random);
  const quant_params q = to_quant_params<float>(params);
  for (index_t r = 0; r < s.rows; ++r)
    for (index_t c = 0; c < s.cols; ++c) x(r, c) = random_input(random, q);
  x.upload();
  fill_normal(random, dy);
  const cuda_t policy{nullptr, &workspace};
  const lsq_gradients a = lsq_fake_quantize_backward(policy, x.cview(), params, dy.cview(), dx.view());
  const lsq_gradients b = lsq_fake_quantize_backward(cuda_t{}, x.cview(), params, dy.cview(), dx.view());
  CHECK(std::memcmp(&a, &b, sizeof a) == 0);
  for (const channel_axis axis : {channel_axis::row, channel_axis::column}) {
    const std::vector<learnable_qparams> ps(static_cast<std::size_t>(axis == channel_axis::column ? s.cols : 5),
                                            params);
    std::vector<lsq_gradients> first(ps.size()), second(ps.size());
    lsq_fake_quantize_backward(policy, x.cview(), std::span<const learnable_qparams>(ps), axis, dy.cview(), dx.view(),
                               std::span<lsq_gradients>(first));
    lsq_fake_quantize_backward(policy, x.cview(), std::span<const learnable_qparams>(ps), axis, dy.cview(), dx.view(),
                               std::span<lsq_gradients>(second));
    for (std::size_t c = 0; c < ps.size(); ++c) {
      INFO("axis " << (axis == channel_axis::row ? "row" : "column") << ", channel " << c << ": d scale "
                   << first[c].scale << " then " << second[c].scale);
      REQUIRE(std::memcmp(&first[c], &second[c], sizeof(lsq_gradients)) == 0);
    }
    // Channels with equal parameters: their sums add up to the per-tensor sums (up to the order of additions).
    // Both are the same exact terms summed in two orders: twice lsq_bound's per-sum error.
    double scale_sum = 0;
    for (const lsq_gradients& g : first) scale_sum += g.scale;
    const double bound = 2 * lsq_bound(q, abs_sum(dy, -1, 1, channel_axis::row), s.rows * s.cols, 1.0).scale;
    INFO("sum over channels " << scale_sum << ", per tensor " << a.scale << ", bound " << bound);
    CHECK(std::fabs(scale_sum - a.scale) <= bound);
  }
}

TEST_CASE("CUDA LSQ argument errors name the argument and write nothing", "[cuda][lsq][errors]") {
  const gpu_shape s{4, 6, 6, 0};
  test_matrix<float> x(s), dy(s), dx(s);
  const learnable_qparams good{0.1, 3.0, 0, 15};
  learnable_qparams zero_scale = good, nan_zero = good;
  zero_scale.scale = 0.0;
  nan_zero.zero_point = std::numeric_limits<double>::quiet_NaN();
  const char* f = "lsq_fake_quantize_backward";
  CHECK_THROWS_AS(lsq_fake_quantize_backward(cuda_t{}, x.cview(), zero_scale, dy.cview(), dx.view()),
                  std::invalid_argument);
  CHECK_THROWS_WITH(lsq_fake_quantize_backward(cuda_t{}, x.cview(), zero_scale, dy.cview(), dx.view()),
                    Contains(f) && Contains("'params'") && Contains("scale"));
  CHECK_THROWS_WITH(lsq_fake_quantize_backward(cuda_t{}, x.cview(), nan_zero, dy.cview(), dx.view()),
                    Contains("'params'") && Contains("zero_point"));
  lsq_options unclipped, unknown;
  unclipped.quant.mask = ste_mask::unclipped;
  unknown.quant.rounding = static_cast<rounding_mode>(5);
  CHECK_THROWS_WITH(lsq_fake_quantize_backward(cuda_t{}, x.cview(), good, dy.cview(), dx.view(), unclipped),
                    Contains("'options'") && Contains("unclipped"));
  CHECK_THROWS_WITH(lsq_fake_quantize_backward(cuda_t{}, x.cview(), good, dy.cview(), dx.view(), unknown),
                    Contains("'options'") && Contains("rounding"));
  CHECK_THROWS_WITH(lsq_fake_quantize(cuda_t{}, x.cview(), good, dx.view(), unclipped), Contains("'options'"));
  CHECK_THROWS_WITH(
      lsq_fake_quantize_backward(cuda_t{}, x.cview(), good, matrix_view<const float>(dy.view().data, 6, 4), dx.view()),
      Contains("'dy'"));
  CHECK_THROWS_WITH(
      lsq_fake_quantize_backward(cuda_t{}, x.cview(), good, dy.cview(), matrix_view<float>(dx.view().data, 3, 6)),
      Contains("'dx'"));
  const std::vector<learnable_qparams> three(3, good), six(6, good);
  std::vector<lsq_gradients> two(2);
  CHECK_THROWS_WITH(
      lsq_fake_quantize_backward(cuda_t{}, x.cview(), std::span<const learnable_qparams>(three), channel_axis::column,
                                 dy.cview(), dx.view(), std::span<lsq_gradients>(two)),
      Contains("'params'"));
  CHECK_THROWS_WITH(
      lsq_fake_quantize_backward(cuda_t{}, x.cview(), std::span<const learnable_qparams>(six), channel_axis::column,
                                 dy.cview(), dx.view(), std::span<lsq_gradients>(two)),
      Contains("'gradients'"));
  CHECK_THROWS_WITH(
      lsq_fake_quantize_backward(cuda_t{}, x.cview(), std::span<const learnable_qparams>(three),
                                 static_cast<channel_axis>(7), dy.cview(), dx.view(), std::span<lsq_gradients>(two)),
      Contains("'axis'"));
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  CHECK(dx.download());
  for (const float v : dx.host) CHECK(v == test_matrix<float>::poison());
}

TEST_CASE("CUDA LSQ and error-metric doc snippets compile and give the CPU's results", "[cuda][lsq][doc]") {
  QSAFE_TEST_RNG(random);
  const gpu_shape s{6, 300, 300, 0};
  test_matrix<float> xs(s), ys(s), dys(s), dxs(s);
  fill_normal(random, xs);
  fill_normal(random, dys);
  const matrix_view<const float> x = xs.cview(), dy = dys.cview();
  const matrix_view<float> y = ys.view(), dx = dxs.view();
  const matrix_view<const float> host_x = std::as_const(xs).host_view(), host_dy = std::as_const(dys).host_view();
  cudaStream_t stream = nullptr;
  const learnable_qparams p{0.02, 128.4, 0, 255};
  const quant_params params = make_qparams<float>({-3.0, 3.0}, 8, quant_mode::asymmetric);
  qsafe::quant_error all = tensor_quant_error(cpu, host_x, params);
  {
    // qsafe/cuda/lsq.cuh
    qsafe::cuda_workspace workspace;
    const qsafe::cuda_t gpu{stream, &workspace};
    qsafe::lsq_fake_quantize(gpu, x, p, y);  // x, y, dy, dx: device matrix_views
    const qsafe::lsq_gradients g = qsafe::lsq_fake_quantize_backward(gpu, x, p, dy, dx, {.gradient_scale = true});
    std::vector<float> host_dx(xs.host.size());
    const lsq_gradients want = lsq_fake_quantize_backward(cpu, host_x, p, host_dy,
                                                          matrix_view<float>(host_dx.data(), s.rows, s.cols, s.stride),
                                                          {.gradient_scale = true});
    const double g_scale = lsq_gradient_scale(s.rows * s.cols, p.quant_max);
    const gradient_bound bound =
        lsq_bound(to_quant_params<float>(p), abs_sum(dys, -1, 1, channel_axis::row), s.rows * s.cols, g_scale);
    check_gradients(g, want, bound, 0);
    CHECK(g.scale != 0.0);
  }
  {
    // qsafe/cuda/metrics.cuh
    qsafe::cuda_workspace workspace;
    const qsafe::quant_error e = qsafe::tensor_quant_error(qsafe::cuda_t{stream, &workspace}, x, params);
    all.merge(e);  // with host or device results alike
    double db = all.sqnr_db();
    // Twice the same data: the SQNR of one copy (the ratio of sums does not change); float sums differ by ~1e-15.
    CHECK(all.count == 2 * s.rows * s.cols);
    CHECK(db == Approx(tensor_quant_error(cpu, host_x, params).sqnr_db()).epsilon(1e-9));
  }
}

TEST_CASE("CUDA LSQ and error metrics on large tensors, several packets in flight a thread, equal the CPU reference",
          "[cuda][lsq][metrics][large]") {
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  const cuda_t policy{nullptr, &workspace};
  // One long contiguous row (per tensor), two long strided rows (per tensor and 2 row channels), many rows of 40
  // column channels: each makes some threads take several packets (or rows) per step.
  struct large_case {
    gpu_shape shape;
    channel_axis axis;
    index_t channels;  // 0: per tensor
  };
  for (const large_case& k : {large_case{{1, 5000003, 5000003, 0}, channel_axis::row, 0},
                              large_case{{2, 2500000, 2500004, 0}, channel_axis::row, 0},
                              large_case{{2, 2500000, 2500004, 0}, channel_axis::row, 2},
                              large_case{{2000, 40, 40, 0}, channel_axis::column, 40}}) {
    const gpu_shape& s = k.shape;
    INFO("rows " << s.rows << ", cols " << s.cols << ", stride " << s.stride << ", channels " << k.channels << " along "
                 << (k.axis == channel_axis::row ? "rows" : "columns"));
    const lsq_options options = random_options(random);
    const learnable_qparams params = random_learnable(random);
    const quant_params q = to_quant_params<float>(params, options.quant);
    test_matrix<float> x(s), dy(s), dx(s);
    for (index_t r = 0; r < s.rows; ++r)
      for (index_t c = 0; c < s.cols; ++c) x(r, c) = random_input(random, q);
    x.upload();
    fill_normal(random, dy);
    std::vector<float> want_dx(x.host.size());
    const matrix_view<float> wdx(want_dx.data(), s.rows, s.cols, s.stride);
    const index_t per_channel = k.channels == 0 ? s.rows * s.cols : s.rows * s.cols / k.channels;
    const double g = options.gradient_scale ? lsq_gradient_scale(per_channel, q.quant_max) : 1.0;
    if (k.channels == 0) {
      const lsq_gradients got = lsq_fake_quantize_backward(policy, x.cview(), params, dy.cview(), dx.view(), options);
      const lsq_gradients want = lsq_fake_quantize_backward(cpu, x.host_view(), params, dy.host_view(), wdx, options);
      check_gradients(got, want, lsq_bound(q, abs_sum(dy, -1, 1, channel_axis::row), per_channel, g), 0);
    } else {
      const std::vector<learnable_qparams> ps(static_cast<std::size_t>(k.channels), params);
      std::vector<lsq_gradients> got(ps.size()), want(ps.size());
      lsq_fake_quantize_backward(policy, x.cview(), std::span<const learnable_qparams>(ps), k.axis, dy.cview(),
                                 dx.view(), std::span<lsq_gradients>(got), options);
      lsq_fake_quantize_backward(cpu, x.host_view(), std::span<const learnable_qparams>(ps), k.axis, dy.host_view(),
                                 wdx, std::span<lsq_gradients>(want), options);
      for (std::size_t c = 0; c < ps.size(); ++c)
        check_gradients(got[c], want[c],
                        lsq_bound(q, abs_sum(dy, static_cast<index_t>(c), k.channels, k.axis), per_channel, g), c);
    }
    REQUIRE(dx.download());
    check_dx(x, dx, want_dx);

    // The metrics of x (without its NaN / ±inf: they are rejected) against dx and against its fake-quantized self.
    for (float& v : x.host)
      if (!std::isfinite(v)) v = 0.5f;
    x.upload();
    const matrix_view<const float> hx = std::as_const(x).host_view(), hdx = std::as_const(dx).host_view();
    const auto bound = [&](const quant_error& got, const quant_error& want) {
      const double n = static_cast<double>(want.count), e = (2 * n + 4) * 0x1p-53;
      INFO("sum_x2 " << got.sum_x2 << " want " << want.sum_x2 << ", sum_e2 " << got.sum_e2 << " want " << want.sum_e2
                     << ", sum_xy " << got.sum_xy << " want " << want.sum_xy);
      CHECK(got.count == want.count);
      CHECK(std::fabs(got.sum_x2 - want.sum_x2) <= e * want.sum_x2);
      CHECK(std::fabs(got.sum_y2 - want.sum_y2) <= e * want.sum_y2);
      CHECK(std::fabs(got.sum_e2 - want.sum_e2) <= e * want.sum_e2);
      // Σ|x·y| <= (Σx² + Σy²)/2 bounds the terms of sum_xy.
      CHECK(std::fabs(got.sum_xy - want.sum_xy) <= e * (want.sum_x2 + want.sum_y2) / 2);
    };
    if (k.channels == 0) {
      bound(tensor_quant_error(policy, x.cview(), matrix_view<const float>(dx.cview())),
            tensor_quant_error(cpu, hx, hdx));
      bound(tensor_quant_error(policy, x.cview(), q, options.quant), tensor_quant_error(cpu, hx, q, options.quant));
    } else {
      const std::vector<quant_params> qs(static_cast<std::size_t>(k.channels), q);
      std::vector<quant_error> got(qs.size()), want(qs.size());
      channel_quant_error(policy, x.cview(), std::span<const quant_params>(qs), k.axis, std::span<quant_error>(got),
                          options.quant);
      channel_quant_error(cpu, hx, std::span<const quant_params>(qs), k.axis, std::span<quant_error>(want),
                          options.quant);
      for (std::size_t c = 0; c < qs.size(); ++c) bound(got[c], want[c]);
    }
  }
}
