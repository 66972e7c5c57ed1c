// Quantizers and statistics on one CPU core: fake_quantize (forward and STE backward), the min-max pass, the
// statistics pass (moments up to the 4th) and the exact percentile pair (0.001th and 99.999th), on 2^24 and 2^28
// floats (64 MiB and 1 GiB, far beyond the caches), for the scalar reference and the xsimd backend, next to the
// yardstick measured in the same run: memcpy of the tensor (read n floats, write n floats). Counters: items =
// elements of the tensor, bytes = every tensor the op reads or writes, once. Run:
//   build/quant/bench/bench_quant --benchmark_repetitions=5 --benchmark_report_aggregates_only=true

#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "qsafe/estimators.hpp"
#include "qsafe/lsq.hpp"
#include "qsafe/metrics.hpp"
#include "qsafe/quant.hpp"
#include "qsafe/stats.hpp"
#include "support.hpp"

namespace {

using qsafe::index_t;
using qsafe::bench::set_counters;
constexpr index_t cols = 4096;  // rows of a (rows x 4096) view; the ops see the tensor as one contiguous block

struct tensors {
  std::vector<float> x, y, dy;
  explicit tensors(index_t n) : x(static_cast<std::size_t>(n)), y(x.size()), dy(x.size()) {
    std::mt19937 engine(42);
    qsafe::bench::fill_activations(x, engine);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& v : dy) v = normal(engine);
  }
};

tensors& shared(index_t n) {
  return qsafe::bench::shared_tensors<tensors>(n);
}

qsafe::matrix_view<const float> input(index_t n) {
  return {shared(n).x.data(), n / cols, cols};
}

void memcpy_yardstick(benchmark::State& state) {
  auto& t = shared(state.range(0));
  qsafe::bench::memcpy_floats(state, t.x, t.y);
}

const qsafe::quant_params params = qsafe::make_qparams<float>({-4.0, 4.0}, 8, qsafe::quant_mode::asymmetric);

template <class Policy>
void fake_quantize(benchmark::State& state, Policy policy) {
  const index_t n = state.range(0);
  auto& t = shared(n);
  const auto x = input(n);
  for (auto _ : state) {
    qsafe::fake_quantize(policy, x, params, qsafe::matrix_view<float>(t.y.data(), n / cols, cols));
    benchmark::ClobberMemory();
  }
  set_counters(state, n, 2);
}

template <class Policy>
void fake_quantize_backward(benchmark::State& state, Policy policy) {
  const index_t n = state.range(0);
  auto& t = shared(n);
  const auto x = input(n);
  for (auto _ : state) {
    qsafe::fake_quantize_backward(policy, x, params, qsafe::matrix_view<const float>(t.dy.data(), n / cols, cols),
                                  qsafe::matrix_view<float>(t.y.data(), n / cols, cols));
    benchmark::ClobberMemory();
  }
  set_counters(state, n, 3);
}

template <class Policy>
void min_max(benchmark::State& state, Policy policy) {
  const index_t n = state.range(0);
  const auto x = input(n);
  for (auto _ : state) {
    qsafe::min_max_estimator<float> estimator;
    estimator.observe(policy, x);
    benchmark::DoNotOptimize(estimator.range());
  }
  set_counters(state, n, 1);
}

template <class Policy>
void moments(benchmark::State& state, Policy policy) {
  const index_t n = state.range(0);
  const auto x = input(n);
  for (auto _ : state) benchmark::DoNotOptimize(qsafe::tensor_moments(policy, x));
  set_counters(state, n, 1);
}

template <class Policy>
void percentile_pair(benchmark::State& state, Policy policy) {
  const index_t n = state.range(0);
  const double p[2] = {0.001, 99.999};
  const auto x = input(n);
  for (auto _ : state) benchmark::DoNotOptimize(qsafe::percentiles(policy, x, std::span<const double>(p)));
  set_counters(state, n, 1);
}

// The selection's hard case: 1e6 + N(0, 1) in float sits in one or two of pass 1's bins, so every wanted rank takes
// a refinement pass.
template <class Policy>
void percentile_pair_concentrated(benchmark::State& state, Policy policy) {
  const index_t n = state.range(0);
  static const std::vector<float> offset = [n] {
    std::vector<float> v(shared(n).x);
    for (auto& x : v) x += 1e6f;
    return v;
  }();
  const double p[2] = {0.001, 99.999};
  const qsafe::matrix_view<const float> x(offset.data(), n / cols, cols);
  for (auto _ : state) benchmark::DoNotOptimize(qsafe::percentiles(policy, x, std::span<const double>(p)));
  set_counters(state, n, 1);
}

