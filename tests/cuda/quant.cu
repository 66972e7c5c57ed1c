// CUDA fake-quantization (per tensor and per channel) against the CPU reference: bit-identical for float, and equal to
// the float result rounded once for half / bfloat16; fresh random parameters (2 to 16 bits, both modes), inputs with
// exact ties, NaN, ±inf and huge values, awkward shapes, poisoned outputs; every rounding mode and STE mask.

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "qsafe/cuda/quant.cuh"
#include "support.cuh"

using namespace qsafe;
using namespace qsafe::test;
using namespace qsafe::test::gpu;
using Catch::Matchers::Contains;

namespace {

template <class T>
void fill_quant_inputs(rng& random, test_matrix<T>& x, const quant_params& p) {
  const double s = p.scale;
  for (index_t r = 0; r < x.shape.rows; ++r) {
    for (index_t c = 0; c < x.shape.cols; ++c) {
      const long pick = random.integer(0, 19);
      const double code = static_cast<double>(random.integer(p.quant_min - 3, p.quant_max + 3) - p.zero_point);
      double v = pick == 0   ? std::numeric_limits<double>::quiet_NaN()
                 : pick == 1 ? (random.coin() ? 1 : -1) * std::numeric_limits<double>::infinity()
                 : pick == 2 ? (random.coin() ? 1e30 : -1e30)
                 : pick < 8  ? (code + 0.5) * s  // exact ties: round half to even decides
                             : random.normal(0.0, s * (p.quant_max - p.quant_min) / 4);
      x(r, c) = round_to<T>(static_cast<float>(v));
    }
  }
  x.upload();
}

// fake_quantize and its backward on the GPU (into y, dx) and on the CPU (into wy, wdx), with the same options: per
// tensor (params[0]) without an axis, else per channel along it.
template <class T>
void fake_quantize_both(const std::vector<quant_params>& params, std::optional<channel_axis> axis,
                        const fake_quant_options& options, test_matrix<T>& x, test_matrix<T>& dy, test_matrix<T>& y,
                        test_matrix<T>& dx, matrix_view<float> wy, matrix_view<float> wdx) {
  if (!axis) {
    fake_quantize(cuda_t{}, x.cview(), params[0], y.view(), options);
    fake_quantize_backward(cuda_t{}, x.cview(), params[0], dy.cview(), dx.view(), options);
    fake_quantize(cpu, x.host_view(), params[0], wy, options);
    fake_quantize_backward(cpu, x.host_view(), params[0], dy.host_view(), wdx, options);
  } else {
    const std::span<const quant_params> ps(params);
    fake_quantize(cuda_t{}, x.cview(), ps, *axis, y.view(), options);
    fake_quantize_backward(cuda_t{}, x.cview(), ps, *axis, dy.cview(), dx.view(), options);
    fake_quantize(cpu, x.host_view(), ps, *axis, wy, options);
    fake_quantize_backward(cpu, x.host_view(), ps, *axis, dy.host_view(), wdx, options);
  }
}

// Requires the GPU's y and dx to equal the CPU's wy (rounded to T) and wdx (dy or 0: exact in T) bit for bit at
// every element of the view; returns the elements checked. The message and assertions are built only on a mismatch:
// for every element they cost more than the kernels.
template <class T>
index_t require_same_bits(const test_matrix<T>& x, const test_matrix<T>& y, const test_matrix<T>& dx,
                          matrix_view<float> wy, matrix_view<float> wdx) {
  for (index_t r = 0; r < x.shape.rows; ++r) {
    for (index_t c = 0; c < x.shape.cols; ++c) {
      if (!(same_bits(y(r, c), round_to<T>(wy(r, c))) && same_bits(dx(r, c), wdx(r, c)))) {
        INFO("row " << r << ", col " << c << ": x " << x(r, c) << ", y " << y(r, c) << " want " << round_to<T>(wy(r, c))
                    << ", dx " << dx(r, c) << " want " << wdx(r, c));
        REQUIRE(same_bits(y(r, c), round_to<T>(wy(r, c))));
        REQUIRE(same_bits(dx(r, c), wdx(r, c)));
      }
    }
  }
  return x.shape.rows * x.shape.cols;
}

}  // namespace

