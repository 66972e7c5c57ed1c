// Exact histograms observed from device memory (qsafe/cuda/histogram.cuh) against the host histogram (qsafe::cpu)
// of the very float values the GPU reads (float, half, bfloat16 widened): the whole state, bytes included, per
// tensor and per channel on both axes, on strided and misaligned views whose padding holds 12345 (a read outside
// the view would change a range or a count); GPU and host batches mixed in one histogram and merged across
// workers; NaN / ±inf policies (the host's error messages, word for word; skipped values counted); values off a
// fixed grid; the histogram estimators' choices; counts beyond 2^32 in one bin (hidden: 8 GB of device memory).

#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "qsafe/cuda/histogram.cuh"
#include "qsafe/histogram_estimators.hpp"
#include "support.cuh"
#include "support/distributions.hpp"

using namespace qsafe;
using namespace qsafe::test;
using namespace qsafe::test::gpu;
using Catch::Matchers::Contains;

namespace {

// The data of these tests: the host kinds, and values that stress the bin function.
enum class values { normal, heavy_tailed, offset, tiny, big, subnormal, edges, constant, ties };
constexpr values all_values[] = {values::normal,    values::heavy_tailed, values::offset,   values::tiny, values::big,
                                 values::subnormal, values::edges,        values::constant, values::ties};

const char* name(values v) {
  switch (v) {
    case values::normal:
      return "normal";
    case values::heavy_tailed:
      return "heavy tailed";
    case values::offset:
      return "offset";
    case values::tiny:
      return "tiny";
    case values::big:
      return "big";
    case values::subnormal:
      return "subnormals in [-1, 1]";
    case values::edges:
      return "on bin edges";
    case values::constant:
      return "constant";
    case values::ties:
      return "ties with signed zeros";
  }
  return "?";
}

// Values as T holds them, zeros made +0 (except `ties`): the sign of a zero min or max is the one thing the host
// leaves to the order values arrive in (see the header).
template <class T>
void fill(rng& random, test_matrix<T>& x, values how, index_t bins) {
  const bool half = std::is_same_v<T, __half>;
  const index_t n = x.shape.rows * x.shape.cols;
  const data_kind kind = how == values::heavy_tailed ? data_kind::heavy_tailed
                         : how == values::offset     ? data_kind::offset
                         : how == values::tiny       ? data_kind::tiny
                                                     : data_kind::normal;
  const std::vector<double> base = make_data<double>(random, kind, n);
  // edges: lo + k·(hi − lo)/bins for random k (lo and hi planted), the values nearest the grid's edges.
  const double lo = std::round(random.normal(0.0, 50.0)), width = random.uniform(0.5, 300.0);
  const double constant = random.normal(0.0, 5.0) + 0.25;
  for (index_t r = 0; r < x.shape.rows; ++r)
    for (index_t c = 0; c < x.shape.cols; ++c) {
      const auto i = static_cast<std::size_t>(r * x.shape.cols + c);
      double d = base[i];
      switch (how) {
        case values::offset:
          if (half) d -= 1e6 - 1e3;  // half's range ends at 65504
          break;
        case values::tiny:
          if (half) d *= 1e26;  // 1e-4: normal and subnormal halves
          break;
        case values::big:
          d = random.uniform(-1.0, 1.0) * (half ? 6e4 : 1e38);
          break;
        case values::subnormal:
          // Not in row 0 or column 0, so that every channel (any layout) with two values or more has a normal one:
          // a range of subnormals only is narrower than bins / FLT_MAX, and the host's grid scale overflows to inf.
          d = r > 0 && c > 0 && random.coin(0.4) ? random.uniform(-1.0, 1.0) * (half ? 6e-5 : 1.1e-38)
                                                 : random.uniform(-1.0, 1.0);
          break;
        case values::edges: {
          const double k = i == 0 ? 0.0 : i == 1 ? double(bins) : double(random.integer(0, bins));
          d = lo + k * width / double(bins);
          if (half) d = d / 8;  // within half's precision the edges are few: fine, they are still edges
          break;
        }
        case values::constant:
          d = constant;
          break;
        case values::ties:
          d = random.coin(0.2) ? (random.coin() ? -0.0 : 0.0) : double(random.integer(-3, 3));
          break;
        default:
          break;
      }
      float v = round_to<T>(static_cast<float>(d));
      if (v == 0.0f && how != values::ties) v = 0.0f;
      x(r, c) = v;
    }
  x.upload();
}

template <class T>
gpu_shape shape_for(rng& random, index_t cols, const channel_layout& layout) {
  gpu_shape s = random_gpu_shape<T>(random, cols);
  if (layout.axis == channel_axis::row) s.rows = (s.rows + layout.channels - 1) / layout.channels * layout.channels;
  return s;
}

const char* axis_name(const channel_layout& layout) {
  return layout.axis == channel_axis::row ? "row" : "column";
}

// The whole state of `got` equals `want`'s, the first difference reported: pass, NaN / ±inf counts, each channel's
// data range and grid, each channel's counts bin by bin; then, where no zero's sign is in question, the bytes
// (which add the off-grid slots, the pass-1 finite counts and the flags).
void require_same(const histogram<float>& got, const histogram<float>& want, bool bytes = true) {
  REQUIRE(got.pass() == want.pass());
  REQUIRE(got.nan_count() == want.nan_count());
  REQUIRE(got.inf_count() == want.inf_count());
  REQUIRE(got.has_grid() == want.has_grid());
  if (got.has_grid()) {
    for (index_t c = 0; c < want.layout().channels; ++c) {
      INFO("channel " << c);
      REQUIRE(got.data_range(c).lo == want.data_range(c).lo);
      REQUIRE(got.data_range(c).hi == want.data_range(c).hi);
      REQUIRE(got.grid(c).lo == want.grid(c).lo);
      REQUIRE(got.grid(c).hi == want.grid(c).hi);
      const std::vector<std::int64_t> a = got.counts(c), b = want.counts(c);
      const auto first = std::mismatch(a.begin(), a.end(), b.begin()).first - a.begin();
      INFO("first differing bin " << first << " of " << a.size());
      if (first < static_cast<std::ptrdiff_t>(a.size())) {
        const auto f = static_cast<std::size_t>(first);
        FAIL("bin " << first << ": GPU " << a[f] << ", host " << b[f] << " (grid [" << want.grid(c).lo << ", "
                    << want.grid(c).hi << "])");
      }
      REQUIRE(got.total(c) == want.total(c));
    }
  }
  if (bytes) REQUIRE(got.to_bytes() == want.to_bytes());
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no std::invalid_argument thrown)";
}

}  // namespace

