// CUDA range estimation against the host estimators run with qsafe::cpu on the very values the GPU reads (float,
// half, bfloat16): per-channel min-max (tensor, rows, columns) and running min-max exactly equal; percentiles
// exactly equal (ties, ±0, small and multi-million sizes, more ranks than one selection run takes); MSE losses within
// the fp32 summation error and the same choice; padding poisoned with 12345 (a read outside the view would show);
// errors.

#include <catch2/catch.hpp>
#include <cmath>
#include <deque>
#include <limits>
#include <utility>
#include <vector>

#include "qsafe/cuda/estimators.cuh"
#include "support.cuh"
#include "support/distributions.hpp"

using namespace qsafe;
using namespace qsafe::test;
using namespace qsafe::test::gpu;
using Catch::Matchers::Contains;

namespace {

// Data for the estimators: the host tests' kinds, plus heavy ties (a few distinct integers and ±0). The offset kind
// is moved to 1e3 for half (its range ends at 65504).
enum class values { kind, ties };

template <class T>
void fill(rng& random, test_matrix<T>& x, data_kind kind, values how = values::kind) {
  const index_t n = x.shape.rows * x.shape.cols;
  const std::vector<double> v = make_data<double>(random, kind, n);
  for (index_t r = 0; r < x.shape.rows; ++r)
    for (index_t c = 0; c < x.shape.cols; ++c) {
      double d = v[static_cast<std::size_t>(r * x.shape.cols + c)];
      if (kind == data_kind::offset && std::is_same_v<T, __half>) d -= 1e6 - 1e3;
      if (how == values::ties) d = random.coin(0.2) ? (random.coin() ? -0.0 : 0.0) : double(random.integer(-3, 3));
      x(r, c) = round_to<T>(static_cast<float>(d));
    }
  x.upload();
}

template <class T>
gpu_shape shape_with_rows_multiple_of(rng& random, index_t cols, index_t channels) {
  gpu_shape s = random_gpu_shape<T>(random, cols);
  s.rows = (s.rows + channels - 1) / channels * channels;
  return s;
}

}  // namespace

TEMPLATE_TEST_CASE("CUDA channel ranges equal the host min-max estimator per tensor, per row and per column channel",
                   "[cuda][estimators][ranges]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  int checked = 0;
  for (const data_kind kind : all_data_kinds) {
    for (const index_t cols : {1L, 5L, 64L, 1001L, 4099L, random.integer(2, 30000)}) {
      const index_t row_channels = random.integer(1, 7);
      const channel_layout layouts[] = {channel_layout{}, channel_layout{channel_axis::row, row_channels},
                                        channel_layout{channel_axis::column, cols}};
      for (const channel_layout& layout : layouts) {
        const gpu_shape s =
            shape_with_rows_multiple_of<T>(random, cols, layout.axis == channel_axis::row ? layout.channels : 1);
        INFO(name(kind) << ", rows " << s.rows << ", cols " << cols << ", stride " << s.stride << ", misalign "
                        << s.misalign << ", axis " << (layout.axis == channel_axis::row ? "row" : "column")
                        << ", channels " << layout.channels);
        test_matrix<T> x(s);
        fill(random, x, kind);
        const std::vector<value_range> got = channel_ranges(some_policy(random, workspace), x.cview(), layout);
        min_max_estimator<float> want(layout);
        want.observe(cpu, std::as_const(x).host_view());
        REQUIRE(got.size() == want.ranges().size());
        for (std::size_t c = 0; c < got.size(); ++c) {
          INFO("channel " << c);
          CHECK(got[c].lo == want.ranges()[c].lo);  // min and max are exact
          CHECK(got[c].hi == want.ranges()[c].hi);
        }
        ++checked;
      }
    }
  }
  CHECK(checked == 90);
}