TEMPLATE_TEST_CASE("CUDA fake_quantize and its backward equal the CPU reference bit for bit", "[cuda][quant]",
                   QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  index_t checked = 0;
  for (const index_t cols : {1L, 3L, 8L, 17L, 100L, 1000L, 4099L, random.integer(2, 3000)}) {
    for (int trial = 0; trial < 6; ++trial) {
      const int bits = static_cast<int>(random.integer(2, 16));
      const quant_mode mode = random.coin() ? quant_mode::asymmetric : quant_mode::symmetric;
      const double lo = random.uniform(-20, 5), hi = lo + random.uniform(0, 30);
      const quant_params params = make_qparams<float>({lo, hi}, bits, mode);
      const gpu_shape s = random_gpu_shape<T>(random, cols);
      INFO("cols " << cols << ", rows " << s.rows << ", stride " << s.stride << ", misalign " << s.misalign << ", bits "
                   << bits << ", scale " << params.scale << ", zero point " << params.zero_point << ", codes ["
                   << params.quant_min << ", " << params.quant_max << "]");
      test_matrix<T> x(s), y(s), dy(s), dx(s);
      fill_quant_inputs(random, x, params);
      fill_normal(random, dy);
      fake_quantize(cuda_t{}, x.cview(), params, y.view());
      fake_quantize_backward(cuda_t{}, x.cview(), params, dy.cview(), dx.view());
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
      REQUIRE(y.download());
      REQUIRE(dx.download());

      std::vector<float> want_y(x.host.size()), want_dx(x.host.size());
      const matrix_view<float> wy(want_y.data(), s.rows, s.cols, s.stride),
          wdx(want_dx.data(), s.rows, s.cols, s.stride);
      fake_quantize(cpu, x.host_view(), params, wy);
      fake_quantize_backward(cpu, x.host_view(), params, dy.host_view(), wdx);
      checked += require_same_bits(x, y, dx, wy, wdx);
    }
  }
  CHECK(checked > 1000);
}

TEST_CASE("CUDA fake_quantize argument errors name the argument and launch nothing", "[cuda][quant][errors]") {
  const gpu_shape s{3, 4, 4, 0};
  test_matrix<float> x(s), y(s);
  quant_params bad;
  bad.scale = 0.0;
  CHECK_THROWS_WITH(fake_quantize(cuda_t{}, x.cview(), bad, y.view()), Contains("fake_quantize") && Contains("scale"));
  CHECK_THROWS_WITH(fake_quantize(cuda_t{}, x.cview(), quant_params{}, matrix_view<float>(y.view().data, 4, 3)),
                    Contains("'y'"));
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  CHECK(y.download());
  for (const float v : y.host) CHECK(v == test_matrix<float>::poison());
}