TEMPLATE_TEST_CASE("a histogram observed on the GPU is the host histogram of the same values, bit for bit",
                   "[cuda][histogram]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  int checked = 0;
  for (const values how : all_values) {
    for (const index_t cols : {1L, 3L, 64L, 1001L, 4099L, random.integer(2, 30000)}) {
      const channel_layout layouts[] = {channel_layout{}, channel_layout{channel_axis::row, random.integer(2, 7)},
                                        channel_layout{channel_axis::column, cols}};
      for (const channel_layout& layout : layouts) {
        // 2048 (the default), small, 5000 (two columns' tables per block), 20000 (no table fits in shared memory:
        // global atomics); large grids with many column channels would take gigabytes.
        const bool many = layout.axis == channel_axis::column && cols > 100;
        const int pick = static_cast<int>(random.integer(0, many ? 1 : 3));
        const index_t bins = pick == 0 ? 2048 : pick == 1 ? random.integer(1, 300) : pick == 2 ? 5000 : 20000;
        const gpu_shape s = shape_for<T>(random, cols, layout);
        INFO(name(how) << ", rows " << s.rows << ", cols " << cols << ", stride " << s.stride << ", misalign "
                       << s.misalign << ", axis " << axis_name(layout) << ", channels " << layout.channels << ", bins "
                       << bins);
        test_matrix<T> x(s);
        fill(random, x, how, bins);
        histogram_options options;
        options.bins = bins;
        options.grid = random.coin(0.25) ? histogram_grid::symmetric : histogram_grid::min_max;
        histogram<float> got(layout, options), want(layout, options);
        calibrate(some_policy(random, workspace), got, x.cview());
        calibrate(cpu, want, std::as_const(x).host_view());
        require_same(got, want, how != values::ties);
        ++checked;
      }
    }
  }
  CHECK(checked == 9 * 6 * 3);
}

