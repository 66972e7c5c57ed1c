// Calibration histograms on one CPU core (issue 9): the counting pass of qsafe::histogram (2048 bins, 64-bit counts
// on a fixed grid) per tensor and per channel, and its min-max pass, on 2^24 and 2^28 floats, next to memcpy of the
// same tensor measured in the same run; and the time of each search on a finished histogram (qparams from counts).
// Counters: items = elements of the tensor, bytes = the tensor read once (memcpy: read and write). Run:
//   OMP_NUM_THREADS=1 build/h9a/bench/bench_calibration --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true --benchmark_filter='/16777216|search'   (one line)
// (PyTorch's HistogramObserver: 6 ns per element observed on this machine, the figure issue 9 quotes.)

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "qsafe/histogram_estimators.hpp"
#include "support.hpp"

namespace {

using qsafe::index_t;
using qsafe::bench::set_counters;
constexpr index_t cols = 4096;

struct tensors {
  std::vector<float> x, y;
  explicit tensors(index_t n) : x(static_cast<std::size_t>(n)), y(x.size()) {
    std::mt19937 engine(42);
    qsafe::bench::fill_activations(x, engine);
  }
};

tensors& shared(index_t n) {
  return qsafe::bench::shared_tensors<tensors>(n);
}

void memcpy_yardstick(benchmark::State& state) {
  auto& t = shared(state.range(0));
  qsafe::bench::memcpy_floats(state, t.x, t.y);
}

// The layouts: per tensor; per channel along columns (hidden size 768: activations [tokens, 768]); per channel
// along rows (1024 channels of 4096-long rows: a weight [out, in] per output channel).
struct case_layout {
  index_t cols;
  qsafe::channel_layout layout;
};
case_layout layout_of(int which) {
  if (which == 1) return {768, {qsafe::channel_axis::column, 768}};
  if (which == 2) return {cols, {qsafe::channel_axis::row, 1024}};
  return {cols, {}};
}

// The ranges a first pass would fix: each channel's min and max.
std::vector<qsafe::value_range> channel_ranges(const qsafe::matrix_view<const float>& x, qsafe::channel_layout l) {
  qsafe::min_max_estimator<float> minmax(l);
  minmax.observe(qsafe::simd, x);
  const auto r = minmax.ranges();
  return {r.begin(), r.end()};
}

// The counting pass (pass 2) alone: a histogram on fixed grids observes the tensor.
template <class Policy>
void histogram_count(benchmark::State& state, Policy policy, int which) {
  const index_t n = state.range(0);
  const case_layout c = layout_of(which);
  const qsafe::matrix_view<const float> x(shared(n).x.data(), n / c.cols, c.cols);
  const std::vector<qsafe::value_range> ranges = channel_ranges(x, c.layout);
  for (auto _ : state) {
    qsafe::histogram<float> h(ranges, c.layout);
    h.observe(policy, x);
    benchmark::DoNotOptimize(h.total(0));
  }
  set_counters(state, n, 1);
}

// The per-tensor counting pass on doubles (the scalar bin function: no int64 lanes for double on AVX2).
void histogram_count_double(benchmark::State& state) {
  const index_t n = state.range(0);
  static const std::vector<double> xd(shared(n).x.begin(), shared(n).x.end());
  const qsafe::matrix_view<const double> x(xd.data(), n / cols, cols);
  qsafe::min_max_estimator<double> minmax;
  minmax.observe(qsafe::simd, x);
  const std::vector<qsafe::value_range> ranges{minmax.ranges()[0]};
  for (auto _ : state) {
    qsafe::histogram<double> h(ranges, {});
    h.observe(qsafe::simd, x);
    benchmark::DoNotOptimize(h.total(0));
  }
  set_counters(state, n, 2);  // bytes: the doubles read once
}

// Yardstick: the increments alone. The slots the per-tensor kernel computes for this tensor (its bin plus the
// offset of one of eight tables, lane by lane) precomputed into an int32 array, then one ++table[slot] per value:
// the floor of any histogram that counts each value with one memory increment on this machine, with no binning.
void increment_yardstick(benchmark::State& state) {
  const index_t n = state.range(0);
  const std::vector<float>& x = shared(n).x;
  constexpr index_t bins = 2048, tables = 8;
  const index_t stride = qsafe::detail::histogram_table_stride<std::uint32_t>(bins, tables);
  const qsafe::histogram<float> h(channel_ranges(qsafe::matrix_view<const float>(x.data(), n / cols, cols), {}));
  std::vector<std::int32_t> slots(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    slots[i] = h.bin_of(0, x[i]) + static_cast<std::int32_t>(static_cast<index_t>(i % tables) * stride);
  }
  std::vector<std::uint32_t> table(static_cast<std::size_t>(tables * stride));
  for (auto _ : state) {
    std::fill(table.begin(), table.end(), 0u);
    for (const std::int32_t slot : slots) ++table[static_cast<std::size_t>(slot)];
    benchmark::DoNotOptimize(table.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, n, 1);
}

// The first pass (finite min-max with NaN / inf counts) alone.
template <class Policy>
void histogram_range_pass(benchmark::State& state, Policy policy, int which) {
  const index_t n = state.range(0);
  const case_layout c = layout_of(which);
  const qsafe::matrix_view<const float> x(shared(n).x.data(), n / c.cols, c.cols);
  for (auto _ : state) {
    qsafe::histogram<float> h(c.layout);
    h.observe(policy, x);
    benchmark::DoNotOptimize(&h);
  }
  set_counters(state, n, 1);
}

// The searches on a finished per-tensor histogram of the 2^24 tensor (2048 bins; KL: 4096 bins on a symmetric grid).
const qsafe::histogram<float>& finished(qsafe::histogram_grid grid) {
  auto make = [](qsafe::histogram_grid g) {
    qsafe::histogram_options o;
    o.grid = g;
    if (g == qsafe::histogram_grid::symmetric) o.bins = 4096;
    qsafe::histogram<float> h({}, o);
    qsafe::calibrate(qsafe::simd, h, qsafe::matrix_view<const float>(shared(index_t{1} << 24).x.data(), 4096, cols));
    return h;
  };
  static const qsafe::histogram<float> min_max = make(qsafe::histogram_grid::min_max);
  static const qsafe::histogram<float> symmetric = make(qsafe::histogram_grid::symmetric);
  return grid == qsafe::histogram_grid::min_max ? min_max : symmetric;
}

void search(benchmark::State& state, qsafe::search_criterion criterion, qsafe::quant_mode mode) {
  const int bits = static_cast<int>(state.range(0));
  const auto& h = finished(criterion == qsafe::search_criterion::kl ? qsafe::histogram_grid::symmetric
                                                                    : qsafe::histogram_grid::min_max);
  for (auto _ : state) {
    switch (criterion) {
      case qsafe::search_criterion::mse:
        benchmark::DoNotOptimize(qsafe::mse_range(h, 0, bits, mode));
        break;
      case qsafe::search_criterion::sqnr:
        benchmark::DoNotOptimize(qsafe::sqnr_range(h, 0, bits, mode, 3.0));
        break;
      case qsafe::search_criterion::kl:
        benchmark::DoNotOptimize(qsafe::kl_range(h, 0, bits, mode));
        break;
    }
  }
}

using qsafe::bench::large_size, qsafe::bench::small_size;

}  // namespace

BENCHMARK(memcpy_yardstick)->Arg(small_size)->Arg(large_size)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(histogram_count, tensor_simd, qsafe::simd, 0)
    ->Arg(small_size)
    ->Arg(large_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(increment_yardstick)->Arg(small_size)->Arg(large_size)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(histogram_count_double)->Arg(small_size)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(histogram_count, tensor_cpu, qsafe::cpu, 0)
    ->Arg(small_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(histogram_count, columns768_simd, qsafe::simd, 1)
    ->Arg(small_size)
    ->Arg(large_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(histogram_count, rows1024_simd, qsafe::simd, 2)
    ->Arg(small_size)
    ->Arg(large_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(histogram_range_pass, tensor_simd, qsafe::simd, 0)
    ->Arg(small_size)
    ->Arg(large_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(histogram_range_pass, columns768_simd, qsafe::simd, 1)
    ->Arg(small_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(search, mse_asymmetric, qsafe::search_criterion::mse, qsafe::quant_mode::asymmetric)
    ->Arg(8)
    ->Arg(4)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(search, mse_symmetric, qsafe::search_criterion::mse, qsafe::quant_mode::symmetric)
    ->Arg(8)
    ->Arg(4)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(search, sqnr_asymmetric, qsafe::search_criterion::sqnr, qsafe::quant_mode::asymmetric)
    ->Arg(8)
    ->Arg(4)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(search, kl_symmetric, qsafe::search_criterion::kl, qsafe::quant_mode::symmetric)
    ->Arg(8)
    ->Arg(4)
    ->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