TEMPLATE_TEST_CASE("CUDA per-channel fake_quantize and its backward equal the CPU reference along rows and columns",
                   "[cuda][quant][channels]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  index_t checked = 0;
  for (const index_t cols : {1L, 5L, 8L, 100L, 1001L, random.integer(2, 3000)}) {
    for (const channel_axis axis : {channel_axis::row, channel_axis::column}) {
      gpu_shape s = random_gpu_shape<T>(random, cols);
      const index_t channels = axis == channel_axis::column ? cols : random.integer(1, 6);
      s.rows = (s.rows + channels - 1) / channels * channels;
      std::vector<quant_params> params;
      for (index_t c = 0; c < channels; ++c) {
        const double lo = random.uniform(-20, 5), hi = lo + random.uniform(0, 30);
        params.push_back(make_qparams<float>({lo, hi}, static_cast<int>(random.integer(2, 16)),
                                             random.coin() ? quant_mode::asymmetric : quant_mode::symmetric));
      }
      INFO("cols " << cols << ", rows " << s.rows << ", stride " << s.stride << ", misalign " << s.misalign << ", axis "
                   << (axis == channel_axis::row ? "row" : "column") << ", channels " << channels);
      test_matrix<T> x(s), y(s), dy(s), dx(s);
      // Inputs drawn around each element's own channel (ties, NaN, ±inf, huge values among them).
      for (index_t r = 0; r < s.rows; ++r) {
        for (index_t c = 0; c < cols; ++c) {
          const quant_params& p = params[static_cast<std::size_t>(axis == channel_axis::column ? c : r % channels)];
          const long pick = random.integer(0, 19);
          const double code = static_cast<double>(random.integer(p.quant_min - 3, p.quant_max + 3) - p.zero_point);
          const double v = pick == 0   ? std::numeric_limits<double>::quiet_NaN()
                           : pick == 1 ? std::numeric_limits<double>::infinity()
                           : pick < 8  ? (code + 0.5) * p.scale
                                       : random.normal(0.0, p.scale * (p.quant_max - p.quant_min) / 4);
          x(r, c) = round_to<T>(static_cast<float>(v));
        }
      }
      x.upload();
      fill_normal(random, dy);
      fake_quantize(some_policy(random, workspace), x.cview(), std::span<const quant_params>(params), axis, y.view());
      fake_quantize_backward(some_policy(random, workspace), x.cview(), std::span<const quant_params>(params), axis,
                             dy.cview(), dx.view());
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
      REQUIRE(y.download());
      REQUIRE(dx.download());
      std::vector<float> want_y(x.host.size()), want_dx(x.host.size());
      const matrix_view<float> wy(want_y.data(), s.rows, s.cols, s.stride),
          wdx(want_dx.data(), s.rows, s.cols, s.stride);
      fake_quantize(cpu, x.host_view(), std::span<const quant_params>(params), axis, wy);
      fake_quantize_backward(cpu, x.host_view(), std::span<const quant_params>(params), axis, dy.host_view(), wdx);
      checked += require_same_bits(x, y, dx, wy, wdx);
      // The same parameters held on the device (cuda_channel_params): the same bits.
      const cuda_channel_params resident{std::span<const quant_params>(params)};
      test_matrix<T> y_resident(s), dx_resident(s);
      fake_quantize(cuda_t{}, x.cview(), resident, axis, y_resident.view());
      fake_quantize_backward(cuda_t{}, x.cview(), resident, axis, dy.cview(), dx_resident.view());
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
      REQUIRE(y_resident.download());
      REQUIRE(dx_resident.download());
      checked += require_same_bits(x, y_resident, dx_resident, wy, wdx);
    }
  }
  CHECK(checked > 1000);
  // The host's parameter checks, naming the argument; nothing written.
  test_matrix<T> x(gpu_shape{4, 6, 6, 0}), y(gpu_shape{4, 6, 6, 0});
  const std::vector<quant_params> three(3);
  CHECK_THROWS_WITH(
      fake_quantize(cuda_t{}, x.cview(), std::span<const quant_params>(three), channel_axis::column, y.view()),
      Contains("'params'"));
  CHECK_THROWS_WITH(
      fake_quantize(cuda_t{}, x.cview(), std::span<const quant_params>(three), channel_axis::row, y.view()),
      Contains("'params'") && Contains("divide"));
  // Held on the device: checked when built, counted when used; a moved-from object holds no channels.
  std::vector<quant_params> one_bad(2);
  one_bad[1].scale = -1.0;
  CHECK_THROWS_WITH(cuda_channel_params{std::span<const quant_params>(one_bad)},
                    Contains("cuda_channel_params") && Contains("params[1]"));
  CHECK_THROWS_WITH(cuda_channel_params{std::span<const quant_params>()},
                    Contains("cuda_channel_params") && Contains("'params'"));
  cuda_channel_params resident_three{std::span<const quant_params>(three)};
  CHECK(resident_three.size() == 3);
  CHECK_THROWS_WITH(fake_quantize(cuda_t{}, x.cview(), resident_three, channel_axis::column, y.view()),
                    Contains("fake_quantize") && Contains("'params'"));
  CHECK_THROWS_WITH(fake_quantize(cuda_t{}, x.cview(), resident_three, channel_axis::row, y.view()),
                    Contains("'params'") && Contains("divide"));
  cuda_channel_params moved = std::move(resident_three);
  CHECK(moved.size() == 3);
  cuda_channel_params six{std::span<const quant_params>(std::vector<quant_params>(6))};
  moved = std::move(six);  // frees the three, takes the six
  CHECK(moved.size() == 6);
  CHECK(six.size() == 0);
  CHECK_THROWS_WITH(fake_quantize_backward(cuda_t{}, x.cview(), resident_three, channel_axis::row, x.cview(), y.view()),
                    Contains("fake_quantize_backward") && Contains("'params'"));
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  CHECK(y.download());
  for (const float v : y.host) CHECK(v == test_matrix<T>::poison());
}