TEMPLATE_TEST_CASE(
    "CUDA row-channel ranges of tall matrices, whose blocks walk several rows of one channel at a time, "
    "equal the host's",
    "[cuda][estimators][ranges]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  // Rows >= 4 x the blocks along rows (528 here): the dispatcher's one-channel-per-block walk, with a ragged last
  // group of rows (rows not a multiple of 4 x blocks), odd and unaligned columns, and a planted extreme per channel.
  for (const index_t cols : {1L, 63L, 64L, 1001L}) {
    const index_t channels = random.integer(2, 9);
    const index_t rows = (random.integer(2200, 6000) + channels - 1) / channels * channels;
    const bool padded = random.coin();
    const gpu_shape s{rows, cols, padded ? cols + random.integer(1, 9) : cols, padded ? 0 : random.integer(0, 3)};
    INFO("rows " << rows << ", cols " << cols << ", stride " << s.stride << ", misalign " << s.misalign << ", channels "
                 << channels);
    test_matrix<T> x(s);
    fill(random, x, data_kind::normal);
    const index_t c0 = random.integer(0, channels - 1);
    x(random.integer(0, rows / channels - 1) * channels + c0, random.integer(0, cols - 1)) = round_to<T>(100.0f);
    x.upload();
    const channel_layout layout{channel_axis::row, channels};
    const std::vector<value_range> got = channel_ranges(cuda_t{nullptr, &workspace}, x.cview(), layout);
    min_max_estimator<float> want(layout);
    want.observe(cpu, std::as_const(x).host_view());
    REQUIRE(got.size() == want.ranges().size());
    CHECK(got[static_cast<std::size_t>(c0)].hi == 100.0);
    for (std::size_t c = 0; c < got.size(); ++c) {
      INFO("channel " << c << ": got [" << got[c].lo << ", " << got[c].hi << "], want [" << want.ranges()[c].lo << ", "
                      << want.ranges()[c].hi << "]");
      CHECK(got[c].lo == want.ranges()[c].lo);
      CHECK(got[c].hi == want.ranges()[c].hi);
    }
    // A NaN in the last row, or an infinity inside a whole packet, is found on this path too (2-byte types fold
    // whole packets in pairs, the row's last partial packet in fp32).
    x(rows - 1, cols - 1) = round_to<T>(std::numeric_limits<float>::quiet_NaN());
    x.upload();
    CHECK_THROWS_WITH(channel_ranges(cuda_t{nullptr, &workspace}, x.cview(), layout), Contains("contains 1 NaN"));
    x(rows - 1, cols - 1) = 0.0f;
    x(rows / 2, 0) = round_to<T>(-std::numeric_limits<float>::infinity());
    x.upload();
    CHECK_THROWS_WITH(channel_ranges(cuda_t{nullptr, &workspace}, x.cview(), layout), Contains("contains 1 NaN"));
    CHECK_THROWS_WITH(channel_ranges(cuda_t{nullptr, &workspace}, x.cview()), Contains("contains 1 NaN"));
    CHECK_THROWS_WITH(channel_ranges(cuda_t{nullptr, &workspace}, x.cview(), {channel_axis::column, cols}),
                      Contains("contains 1 NaN"));
  }
}

TEMPLATE_TEST_CASE("CUDA running min-max equals the host running estimator over a sequence of batches",
                   "[cuda][estimators][running]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  const double momentum = random.coin() ? 0.9 : random.uniform(0.0, 0.99);
  const index_t cols = random.integer(1, 3000), channels = random.integer(1, 4);
  for (const channel_layout layout :
       {channel_layout{}, channel_layout{channel_axis::row, channels}, channel_layout{channel_axis::column, cols}}) {
    running_min_max_estimator<float> want(momentum, layout);
    std::vector<value_range> state;
    for (int batch = 0; batch < 4; ++batch) {
      const gpu_shape s =
          shape_with_rows_multiple_of<T>(random, cols, layout.axis == channel_axis::row ? layout.channels : 1);
      test_matrix<T> x(s);
      fill(random, x, batch % 2 ? data_kind::heavy_tailed : data_kind::normal);
      observe_running_min_max(some_policy(random, workspace), x.cview(), momentum, layout, state);
      want.observe(cpu, std::as_const(x).host_view());
    }
    INFO("momentum " << momentum << ", channels " << layout.channels);
    REQUIRE(state.size() == want.ranges().size());
    for (std::size_t c = 0; c < state.size(); ++c) {
      CHECK(state[c].lo == want.ranges()[c].lo);  // the same double arithmetic on the same extremes
      CHECK(state[c].hi == want.ranges()[c].hi);
    }
  }
  std::vector<value_range> wrong(2);
  test_matrix<T> x(gpu_shape{3, 8, 8, 0});
  fill(random, x, data_kind::normal);
  CHECK_THROWS_WITH(observe_running_min_max(cuda_t{}, x.cview(), 0.9, channel_layout{}, wrong), Contains("'state'"));
  CHECK_THROWS_WITH(observe_running_min_max(cuda_t{}, x.cview(), 1.0, channel_layout{}, wrong), Contains("'momentum'"));
}

