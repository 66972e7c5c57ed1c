// CUDA quantization error metrics against qsafe::cpu run on the float values the GPU reads: x against a given y and
// x against its fake-quantized version (fused), per tensor and per channel along both axes, every element type,
// awkward shapes; counts exact, sums within the summation-order bound; merging with host results; determinism;
// NaN / ±inf and argument errors as the host's.

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>
#include <stdexcept>
#include <vector>

#include "qsafe/cuda/metrics.cuh"
#include "qsafe/cuda/quant.cuh"
#include "support.cuh"

using namespace qsafe;
using namespace qsafe::test;
using namespace qsafe::test::gpu;
using Catch::Matchers::Contains;

namespace {

// Both sides add the same double terms (each rounded once by its fma) in different orders: each differs from the
// exact sum of those terms by at most (n − 1)·2^−53·Σ|terms| (recursive summation; the GPU's per-thread sums and
// fixed trees are no worse), and the fma's rounding of each term is the same on both sides up to its order, so
// |Δ| <= (2n + 4)·2^−53·Σ|terms| with Σ|terms| = Σx², Σy², Σ|x·y|, Σ(x − y)² (taken in double here).
struct error_scale {
  double x2 = 0, y2 = 0, xy = 0, e2 = 0;
  index_t n = 0;
};

void check_error(const quant_error& got, const quant_error& want, const error_scale& a, std::size_t channel) {
  const double k = (2.0 * static_cast<double>(a.n) + 4.0) * 0x1p-53;
  INFO("channel " << channel << ": count " << got.count << " want " << want.count << "; sum_x2 " << got.sum_x2
                  << " want " << want.sum_x2 << "; sum_y2 " << got.sum_y2 << " want " << want.sum_y2 << "; sum_xy "
                  << got.sum_xy << " want " << want.sum_xy << "; sum_e2 " << got.sum_e2 << " want " << want.sum_e2
                  << " (bounds " << k * a.x2 << ", " << k * a.y2 << ", " << k * a.xy << ", " << k * a.e2 << ")");
  CHECK(got.count == want.count);
  CHECK(std::fabs(got.sum_x2 - want.sum_x2) <= k * a.x2);
  CHECK(std::fabs(got.sum_y2 - want.sum_y2) <= k * a.y2);
  CHECK(std::fabs(got.sum_xy - want.sum_xy) <= k * a.xy);
  CHECK(std::fabs(got.sum_e2 - want.sum_e2) <= k * a.e2);
}

// The absolute sums of channel `channel` (-1: all) of x against y (host float arrays of the views' layout).
error_scale scales(const matrix_view<const float>& x, const matrix_view<const float>& y, index_t channel,
                   index_t channels, channel_axis axis) {
  error_scale s;
  for (index_t r = 0; r < x.rows; ++r)
    for (index_t c = 0; c < x.cols; ++c) {
      const index_t owner = axis == channel_axis::column ? c : r % channels;
      if (channel >= 0 && owner != channel) continue;
      const double a = x.row(r)[c], b = y.row(r)[c];
      s.x2 += a * a;
      s.y2 += b * b;
      s.xy += std::fabs(a * b);
      s.e2 += (a - b) * (a - b);
      ++s.n;
    }
  return s;
}

quant_params random_params(rng& random) {
  const double lo = random.uniform(-4, 1), hi = lo + random.uniform(0.1, 8);
  return make_qparams<float>({lo, hi}, static_cast<int>(random.integer(2, 10)),
                             random.coin() ? quant_mode::asymmetric : quant_mode::symmetric);
}

// x normal with some values far outside the quantizer's range (clipped), y = x plus noise (rounded to T).
template <class T>
void fill_pair(rng& random, test_matrix<T>& x, test_matrix<T>& y) {
  for (index_t r = 0; r < x.shape.rows; ++r)
    for (index_t c = 0; c < x.shape.cols; ++c) {
      x(r, c) = round_to<T>(static_cast<float>(random.coin(0.05) ? random.normal(0, 30) : random.normal(0, 2)));
      y(r, c) = round_to<T>(x(r, c) + static_cast<float>(random.normal(0, 0.05)));
    }
  x.upload();
  y.upload();
}

template <class T>
matrix_view<const float> hv(const test_matrix<T>& m) {
  return m.host_view();
}

// The host's fake-quantized x rounded to T, as the fused CUDA metrics compare against (layout of x's view).
template <class T, class Params>
std::vector<float> quantized_reference(const test_matrix<T>& x, const Params& params) {
  std::vector<float> want(x.host.size());
  const matrix_view<float> w(want.data(), x.shape.rows, x.shape.cols, x.shape.stride);
  if constexpr (std::is_same_v<Params, quant_params>) {
    fake_quantize(cpu, hv(x), params, w);
  } else {
    fake_quantize(cpu, hv(x), params.first, params.second, w);
  }
  for (float& v : want) v = round_to<T>(v);
  return want;
}

}  // namespace