TEMPLATE_TEST_CASE("CUDA fake_quantize walks of many packets per thread equal the CPU reference bit for bit",
                   "[cuda][quant][large]", QSAFE_CUDA_ELEMENTS) {
  // Walks where threads take more packets than the kernels keep in flight (the ring of stages wraps): down many rows,
  // per tensor and per channel; a flattened tensor of many blocks; last packets of rows partial, stochastic draws at
  // their indices.
  using T = TestType;
  QSAFE_TEST_RNG(random);
  struct walk {
    gpu_shape shape;
    int granularity;  // per tensor, channels along columns, along rows (3 channels)
  };
  // Past 65535 rows of blocks, threads walk more rows than their ring has stages.
  const walk walks[] = {{{1, (index_t{20} << 20) + 3, (index_t{20} << 20) + 3, 0}, 0},
                        {{300001, 5, 8, 0}, 0},
                        {{300003, 6, 8, 0}, 2},
                        {{20011, 96, 96, 0}, 1},
                        {{20013, 98, 104, 0}, 1},
                        {{9003, 4097, 4104, 0}, 2},
                        {{300001, 7, 7, 1}, 1}};
  for (const walk& w : walks) {
    const gpu_shape& s = w.shape;
    const channel_axis axis = w.granularity == 2 ? channel_axis::row : channel_axis::column;
    const index_t channels = w.granularity == 0 ? 1 : w.granularity == 1 ? s.cols : 3;
    std::vector<quant_params> params;
    for (index_t c = 0; c < channels; ++c) {
      const double lo = random.uniform(-20, 5), hi = lo + random.uniform(0, 30);
      params.push_back(make_qparams<float>({lo, hi}, static_cast<int>(random.integer(2, 12)), quant_mode::asymmetric));
    }
    fake_quant_options options;
    options.rounding = random.coin() ? rounding_mode::stochastic : rounding_mode::half_to_even;
    options.seed = static_cast<std::uint64_t>(random.integer(0, 1L << 40));
    INFO("rows " << s.rows << ", cols " << s.cols << ", stride " << s.stride << ", misalign " << s.misalign
                 << ", granularity " << w.granularity << ", rounding " << static_cast<int>(options.rounding));
    test_matrix<T> x(s), y(s), dy(s), dx(s);
    for (index_t r = 0; r < s.rows; ++r) {
      for (index_t c = 0; c < s.cols; ++c) {
        const quant_params& p = params[static_cast<std::size_t>(w.granularity == 0   ? 0
                                                                : w.granularity == 1 ? c
                                                                                     : r % channels)];
        x(r, c) = round_to<T>(static_cast<float>(random.normal(0.0, p.scale * (p.quant_max - p.quant_min) / 3)));
      }
    }
    x.upload();
    fill_normal(random, dy);
    std::vector<float> want_y(x.host.size()), want_dx(x.host.size());
    const matrix_view<float> wy(want_y.data(), s.rows, s.cols, s.stride), wdx(want_dx.data(), s.rows, s.cols, s.stride);
    fake_quantize_both(params, w.granularity == 0 ? std::nullopt : std::optional(axis), options, x, dy, y, dx, wy, wdx);
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    REQUIRE(y.download());
    REQUIRE(dx.download());
    // Counted rather than asserted per element (tens of millions of them); the first mismatch is shown.
    index_t wrong = 0;
    std::string first;
    for (index_t r = 0; r < s.rows; ++r) {
      for (index_t c = 0; c < s.cols; ++c) {
        if (same_bits(y(r, c), round_to<T>(wy(r, c))) && same_bits(dx(r, c), wdx(r, c))) continue;
        if (wrong++ == 0)
          first = "row " + std::to_string(r) + ", col " + std::to_string(c) + ": y " + std::to_string(y(r, c)) +
                  " want " + std::to_string(round_to<T>(wy(r, c))) + ", dx " + std::to_string(dx(r, c)) + " want " +
                  std::to_string(wdx(r, c));
      }
    }
    INFO("first mismatch: " << first);
    CHECK(wrong == 0);
  }
}