TEMPLATE_TEST_CASE("GPU and host batches add up to the histogram of all the data", "[cuda][histogram][merge]",
                   QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  for (int round = 0; round < 6; ++round) {
    const index_t cols = random.coin() ? random.integer(1, 40) : random.integer(100, 5000);
    const index_t channels = random.integer(1, 3);
    const channel_layout layouts[] = {channel_layout{}, channel_layout{channel_axis::row, channels},
                                      channel_layout{channel_axis::column, cols}};
    const channel_layout layout = layouts[random.integer(0, 2)];
    const index_t unit = layout.axis == channel_axis::row ? layout.channels : 1;
    const index_t rows = unit * random.integer(3, 30);
    const index_t stride = cols + random.integer(0, 5);
    const values how = round % 2 ? values::heavy_tailed : values::normal;
    INFO(name(how) << ", rows " << rows << ", cols " << cols << ", stride " << stride << ", axis " << axis_name(layout)
                   << ", channels " << layout.channels);
    test_matrix<T> x(gpu_shape{rows, cols, stride, 0});
    fill(random, x, how, 2048);
    // Three batches of whole channel groups; each pass sends each batch to the GPU or to the host at random.
    const index_t a = unit * random.integer(1, rows / unit - 2),
                  b = a + unit * random.integer(1, (rows - a) / unit - 1);
    const index_t cuts[] = {0, a, b, rows};
    auto gpu_batch = [&](int k) {
      return matrix_view<const T>(x.cview().data + cuts[k] * stride, cuts[k + 1] - cuts[k], cols, stride);
    };
    auto host_batch = [&](int k) {
      return matrix_view<const float>(x.host.data() + cuts[k] * stride, cuts[k + 1] - cuts[k], cols, stride);
    };
    const cuda_t gpu = some_policy(random, workspace);
    histogram<float> want(layout);
    calibrate(cpu, want, std::as_const(x).host_view());

    // One histogram, batches from both sides.
    histogram<float> mixed(layout);
    do {
      for (int k = 0; k < 3; ++k) {
        if (random.coin()) {
          mixed.observe(gpu, gpu_batch(k));
        } else {
          mixed.observe(simd, host_batch(k));
        }
      }
    } while (mixed.next_pass());
    require_same(mixed, want);

    // Two workers (merge()'s recipe): the GPU one sees batches 0 and 2, the host one batch 1.
    histogram<float> on_gpu(layout), on_host(layout);
    on_gpu.observe(gpu, gpu_batch(0));
    on_gpu.observe(gpu, gpu_batch(2));
    on_host.observe(cpu, host_batch(1));
    on_gpu.merge(on_host);
    on_host = on_gpu;
    on_gpu.next_pass();
    on_host.next_pass();
    on_gpu.observe(gpu, gpu_batch(0));
    on_gpu.observe(gpu, gpu_batch(2));
    on_host.observe(cpu, host_batch(1));
    on_gpu.merge(on_host);
    on_gpu.next_pass();
    require_same(on_gpu, want, false);  // a counts merge sets its flag in the bytes

    // Fixed grids (one pass): the same, through merge().
    std::vector<value_range> ranges;
    for (index_t c = 0; c < layout.channels; ++c) ranges.push_back(want.grid(c));
    histogram<float> fixed_gpu(ranges, layout), fixed_host(ranges, layout), fixed_all(ranges, layout);
    fixed_gpu.observe(gpu, gpu_batch(0));
    fixed_host.observe(simd, host_batch(1));
    fixed_gpu.observe(gpu, gpu_batch(2));
    fixed_gpu.merge(fixed_host);
    fixed_all.observe(cpu, std::as_const(x).host_view());
    require_same(fixed_gpu, fixed_all, false);
  }
}