TEMPLATE_TEST_CASE("CUDA percentiles equal the host definition exactly at any size, with ties and signed zeros",
                   "[cuda][estimators][percentile]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  const std::vector<double> fixed = {0.0, 0.001, 1.0, 50.0, 99.0, 99.999, 100.0};
  int checked = 0;
  for (const data_kind kind : all_data_kinds) {
    for (const index_t cols : {1L, 2L, 7L, 1000L, 4099L, random.integer(2, 40000)}) {
      const gpu_shape s = random_gpu_shape<T>(random, cols);
      const values how = random.coin(0.3) ? values::ties : values::kind;
      test_matrix<T> x(s);
      fill(random, x, kind, how);
      // Seven fixed percentiles (14 ranks: four selection runs) and a random one.
      std::vector<double> p = fixed;
      p.push_back(random.uniform(0.0, 100.0));
      INFO(name(kind) << (how == values::ties ? " (ties)" : "") << ", rows " << s.rows << ", cols " << cols
                      << ", stride " << s.stride << ", misalign " << s.misalign << ", p " << p.back());
      const std::vector<double> got =
          percentiles(some_policy(random, workspace), x.cview(), std::span<const double>(p));
      const std::vector<double> want = percentiles(cpu, std::as_const(x).host_view(), std::span<const double>(p));
      REQUIRE(got.size() == want.size());
      for (std::size_t i = 0; i < p.size(); ++i) {
        INFO("p " << p[i]);
        CHECK(got[i] == want[i]);  // the same order statistics and the same double interpolation
      }
      CHECK(percentile(cuda_t{}, x.cview(), 37.5) == percentile(cpu, std::as_const(x).host_view(), 37.5));
      ++checked;
    }
  }
  CHECK(checked == 30);
}

TEMPLATE_TEST_CASE("CUDA percentiles of millions of values equal the host's", "[cuda][estimators][percentile][large]",
                   QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  for (const gpu_shape s : {gpu_shape{1, 4000037, 4000037, 0}, gpu_shape{517, 4111, 4113, 1}}) {
    const data_kind kind = random.coin() ? data_kind::heavy_tailed : data_kind::normal;
    INFO(name(kind) << ", rows " << s.rows << ", cols " << s.cols);
    test_matrix<T> x(s);
    fill(random, x, kind);
    const std::vector<double> p = {0.001, 0.01, 50.0, 99.99, 99.999, random.uniform(0.0, 100.0)};
    const std::vector<double> got = percentiles(some_policy(random, workspace), x.cview(), std::span<const double>(p));
    const std::vector<double> want = percentiles(simd, std::as_const(x).host_view(), std::span<const double>(p));
    for (std::size_t i = 0; i < p.size(); ++i) {
      INFO("p " << p[i]);
      CHECK(got[i] == want[i]);
    }
  }
}

TEMPLATE_TEST_CASE("CUDA MSE search gives the host estimator's losses and choice", "[cuda][estimators][mse]",
                   QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  int decided = 0;
  for (const data_kind kind : {data_kind::normal, data_kind::heavy_tailed, data_kind::offset, data_kind::constant}) {
    for (const index_t cols : {3L, 1000L, 4099L, random.integer(2, 50000)}) {
      const int bits = static_cast<int>(random.integer(2, 8));
      const quant_mode mode = random.coin() ? quant_mode::asymmetric : quant_mode::symmetric;
      const int candidates = static_cast<int>(random.integer(1, 120));
      const gpu_shape s = random_gpu_shape<T>(random, cols);
      INFO(name(kind) << ", rows " << s.rows << ", cols " << cols << ", stride " << s.stride << ", misalign "
                      << s.misalign << ", bits " << bits << ", candidates " << candidates << ", "
                      << (mode == quant_mode::asymmetric ? "asymmetric" : "symmetric"));
      test_matrix<T> x(s);
      fill(random, x, kind);
      const mse_search_result got = mse_search(some_policy(random, workspace), x.cview(), bits, mode, candidates);
      mse_estimator<float> want(bits, mode, {}, candidates);
      calibrate(cpu, want, std::as_const(x).host_view());
      REQUIRE(static_cast<int>(got.losses.size()) == candidates);
      // fp32 sums of 32 squared errors per thread (each term rounded once: 2^-24 relative; 32 terms: 32·2^-24
      // worst case), then double: 4e-6 relative to the loss, plus an absolute floor for losses near 0.
      const double scale = std::max(1e-30, want.loss(0, candidates - 1));
      auto close = [&](double a, double b) { return std::fabs(a - b) <= 4e-6 * std::fabs(b) + 1e-12 * scale; };
      for (int k = 0; k < candidates; ++k) {
        INFO("candidate " << k);
        CHECK(close(got.losses[static_cast<std::size_t>(k)], want.loss(0, k)));
      }
      // The same choice, unless the host's losses of the two choices are within that error of each other.
      const value_range chosen = want.range();
      const bool same = got.range.lo == chosen.lo && got.range.hi == chosen.hi;
      if (!same) {
        int host_best = candidates - 1;
        for (int k = candidates - 1; k >= 0; --k)
          if (want.loss(0, k) < want.loss(0, host_best)) host_best = k;
        CHECK(close(want.loss(0, got.best), want.loss(0, host_best)));
      } else {
        ++decided;
      }
    }
  }
  CHECK(decided >= 8);  // near-ties are rare: most searches must pick exactly the host's range
}