TEST_CASE("docs/quantization.md snippet: per-channel parameters held on the device", "[cuda][quant][doc]") {
  QSAFE_TEST_RNG(random);
  test_matrix<float> data(gpu_shape{5, 8, 8, 0}), out(gpu_shape{5, 8, 8, 0});
  fill_normal(random, data);
  std::vector<quant_params> per_channel;
  for (int c = 0; c < 8; ++c)
    per_channel.push_back(make_qparams<float>({-1.0 - 0.25 * c, 1.0}, 8, quant_mode::asymmetric));
  cudaStream_t stream = nullptr;
  const matrix_view<const float> x = data.cview();
  const matrix_view<float> y = out.view();
  // As written in the docs:
  const qsafe::cuda_channel_params w(per_channel);  // a std::vector of quant_params; once
  qsafe::fake_quantize(qsafe::cuda_t{stream}, x, w, qsafe::channel_axis::column, y);  // every step
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  REQUIRE(out.download());
  std::vector<float> want(data.host.size());
  fake_quantize(cpu, std::as_const(data).host_view(), std::span<const quant_params>(per_channel), channel_axis::column,
                matrix_view<float>(want.data(), 5, 8));
  for (index_t r = 0; r < 5; ++r)
    for (index_t c = 0; c < 8; ++c) CHECK(same_bits(out(r, c), want[static_cast<std::size_t>(r * 8 + c)]));
}

TEST_CASE("CUDA per-channel fake_quantize calls queued through one workspace each use their own parameters",
          "[cuda][quant][channels][workspace]") {
  QSAFE_TEST_RNG(random);
  // The stream is kept busy first, so the uploads queue behind it: the second call must not overwrite the staged
  // parameters of the first before its copy has run.
  const index_t big = index_t{1} << 24, rows = 64, cols = 257;
  test_matrix<float> busy_x(gpu_shape{1, big, big, 0}), busy_y(gpu_shape{1, big, big, 0});
  const quant_params busy_p = make_qparams<float>({-1.0, 1.0}, 8, quant_mode::asymmetric);
  test_matrix<float> x(gpu_shape{rows, cols, cols, 0}), y1(gpu_shape{rows, cols, cols, 0}),
      y2(gpu_shape{rows, cols, cols, 0});
  fill_normal(random, x);
  std::vector<quant_params> p1, p2;
  for (index_t c = 0; c < cols; ++c) {
    p1.push_back(make_qparams<float>({-1.0 - 0.01 * static_cast<double>(c), 1.0}, 8, quant_mode::asymmetric));
    p2.push_back(make_qparams<float>({-0.5, 0.5 + 0.02 * static_cast<double>(c)}, 4, quant_mode::asymmetric));
  }
  cuda_workspace workspace;
  const cuda_t gpu{nullptr, &workspace};
  for (int round = 0; round < 3; ++round) {
    for (int k = 0; k < 4; ++k) fake_quantize(gpu, busy_x.cview(), busy_p, busy_y.view());
    fake_quantize(gpu, x.cview(), std::span<const quant_params>(p1), channel_axis::column, y1.view());
    fake_quantize(gpu, x.cview(), std::span<const quant_params>(p2), channel_axis::column, y2.view());
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    REQUIRE(y1.download());
    REQUIRE(y2.download());
    std::vector<float> w1(x.host.size()), w2(x.host.size());
    fake_quantize(cpu, x.host_view(), std::span<const quant_params>(p1), channel_axis::column,
                  matrix_view<float>(w1.data(), rows, cols));
    fake_quantize(cpu, x.host_view(), std::span<const quant_params>(p2), channel_axis::column,
                  matrix_view<float>(w2.data(), rows, cols));
    std::size_t wrong1 = 0, wrong2 = 0;
    for (index_t r = 0; r < rows; ++r) {
      for (index_t c = 0; c < cols; ++c) {
        const auto i = static_cast<std::size_t>(r * cols + c);
        wrong1 += same_bits(y1(r, c), w1[i]) ? 0 : 1;
        wrong2 += same_bits(y2(r, c), w2[i]) ? 0 : 1;
      }
    }
    CHECK(wrong1 == 0);
    CHECK(wrong2 == 0);
  }
}