TEMPLATE_TEST_CASE("CUDA quantization error metrics per tensor equal the CPU reference", "[cuda][metrics]",
                   QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  int cases = 0;
  for (const index_t cols : {1L, 3L, 8L, 17L, 100L, 1000L, 4099L, 20000L, random.integer(2, 3000)}) {
    for (int trial = 0; trial < 3; ++trial) {
      const gpu_shape s = random_gpu_shape<T>(random, cols);
      const quant_params params = random_params(random);
      const cuda_t policy = some_policy(random, workspace);
      INFO("cols " << cols << ", rows " << s.rows << ", stride " << s.stride << ", misalign " << s.misalign
                   << ", scale " << params.scale << ", zero point " << params.zero_point << ", codes ["
                   << params.quant_min << ", " << params.quant_max << "], workspace " << (policy.workspace != nullptr));
      test_matrix<T> x(s), y(s);
      fill_pair(random, x, y);
      // x against y.
      const quant_error got = tensor_quant_error(policy, x.cview(), y.cview());
      const quant_error want = tensor_quant_error(cpu, hv(x), hv(y));
      check_error(got, want, scales(hv(x), hv(y), -1, 1, channel_axis::row), 0);
      // x against its fake-quantized version, fused (nothing written: y keeps its values).
      const quant_error fused = tensor_quant_error(policy, x.cview(), params);
      const std::vector<float> q = quantized_reference(x, params);
      const matrix_view<const float> qv(q.data(), s.rows, s.cols, s.stride);
      const quant_error want_fused = tensor_quant_error(cpu, hv(x), qv);
      check_error(fused, want_fused, scales(hv(x), qv, -1, 1, channel_axis::row), 0);
      if constexpr (std::is_same_v<T, float>) {
        // For float the rounding to T is the identity: the host's own fused form is the same reference.
        check_error(fused, tensor_quant_error(cpu, hv(x), params), scales(hv(x), qv, -1, 1, channel_axis::row), 0);
      }
      CHECK(x.download());
      ++cases;
    }
  }
  CHECK(cases == 27);
}