// Issue 9's fake-quant options: rounding half away from zero or stochastic (counter-based hash per element), the
// float-range STE mask; the learnable (LSQ) backward with its scale / zero-point sums; the fused error metrics.
template <class Policy>
void fake_quantize_rounding(benchmark::State& state, Policy policy, qsafe::rounding_mode rounding) {
  const index_t n = state.range(0);
  auto& t = shared(n);
  const auto x = input(n);
  const qsafe::fake_quant_options options{.rounding = rounding, .seed = 1};
  for (auto _ : state) {
    qsafe::fake_quantize(policy, x, params, qsafe::matrix_view<float>(t.y.data(), n / cols, cols), options);
    benchmark::ClobberMemory();
  }
  set_counters(state, n, 2);
}

template <class Policy>
void fake_quantize_backward_float_range(benchmark::State& state, Policy policy) {
  const index_t n = state.range(0);
  auto& t = shared(n);
  const auto x = input(n);
  const qsafe::fake_quant_options options{.mask = qsafe::ste_mask::float_range};
  for (auto _ : state) {
    qsafe::fake_quantize_backward(policy, x, params, qsafe::matrix_view<const float>(t.dy.data(), n / cols, cols),
                                  qsafe::matrix_view<float>(t.y.data(), n / cols, cols), options);
    benchmark::ClobberMemory();
  }
  set_counters(state, n, 3);
}

template <class Policy>
void lsq_backward(benchmark::State& state, Policy policy) {
  const index_t n = state.range(0);
  auto& t = shared(n);
  const auto x = input(n);
  const qsafe::learnable_qparams p{params.scale, static_cast<double>(params.zero_point), 0, 255};
  for (auto _ : state) {
    benchmark::DoNotOptimize(qsafe::lsq_fake_quantize_backward(
        policy, x, p, qsafe::matrix_view<const float>(t.dy.data(), n / cols, cols),
        qsafe::matrix_view<float>(t.y.data(), n / cols, cols), {.gradient_scale = true}));
    benchmark::ClobberMemory();
  }
  set_counters(state, n, 3);
}

// SQNR / relative error / cosine of x against fake_quantize(x), fused (reads x once, writes nothing).
template <class Policy>
void quant_error_fused(benchmark::State& state, Policy policy) {
  const index_t n = state.range(0);
  const auto x = input(n);
  for (auto _ : state) benchmark::DoNotOptimize(qsafe::tensor_quant_error(policy, x, params));
  set_counters(state, n, 1);
}

using qsafe::bench::large_size, qsafe::bench::small_size;

}  // namespace

BENCHMARK(memcpy_yardstick)->Arg(small_size)->Arg(large_size)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(fake_quantize, simd, qsafe::simd)
    ->Arg(small_size)
    ->Arg(large_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(fake_quantize, cpu, qsafe::cpu)->Arg(small_size)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(fake_quantize_backward, simd, qsafe::simd)
    ->Arg(small_size)
    ->Arg(large_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(min_max, simd, qsafe::simd)
    ->Arg(small_size)
    ->Arg(large_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(min_max, cpu, qsafe::cpu)->Arg(small_size)->Unit(benchmark::kMillisecond)->UseRealTime();
// All OpenMP threads (OMP_NUM_THREADS): blocks of rows per thread.
BENCHMARK_CAPTURE(min_max, simd_parallel, qsafe::simd_parallel)
    ->Arg(small_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(moments, simd, qsafe::simd)
    ->Arg(small_size)
    ->Arg(large_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(moments, cpu, qsafe::cpu)->Arg(small_size)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(percentile_pair, simd, qsafe::simd)
    ->Arg(small_size)
    ->Arg(large_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(percentile_pair, cpu, qsafe::cpu)->Arg(small_size)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(percentile_pair_concentrated, simd, qsafe::simd)
    ->Arg(small_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK_CAPTURE(fake_quantize_rounding, simd_half_away, qsafe::simd, qsafe::rounding_mode::half_away_from_zero)
    ->Arg(small_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(fake_quantize_rounding, simd_stochastic, qsafe::simd, qsafe::rounding_mode::stochastic)
    ->Arg(small_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(fake_quantize_rounding, cpu_stochastic, qsafe::cpu, qsafe::rounding_mode::stochastic)
    ->Arg(small_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(fake_quantize_backward_float_range, simd, qsafe::simd)
    ->Arg(small_size)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(lsq_backward, simd, qsafe::simd)->Arg(small_size)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(lsq_backward, cpu, qsafe::cpu)->Arg(small_size)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(quant_error_fused, simd, qsafe::simd)->Arg(small_size)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(quant_error_fused, cpu, qsafe::cpu)->Arg(small_size)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