TEMPLATE_TEST_CASE(
    "CUDA fake_quantize options (rounding modes, stochastic draws, STE masks) equal the CPU's bit for bit",
    "[cuda][quant][options]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  index_t checked = 0;
  const std::pair<rounding_mode, ste_mask> settings[] = {{rounding_mode::half_away_from_zero, ste_mask::rounded_code},
                                                         {rounding_mode::stochastic, ste_mask::rounded_code},
                                                         {rounding_mode::half_to_even, ste_mask::float_range},
                                                         {rounding_mode::half_to_even, ste_mask::unclipped},
                                                         {rounding_mode::stochastic, ste_mask::float_range},
                                                         {rounding_mode::half_away_from_zero, ste_mask::unclipped}};
  for (const index_t cols : {1L, 7L, 64L, 1003L, random.integer(2, 2000)}) {
    for (const auto& [rounding, mask] : settings) {
      for (const int granularity : {0, 1, 2}) {  // per tensor, channels along columns, along rows
        gpu_shape s = random_gpu_shape<T>(random, cols);
        const channel_axis axis = granularity == 2 ? channel_axis::row : channel_axis::column;
        const index_t channels = granularity == 0 ? 1 : granularity == 1 ? cols : random.integer(1, 5);
        s.rows = (s.rows + channels - 1) / channels * channels;
        std::vector<quant_params> params;
        for (index_t c = 0; c < channels; ++c) {
          const double lo = random.uniform(-20, 5), hi = lo + random.uniform(0, 30);
          params.push_back(make_qparams<float>({lo, hi}, static_cast<int>(random.integer(2, 12)),
                                               random.coin() ? quant_mode::asymmetric : quant_mode::symmetric));
        }
        fake_quant_options options;
        options.rounding = rounding;
        options.mask = mask;
        options.seed = static_cast<std::uint64_t>(random.integer(0, 1L << 40));
        // Offsets that cross a 2^32 boundary of the stream inside the tensor (the hash keys change there).
        options.index_offset = random.coin() ? static_cast<std::uint64_t>(random.integer(0, 1000))
                                             : (std::uint64_t(1) << 32) - static_cast<std::uint64_t>(s.rows * cols / 2);
        INFO("cols " << cols << ", rows " << s.rows << ", stride " << s.stride << ", misalign " << s.misalign
                     << ", rounding " << static_cast<int>(rounding) << ", mask " << static_cast<int>(mask)
                     << ", granularity " << granularity << ", seed " << options.seed << ", offset "
                     << options.index_offset);
        test_matrix<T> x(s), y(s), dy(s), dx(s);
        for (index_t r = 0; r < s.rows; ++r) {
          for (index_t c = 0; c < cols; ++c) {
            const quant_params& p = params[static_cast<std::size_t>(granularity == 0   ? 0
                                                                    : granularity == 1 ? c
                                                                                       : r % channels)];
            const long pick = random.integer(0, 19);
            const double code = static_cast<double>(random.integer(p.quant_min - 3, p.quant_max + 3) - p.zero_point);
            const double v = pick == 0   ? std::numeric_limits<double>::quiet_NaN()
                             : pick == 1 ? -std::numeric_limits<double>::infinity()
                             : pick < 9  ? (code + (pick < 5 ? 0.5 : -0.5)) * p.scale  // ties, both signs
                                         : random.normal(0.0, p.scale * (p.quant_max - p.quant_min) / 4);
            x(r, c) = round_to<T>(static_cast<float>(v));
          }
        }
        x.upload();
        fill_normal(random, dy);
        std::vector<float> want_y(x.host.size()), want_dx(x.host.size());
        const matrix_view<float> wy(want_y.data(), s.rows, s.cols, s.stride),
            wdx(want_dx.data(), s.rows, s.cols, s.stride);
        fake_quantize_both(params, granularity == 0 ? std::nullopt : std::optional(axis), options, x, dy, y, dx, wy,
                           wdx);
        check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
        REQUIRE(y.download());
        REQUIRE(dx.download());
        checked += require_same_bits(x, y, dx, wy, wdx);
      }
    }
  }
  CHECK(checked > 1000);
  // A bad option is refused naming it, before anything is launched.
  test_matrix<T> x(gpu_shape{2, 4, 4, 0}), y(gpu_shape{2, 4, 4, 0});
  fake_quant_options bad;
  bad.rounding = static_cast<rounding_mode>(7);
  CHECK_THROWS_WITH(fake_quantize(cuda_t{}, x.cview(), quant_params{}, y.view(), bad), Contains("'options'"));
}