TEMPLATE_TEST_CASE("CUDA quantization error metrics per channel equal the CPU reference along rows and columns",
                   "[cuda][metrics][channels]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  int cases = 0;
  for (const index_t cols : {1L, 5L, 8L, 100L, 1001L, 2049L, random.integer(2, 3000)}) {
    for (const channel_axis axis : {channel_axis::row, channel_axis::column}) {
      gpu_shape s = random_gpu_shape<T>(random, cols);
      const index_t channels = axis == channel_axis::column ? cols : random.integer(1, 7);
      s.rows = (s.rows + channels - 1) / channels * channels;
      std::vector<quant_params> params;
      for (index_t c = 0; c < channels; ++c) params.push_back(random_params(random));
      const cuda_t policy = some_policy(random, workspace);
      INFO("cols " << cols << ", rows " << s.rows << ", stride " << s.stride << ", misalign " << s.misalign << ", axis "
                   << (axis == channel_axis::row ? "row" : "column") << ", channels " << channels << ", workspace "
                   << (policy.workspace != nullptr));
      test_matrix<T> x(s), y(s);
      fill_pair(random, x, y);
      const auto n = static_cast<std::size_t>(channels);
      std::vector<quant_error> got(n, quant_error{-1, -1, -1, -1, -1}), want(n);
      channel_quant_error(policy, x.cview(), y.cview(), axis, std::span<quant_error>(got));
      channel_quant_error(cpu, hv(x), hv(y), axis, std::span<quant_error>(want));
      for (std::size_t c = 0; c < n; ++c)
        check_error(got[c], want[c], scales(hv(x), hv(y), static_cast<index_t>(c), channels, axis), c);

      std::vector<quant_error> fused(n, quant_error{-1, -1, -1, -1, -1}), want_fused(n);
      const std::span<const quant_params> ps(params);
      channel_quant_error(policy, x.cview(), ps, axis, std::span<quant_error>(fused));
      const std::vector<float> q = quantized_reference(x, std::make_pair(ps, axis));
      const matrix_view<const float> qv(q.data(), s.rows, s.cols, s.stride);
      channel_quant_error(cpu, hv(x), qv, axis, std::span<quant_error>(want_fused));
      for (std::size_t c = 0; c < n; ++c)
        check_error(fused[c], want_fused[c], scales(hv(x), qv, static_cast<index_t>(c), channels, axis), c);
      ++cases;
    }
  }
  CHECK(cases == 14);
}

TEST_CASE("CUDA quantization error sums merge with host sums and repeat bit for bit", "[cuda][metrics][merge]") {
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  const gpu_shape s{1200, 1537, 1540, 0};
  test_matrix<float> x(s), y(s);
  fill_pair(random, x, y);
  const quant_params params = random_params(random);
  const cuda_t policy{nullptr, &workspace};
  // The top rows on the GPU, the rest on the host: merged, they are the whole tensor's sums.
  const index_t top = 700;
  const matrix_view<const float> xd = x.cview(), yd = y.cview();
  quant_error merged = tensor_quant_error(policy, matrix_view<const float>(xd.data, top, s.cols, s.stride),
                                          matrix_view<const float>(yd.data, top, s.cols, s.stride));
  const matrix_view<const float> xh = hv(x), yh = hv(y);
  merged.merge(tensor_quant_error(cpu, matrix_view<const float>(xh.row(top), s.rows - top, s.cols, s.stride),
                                  matrix_view<const float>(yh.row(top), s.rows - top, s.cols, s.stride)));
  check_error(merged, tensor_quant_error(cpu, xh, yh), scales(xh, yh, -1, 1, channel_axis::row), 0);
  INFO("SQNR merged " << merged.sqnr_db() << " dB, relative L2 " << merged.relative_l2() << ", cosine "
                      << merged.cosine_similarity());
  CHECK(merged.count == s.rows * s.cols);
  // Two calls, with and without a workspace: the same bits.
  const quant_error a = tensor_quant_error(policy, xd, params), b = tensor_quant_error(cuda_t{}, xd, params);
  CHECK(std::memcmp(&a, &b, sizeof a) == 0);
  for (const channel_axis axis : {channel_axis::row, channel_axis::column}) {
    const std::size_t n = axis == channel_axis::column ? static_cast<std::size_t>(s.cols) : 4;
    std::vector<quant_error> first(n), second(n);
    channel_quant_error(policy, xd, yd, axis, std::span<quant_error>(first));
    channel_quant_error(policy, xd, yd, axis, std::span<quant_error>(second));
    for (std::size_t c = 0; c < n; ++c) {
      INFO("axis " << (axis == channel_axis::row ? "row" : "column") << ", channel " << c);
      REQUIRE(std::memcmp(&first[c], &second[c], sizeof(quant_error)) == 0);
    }
  }
  // Identical tensors: no error at all (SQNR +inf), exactly.
  const quant_error same = tensor_quant_error(policy, xd, xd);
  CHECK(same.sum_e2 == 0.0);
  CHECK(std::isinf(same.sqnr_db()));
  CHECK(same.cosine_similarity() == Approx(1.0).epsilon(1e-12));
}