TEMPLATE_TEST_CASE("NaN and ±inf in a GPU batch: the host's error, or skipped and counted as the host does",
                   "[cuda][histogram][errors]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  constexpr float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (const index_t cols : {1L, 7L, 1000L, random.integer(2, 5000)}) {
    for (const channel_layout layout : {channel_layout{}, channel_layout{channel_axis::row, random.integer(2, 5)},
                                        channel_layout{channel_axis::column, cols}}) {
      const gpu_shape s = shape_for<T>(random, cols, layout);
      INFO("rows " << s.rows << ", cols " << cols << ", stride " << s.stride << ", misalign " << s.misalign << ", axis "
                   << axis_name(layout) << ", channels " << layout.channels);
      const cuda_t gpu = some_policy(random, workspace);
      test_matrix<T> clean(s), dirty(s);
      fill(random, clean, values::normal, 2048);
      // The same values with some NaN and ±inf planted (at least one of each kind asked for).
      auto plant = [&](bool nans, bool infs) {
        dirty.host = clean.host;
        const index_t n = s.rows * cols;
        for (int k = 0; k < (nans ? 1 + static_cast<int>(n / 7) : 0) + (infs ? 1 + static_cast<int>(n / 9) : 0); ++k) {
          const bool is_nan = nans && (!infs || k % 2 == 0);
          dirty(random.integer(0, s.rows - 1), random.integer(0, cols - 1)) =
              is_nan ? nan : (random.coin() ? inf : -inf);
        }
        dirty.upload();
      };
      for (const int which : {0, 1, 2}) {  // NaN only, ±inf only, both
        plant(which != 1, which != 0);
        INFO((which == 0 ? "NaN" : which == 1 ? "inf" : "NaN and inf"));
        // Errors by default, in pass 1, in pass 2 and on a fixed grid: the host's message, the histogram unchanged.
        histogram_options named;
        named.name = "blocks.3.attn";
        histogram<float> gpu_h(layout, named), host_h(layout, named);
        for (int pass = 0; pass < 2; ++pass) {
          const std::vector<std::uint8_t> before = gpu_h.to_bytes();
          const std::string got = message_of([&] { gpu_h.observe(gpu, dirty.cview()); });
          const std::string want = message_of([&] { host_h.observe(cpu, std::as_const(dirty).host_view()); });
          INFO("pass " << pass + 1);
          CHECK(got == want);
          const bool has_nan = std::any_of(dirty.host.begin(), dirty.host.end(), [](float v) { return std::isnan(v); });
          CHECK_THAT(got, Contains("tensor 'blocks.3.attn'") && Contains(has_nan ? " NaN value(s)" : "infinite"));
          CHECK(gpu_h.to_bytes() == before);
          gpu_h.observe(gpu, clean.cview());
          host_h.observe(cpu, std::as_const(clean).host_view());
          gpu_h.next_pass();
          host_h.next_pass();
        }
        require_same(gpu_h, host_h);
        // Skipped and counted: the whole state as the host's, both passes and on a fixed grid.
        histogram_options skip;
        skip.nan = skip.inf = non_finite_policy::skip;
        histogram<float> got(layout, skip), want(layout, skip);
        bool empty_channel = false;
        try {
          calibrate(gpu, got, dirty.cview());
        } catch (const std::logic_error& e) {  // a channel with no finite value: next_pass throws, as on the host
          empty_channel = true;
          CHECK_THROWS_AS(calibrate(cpu, want, std::as_const(dirty).host_view()), std::logic_error);
          CHECK_THAT(e.what(), Contains("has no finite value"));
        }
        if (!empty_channel) {
          calibrate(cpu, want, std::as_const(dirty).host_view());
          require_same(got, want);
          CHECK(got.nan_count() + got.inf_count() > 0);
          std::vector<value_range> ranges;
          for (index_t c = 0; c < layout.channels; ++c) ranges.push_back(want.grid(c));
          histogram<float> fixed_got(ranges, layout, skip), fixed_want(ranges, layout, skip);
          fixed_got.observe(gpu, dirty.cview());
          fixed_want.observe(cpu, std::as_const(dirty).host_view());
          require_same(fixed_got, fixed_want);
        }
      }
    }
  }
  // A column of NaN only, skipped: pass 1 leaves that channel empty; next_pass() names it.
  test_matrix<T> x(gpu_shape{5, 3, 3, 0});
  fill(random, x, values::normal, 2048);
  for (index_t r = 0; r < 5; ++r) x(r, 1) = nan;
  x.upload();
  histogram_options skip;
  skip.nan = non_finite_policy::skip;
  histogram<float> h({channel_axis::column, 3}, skip);
  h.observe(cuda_t{}, x.cview());
  CHECK(h.nan_count() == 5);
  CHECK_THROWS_WITH(h.next_pass(), Contains("channel 1") && Contains("has no finite value"));
}