// The bit-for-bit test above shows the device draws what the host draws; this one that the draws are fair. Ties
// (k + 1/2)·s at scale 1/4 and 8-bit codes are exact in every element type and lie inside the range, so each goes
// to k or k + 1. (Counting ties among random values also counts those past the range, which only ever go one way.)
TEMPLATE_TEST_CASE("CUDA stochastic rounding sends ties in the range up or down about half the time each",
                   "[cuda][quant][options]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  const quant_params p{0.25, 0, -128, 127};
  const gpu_shape s{63, 257, 264, 0};
  test_matrix<T> x(s), y(s);
  for (index_t r = 0; r < s.rows; ++r) {
    for (index_t c = 0; c < s.cols; ++c) {
      x(r, c) = round_to<T>((static_cast<float>(random.integer(-128, 126)) + 0.5f) * 0.25f);
    }
  }
  x.upload();
  fake_quant_options options;
  options.rounding = rounding_mode::stochastic;
  options.seed = static_cast<std::uint64_t>(random.integer(0, 1L << 40));
  INFO("seed " << options.seed);
  fake_quantize(cuda_t{}, x.cview(), p, y.view(), options);
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  REQUIRE(y.download());
  index_t ups = 0;
  for (index_t r = 0; r < s.rows; ++r) {
    for (index_t c = 0; c < s.cols; ++c) {
      const float v = static_cast<float>(x(r, c)), got = static_cast<float>(y(r, c));
      if (!(got == v - 0.125f || got == v + 0.125f)) {
        INFO("row " << r << ", col " << c << ": x " << v << ", y " << got);
        REQUIRE((got == v - 0.125f || got == v + 0.125f));
      }
      ups += got > v ? 1 : 0;
    }
  }
  // n = 16191 fair draws: the ups lie within 6 standard deviations (6·sqrt(n)/2) of n/2.
  const double n = static_cast<double>(s.rows * s.cols);
  CHECK(std::abs(static_cast<double>(ups) - n / 2) < 3 * std::sqrt(n));
}