TEST_CASE("CUDA quantization error metrics reject NaN, infinities and bad arguments naming them",
          "[cuda][metrics][errors]") {
  const gpu_shape s{5, 7, 8, 0};
  test_matrix<float> x(s), y(s);
  for (index_t r = 0; r < s.rows; ++r)
    for (index_t c = 0; c < s.cols; ++c) x(r, c) = y(r, c) = static_cast<float>(r - c) * 0.25f;
  x(1, 2) = std::numeric_limits<float>::quiet_NaN();
  x(3, 6) = std::numeric_limits<float>::infinity();
  x.upload();
  y.upload();
  const quant_params params = make_qparams<float>({-2.0, 2.0}, 8, quant_mode::asymmetric);
  CHECK_THROWS_AS(tensor_quant_error(cuda_t{}, x.cview(), y.cview()), std::invalid_argument);
  CHECK_THROWS_WITH(tensor_quant_error(cuda_t{}, x.cview(), y.cview()),
                    Contains("tensor_quant_error") && Contains("'x'") && Contains("contains 2 NaN or infinite"));
  CHECK_THROWS_WITH(tensor_quant_error(cuda_t{}, x.cview(), params), Contains("'x'") && Contains("contains 2"));
  std::vector<quant_error> four(4), seven(7);
  CHECK_THROWS_WITH(
      channel_quant_error(cuda_t{}, x.cview(), y.cview(), channel_axis::column, std::span<quant_error>(seven)),
      Contains("channel_quant_error") && Contains("'x'") && Contains("contains 2"));
  // Clean x, ±inf in y: y is named.
  x(1, 2) = 0.5f;
  x(3, 6) = -0.5f;
  y(0, 0) = -std::numeric_limits<float>::infinity();
  x.upload();
  y.upload();
  CHECK_THROWS_WITH(tensor_quant_error(cuda_t{}, x.cview(), y.cview()), Contains("'y'") && Contains("contains 1"));
  // Bad arguments.
  CHECK_THROWS_WITH(tensor_quant_error(cuda_t{}, matrix_view<const float>(x.cview().data, 0, 7), params),
                    Contains("'x'") && Contains("empty"));
  CHECK_THROWS_WITH(tensor_quant_error(cuda_t{}, x.cview(), matrix_view<const float>(y.cview().data, 7, 5)),
                    Contains("'y'"));
  CHECK_THROWS_WITH(
      channel_quant_error(cuda_t{}, x.cview(), y.cview(), channel_axis::column, std::span<quant_error>(four)),
      Contains("'out'"));
  CHECK_THROWS_WITH(
      channel_quant_error(cuda_t{}, x.cview(), y.cview(), channel_axis::row, std::span<quant_error>(four)),
      Contains("'out'") && Contains("divide"));
  const std::vector<quant_params> five(5, params), seven_params(7, params);
  std::vector<quant_error> five_out(5);
  CHECK_THROWS_WITH(channel_quant_error(cuda_t{}, x.cview(), std::span<const quant_params>(seven_params),
                                        channel_axis::column, std::span<quant_error>(five_out)),
                    Contains("'out'"));
  CHECK_THROWS_WITH(channel_quant_error(cuda_t{}, x.cview(), std::span<const quant_params>(five), channel_axis::column,
                                        std::span<quant_error>(five_out)),
                    Contains("'params'"));
  quant_params bad = params;
  bad.scale = -1.0;
  CHECK_THROWS_WITH(tensor_quant_error(cuda_t{}, x.cview(), bad), Contains("'params'") && Contains("scale"));
  fake_quant_options unknown;  // every rounding mode is accepted (as on the host); an unknown one is not
  unknown.rounding = static_cast<rounding_mode>(9);
  CHECK_THROWS_WITH(tensor_quant_error(cuda_t{}, x.cview(), params, unknown), Contains("'options'"));
  CHECK_THROWS_WITH(channel_quant_error(cuda_t{}, x.cview(), std::span<const quant_params>(seven_params),
                                        static_cast<channel_axis>(9), std::span<quant_error>(seven)),
                    Contains("'axis'"));
}