TEMPLATE_TEST_CASE("a GPU value off the grid throws the host's error and leaves the histogram unchanged",
                   "[cuda][histogram][errors]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  for (const index_t cols : {1L, 5L, 999L, random.integer(2, 5000)}) {
    for (const channel_layout layout : {channel_layout{}, channel_layout{channel_axis::row, random.integer(2, 4)},
                                        channel_layout{channel_axis::column, cols}}) {
      const gpu_shape s = shape_for<T>(random, cols, layout);
      INFO("rows " << s.rows << ", cols " << cols << ", stride " << s.stride << ", misalign " << s.misalign << ", axis "
                   << axis_name(layout) << ", channels " << layout.channels);
      const cuda_t gpu = some_policy(random, workspace);
      test_matrix<T> x(s), y(s);
      fill(random, x, values::normal, 2048);
      // Pass 1 on x on both sides: its ranges are the fixed grids below too.
      histogram<float> two_got(layout), two_want(layout);
      two_got.observe(gpu, x.cview());
      two_want.observe(cpu, std::as_const(x).host_view());
      two_got.next_pass();
      two_want.next_pass();
      std::vector<value_range> ranges;
      for (index_t c = 0; c < layout.channels; ++c) ranges.push_back(two_want.grid(c));
      // y: x with one value moved past an end of its channel's range (to a T value beyond it).
      const index_t r = random.integer(0, s.rows - 1), j = random.integer(0, cols - 1);
      const index_t c = layout.axis == channel_axis::column ? j : r % layout.channels;
      const bool above = random.coin();
      const value_range range = ranges[static_cast<std::size_t>(c)];
      const float end = static_cast<float>(above ? range.hi : range.lo);
      float outside = end;
      for (float step = 1e-3f; outside == end; step *= 2)
        outside = round_to<T>(above ? end + std::fabs(end) * step + step : end - std::fabs(end) * step - step);
      y.host = x.host;
      y(r, j) = outside;
      y.upload();
      INFO("value " << outside << " at (" << r << ", " << j << "), channel " << c << " ends at " << end);
      // A fixed grid: a batch inside it first (the state to keep), then y.
      histogram<float> got(ranges, layout), want(ranges, layout);
      got.observe(gpu, x.cview());
      want.observe(cpu, std::as_const(x).host_view());
      require_same(got, want);
      std::vector<std::uint8_t> before = got.to_bytes();
      std::string got_message = message_of([&] { got.observe(gpu, y.cview()); });
      CHECK(got_message == message_of([&] { want.observe(cpu, std::as_const(y).host_view()); }));
      CHECK_THAT(got_message, Contains("has 1 value(s) outside the histogram's grid") &&
                                  Contains("the ranges given at construction"));
      CHECK(got.to_bytes() == before);
      // Pass 2 of the two-pass histogram: y is not the batch pass 1 saw.
      before = two_got.to_bytes();
      got_message = message_of([&] { two_got.observe(gpu, y.cview()); });
      CHECK(got_message == message_of([&] { two_want.observe(cpu, std::as_const(y).host_view()); }));
      CHECK_THAT(got_message, Contains("has 1 value(s) outside") && Contains("pass 2 must see the same batches"));
      CHECK(two_got.to_bytes() == before);
      two_got.observe(gpu, x.cview());
      two_want.observe(cpu, std::as_const(x).host_view());
      two_got.next_pass();
      two_want.next_pass();
      require_same(two_got, two_want);
    }
  }
  // Both passes done: a further batch is a logic error.
  test_matrix<T> x(gpu_shape{2, 4, 4, 0});
  fill(random, x, values::normal, 2048);
  histogram<float> h;
  calibrate(cuda_t{}, h, x.cview());
  CHECK_THROWS_AS(h.observe(cuda_t{}, x.cview()), std::logic_error);
  CHECK_THROWS_WITH(h.observe(cuda_t{}, matrix_view<const T>(x.cview().data, 0, 4, 4)), Contains("'x'"));
}