TEMPLATE_TEST_CASE("CUDA estimators reject NaN and infinities with their count, bad layouts and percentiles",
                   "[cuda][estimators][errors]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  test_matrix<T> x(gpu_shape{6, 300, 301, 1});
  fill(random, x, data_kind::normal);
  x(2, 7) = std::numeric_limits<float>::quiet_NaN();
  x(5, 299) = std::numeric_limits<float>::infinity();
  x.upload();
  CHECK_THROWS_WITH(channel_ranges(cuda_t{}, x.cview()), Contains("'x'") && Contains("contains 2 NaN or infinite"));
  CHECK_THROWS_WITH(channel_ranges(cuda_t{}, x.cview(), {channel_axis::column, 300}), Contains("contains 2 NaN"));
  CHECK_THROWS_WITH(percentiles(cuda_t{}, x.cview(), std::vector<double>{50.0}), Contains("contains 2 NaN"));
  CHECK_THROWS_WITH(mse_search(cuda_t{}, x.cview(), 8, quant_mode::symmetric), Contains("contains 2 NaN"));
  CHECK_THROWS_WITH(channel_ranges(cuda_t{}, x.cview(), {channel_axis::row, 4}), Contains("not a multiple"));
  CHECK_THROWS_WITH(channel_ranges(cuda_t{}, x.cview(), {channel_axis::column, 7}), Contains("'x'"));
  CHECK_THROWS_WITH(percentiles(cuda_t{}, x.cview(), std::vector<double>{100.5}), Contains("'p'"));
  CHECK_THROWS_WITH(mse_search(cuda_t{}, x.cview(), 1, quant_mode::symmetric), Contains("'bits'"));
  CHECK_THROWS_WITH(percentile(cuda_t{}, matrix_view<const T>(x.cview().data, 0, 3), 50.0), Contains("empty"));
}