TEMPLATE_TEST_CASE("the histogram estimators choose the same ranges from a GPU-observed histogram",
                   "[cuda][histogram][estimators]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  for (const values how : {values::normal, values::heavy_tailed, values::offset}) {
    const index_t cols = random.integer(3, 2000);
    for (const channel_layout layout : {channel_layout{}, channel_layout{channel_axis::column, 3}}) {
      gpu_shape s = shape_for<T>(random, layout.axis == channel_axis::column ? 3 : cols, layout);
      s.rows = std::max<index_t>(s.rows, 8);  // some values per channel to choose a range for
      const int bits = static_cast<int>(random.integer(2, 8));
      const quant_mode mode = random.coin() ? quant_mode::asymmetric : quant_mode::symmetric;
      INFO(name(how) << ", rows " << s.rows << ", cols " << s.cols << ", axis " << axis_name(layout) << ", bits "
                     << bits << ", " << (mode == quant_mode::asymmetric ? "asymmetric" : "symmetric"));
      test_matrix<T> x(s);
      fill(random, x, how, 2048);
      const cuda_t gpu = some_policy(random, workspace);
      histogram_options kl_options;
      kl_options.grid = histogram_grid::symmetric;
      kl_options.bins = 4096;
      histogram<float> got(layout), want(layout), kl_got(layout, kl_options), kl_want(layout, kl_options);
      calibrate(gpu, got, x.cview());
      calibrate(simd, want, std::as_const(x).host_view());
      calibrate(gpu, kl_got, x.cview());
      calibrate(simd, kl_want, std::as_const(x).host_view());
      require_same(got, want);
      require_same(kl_got, kl_want);
      for (index_t c = 0; c < layout.channels; ++c) {
        INFO("channel " << c);
        const value_range ranges[][2] = {{mse_range(got, c, bits, mode), mse_range(want, c, bits, mode)},
                                         {sqnr_range(got, c, bits, mode), sqnr_range(want, c, bits, mode)},
                                         {kl_range(kl_got, c, bits, mode), kl_range(kl_want, c, bits, mode)}};
        for (const auto& pair : ranges) {
          CHECK(pair[0].lo == pair[1].lo);  // the same counts: the same search, step for step
          CHECK(pair[0].hi == pair[1].hi);
          CHECK(make_qparams<float>(pair[0], bits, mode) == make_qparams<float>(pair[1], bits, mode));
        }
      }
    }
  }
}

TEST_CASE("the qsafe/cuda/histogram.cuh doc snippet compiles and gives the host's histogram",
          "[cuda][histogram][doc]") {
  QSAFE_TEST_RNG(random);
  test_matrix<__half> data(gpu_shape{40, 96, 96, 0});
  fill(random, data, values::normal, 2048);
  const matrix_view<const __half> x = data.cview();
  const matrix_view<const float> host_batch = std::as_const(data).host_view();
  cudaStream_t stream = nullptr;
  // qsafe/cuda/histogram.cuh
  qsafe::cuda_workspace scratch;  // reused from call to call
  const qsafe::cuda_t gpu{stream, &scratch};
  qsafe::histogram<float> h({qsafe::channel_axis::column, x.cols});  // per column channel, 2048 bins
  qsafe::calibrate(gpu, h, x);  // x: a matrix_view<const __half> (or float, bf16) of device memory

  qsafe::histogram<float> mixed;  // or batch by batch, from either side, in each pass
  do {
    mixed.observe(gpu, x);
    mixed.observe(qsafe::simd, host_batch);  // a matrix_view<const float> in host memory
  } while (mixed.next_pass());
  // The checks.
  histogram<float> want({channel_axis::column, 96}), twice;
  calibrate(cpu, want, host_batch);
  require_same(h, want);
  const matrix_view<const float> both[] = {host_batch, host_batch};
  calibrate(cpu, twice, std::span<const matrix_view<const float>>(both));
  require_same(mixed, twice);
}

// 2^32 + 2^15 equal bfloat16 values (8 GiB): one bin holds more than a 32-bit counter can, counted by many blocks.
// Hidden (run it by its tag, without compute-sanitizer: it reads 8 GiB twice).
TEST_CASE("a GPU histogram counts more than 2^32 values in one bin", "[.][cuda][histogram][huge]") {
  const index_t rows = (index_t{1} << 17) + 1, cols = index_t{1} << 15, n = rows * cols;
  std::size_t free_bytes = 0, total_bytes = 0;
  check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  if (free_bytes < static_cast<std::size_t>(n) * 2 + (std::size_t{1} << 30)) {
    WARN("skipped: " << free_bytes / (1 << 20) << " MiB of device memory free, the test needs 9 GiB");
    return;
  }
  device_buffer<__nv_bfloat16> x(static_cast<std::size_t>(n));
  check(cudaMemset(x.data, 0x3f, static_cast<std::size_t>(n) * 2), "cudaMemset");  // every value is 0x3f3f
  const float value = std::bit_cast<float>(0x3f3f0000u);                           // bf16 = float's top half
  cuda_workspace workspace;
  histogram<float> h;
  calibrate(cuda_t{nullptr, &workspace}, h, matrix_view<const __nv_bfloat16>(x.data, rows, cols));
  CHECK(h.data_range(0).lo == value);
  CHECK(h.data_range(0).hi == value);
  const std::vector<std::int64_t> counts = h.counts(0);
  CHECK(counts[0] == n);  // hi == lo: scale 0, every value in bin 0
  CHECK(h.total(0) == n);
}