TEMPLATE_TEST_CASE("The estimator classes fed CUDA batches give the host's results, per tensor and per channel",
                   "[cuda][estimators][classes]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  int checked = 0;
  for (const index_t cols : {1L, 9L, 64L, 301L}) {
    const index_t row_channels = random.integer(2, 5);
    for (const channel_layout& layout : {channel_layout{}, channel_layout{channel_axis::row, row_channels},
                                         channel_layout{channel_axis::column, cols}}) {
      const bool by_rows = layout.axis == channel_axis::row;
      INFO("cols " << cols << ", axis " << (by_rows ? "row" : "column") << ", channels " << layout.channels);
      // Three batches of other shapes (rows), each a multiple of the row channels.
      std::deque<test_matrix<T>> batches;  // not movable (device buffers)
      for (int b = 0; b < 3; ++b) {
        batches.emplace_back(shape_with_rows_multiple_of<T>(random, cols, by_rows ? layout.channels : 1));
        fill(random, batches.back(), b == 1 ? data_kind::heavy_tailed : data_kind::normal);
      }
      const cuda_t gpu = some_policy(random, workspace);
      min_max_estimator<float> mm_gpu(layout), mm_cpu(layout);
      running_min_max_estimator<float> run_gpu(0.9, layout), run_cpu(0.9, layout);
      percentile_estimator<float> pct_gpu(99.0, 0.9, layout), pct_cpu(99.0, 0.9, layout);
      mse_estimator<float> mse_gpu(4, quant_mode::asymmetric, layout, 40),
          mse_cpu(4, quant_mode::asymmetric, layout, 40);
      for (auto& b : batches) {
        mm_gpu.observe(gpu, b.cview());
        mm_cpu.observe(cpu, std::as_const(b).host_view());
        run_gpu.observe(gpu, b.cview());
        run_cpu.observe(cpu, std::as_const(b).host_view());
        pct_gpu.observe(gpu, b.cview());
        pct_cpu.observe(cpu, std::as_const(b).host_view());
      }
      std::vector<matrix_view<const T>> device_views;
      std::vector<matrix_view<const float>> host_views;
      for (auto& b : batches) {
        device_views.push_back(b.cview());
        host_views.push_back(std::as_const(b).host_view());
      }
      calibrate(gpu, mse_gpu, std::span<const matrix_view<const T>>(device_views));
      calibrate(cpu, mse_cpu, std::span<const matrix_view<const float>>(host_views));
      for (index_t c = 0; c < layout.channels; ++c) {
        const auto i = static_cast<std::size_t>(c);
        INFO("channel " << c);
        CHECK(mm_gpu.ranges()[i].lo == mm_cpu.ranges()[i].lo);  // exact, as min and max are
        CHECK(mm_gpu.ranges()[i].hi == mm_cpu.ranges()[i].hi);
        CHECK(run_gpu.ranges()[i].lo == run_cpu.ranges()[i].lo);  // the same double updates of exact ranges
        CHECK(run_gpu.ranges()[i].hi == run_cpu.ranges()[i].hi);
        CHECK(pct_gpu.ranges()[i].lo == pct_cpu.ranges()[i].lo);  // exact selection, the same interpolation
        CHECK(pct_gpu.ranges()[i].hi == pct_cpu.ranges()[i].hi);
        // MSE: every candidate's loss within 1e-5 relative (fp32 tiles then double on the device, ~1e-6); the
        // choice equal unless the host's two best losses are that close.
        double best = INFINITY, second = INFINITY;
        for (int k = 0; k < 40; ++k) {
          const double want = mse_cpu.loss(c, k), got = mse_gpu.loss(c, k);
          INFO("candidate " << k << ": loss " << got << " want " << want);
          CHECK(std::fabs(got - want) <= 1e-5 * want + 1e-30);
          if (want < best) {
            second = best;
            best = want;
          } else if (want < second) {
            second = want;
          }
        }
        if (second - best > 2e-5 * best) {
          CHECK(mse_gpu.ranges()[i].lo == mse_cpu.ranges()[i].lo);
          CHECK(mse_gpu.ranges()[i].hi == mse_cpu.ranges()[i].hi);
        }
      }
      // Host and device batches mix: the first batch observed on the host, the rest on the device.
      min_max_estimator<float> mixed(layout);
      mixed.observe(cpu, std::as_const(batches[0]).host_view());
      mixed.observe(gpu, batches[1].cview());
      mixed.observe(gpu, batches[2].cview());
      for (std::size_t i = 0; i < mixed.ranges().size(); ++i) {
        CHECK(mixed.ranges()[i].lo == mm_cpu.ranges()[i].lo);
        CHECK(mixed.ranges()[i].hi == mm_cpu.ranges()[i].hi);
      }
      ++checked;
    }
  }
  CHECK(checked == 12);
  // Errors name the estimator's method; the state is unchanged.
  test_matrix<T> x(gpu_shape{4, 6, 6, 0});
  fill(random, x, data_kind::normal);
  x(2, 3) = round_to<T>(std::numeric_limits<float>::quiet_NaN());
  x.upload();
  min_max_estimator<float> est;
  CHECK_THROWS_WITH(est.observe(cuda_t{}, x.cview()), Contains("min_max_estimator::observe") && Contains("1 NaN"));
  CHECK_THROWS_AS(est.ranges(), std::logic_error);
  percentile_estimator<float> pct(99.0, 0.9, channel_layout{channel_axis::column, 6});
  CHECK_THROWS_WITH(pct.observe(cuda_t{}, x.cview()), Contains("percentile_estimator::observe") && Contains("1 NaN"));
  min_max_estimator<float> wrong_layout(channel_layout{channel_axis::column, 5});
  CHECK_THROWS_WITH(wrong_layout.observe(cuda_t{}, x.cview()), Contains("'x'") && Contains("columns"));
}
