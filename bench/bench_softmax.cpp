// The softmax family on one CPU core: forward and backward of vanilla / CS / NCS at T in {128, 512, 2048,
// 8192}, 2^24 elements per tensor (64 MiB of float, well beyond the caches), for the scalar reference, the
// xsimd backend and a plain Eigen-expression version; next to the yardsticks measured in the same run: memcpy
// of the same bytes (2 tensors: read x, write y), a 3-tensor stream (read 2, write 1: the backward's traffic)
// and oneDNN's vanilla softmax when the build found it. Counters: items = elements of one tensor, bytes =
// every tensor read or written once. Run: build/release/bench/bench_softmax --benchmark_repetitions=15
// --benchmark_report_aggregates_only=true

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <cstring>
#include <random>
#include <vector>

#include "qsafe/softmax.hpp"

#if defined(QSAFE_BENCH_ONEDNN)
#include <oneapi/dnnl/dnnl.hpp>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

using qsafe::index_t;
constexpr index_t elements = index_t{1} << 24;

struct tensors {
  std::vector<float> x, y, p, dy, dx;
  explicit tensors(index_t n) : x(static_cast<std::size_t>(n)), y(x.size()), p(x.size()), dy(x.size()), dx(x.size()) {
    std::mt19937 engine(42);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (auto& v : x) v = normal(engine);
    for (auto& v : dy) v = normal(engine) / 3.0f;
  }
};

tensors& shared_tensors() {
  static tensors t(elements);
  return t;
}

void set_counters(benchmark::State& state, int tensor_count) {
  const auto n = static_cast<double>(elements);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * elements);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * elements * tensor_count *
                          static_cast<int64_t>(sizeof(float)));
  state.counters["ns_per_element"] = benchmark::Counter(n * static_cast<double>(state.iterations()),
                                                        benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

const qsafe::vanilla_softmax vanilla;
const qsafe::clipped_softmax clipped = qsafe::clipped_softmax::from_alpha(12, 512);
const qsafe::normalized_clipped_softmax normalized{1.0, 0.9};

template <class Policy, class Variant>
void forward(benchmark::State& state, Policy policy, Variant variant) {
  auto& t = shared_tensors();
  const index_t cols = state.range(0), rows = elements / cols;
  const qsafe::matrix_view<const float> x(t.x.data(), rows, cols);
  const qsafe::matrix_view<float> y(t.y.data(), rows, cols);
  for (auto _ : state) {
    qsafe::softmax_forward(policy, variant, qsafe::full_rows{}, x, y);
    benchmark::ClobberMemory();
  }
  set_counters(state, 2);
}

template <class Policy, class Variant>
void backward(benchmark::State& state, Policy policy, Variant variant) {
  auto& t = shared_tensors();
  const index_t cols = state.range(0), rows = elements / cols;
  const qsafe::matrix_view<const float> x(t.x.data(), rows, cols), dy(t.dy.data(), rows, cols);
  qsafe::softmax_forward(qsafe::simd, variant, qsafe::full_rows{}, x, qsafe::matrix_view<float>(t.y.data(), rows, cols),
                         qsafe::matrix_view<float>(t.p.data(), rows, cols));
  const qsafe::matrix_view<const float> p(t.p.data(), rows, cols);
  for (auto _ : state) {
    qsafe::softmax_backward(policy, variant, qsafe::full_rows{}, p, dy,
                            qsafe::matrix_view<float>(t.dx.data(), rows, cols));
    benchmark::ClobberMemory();
  }
  set_counters(state, 3);
}

// What a user writes with Eigen today: max, exp, normalize, then the affine map and clamp, row by row.
using row_array = Eigen::Array<float, 1, Eigen::Dynamic>;
void eigen_forward(benchmark::State& state, double zeta, double gamma, bool clip) {
  auto& t = shared_tensors();
  const index_t cols = state.range(0), rows = elements / cols;
  Eigen::Map<const Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> x(t.x.data(), rows, cols);
  Eigen::Map<Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> y(t.y.data(), rows, cols);
  const auto scale = static_cast<float>(zeta - gamma), shift = static_cast<float>(gamma);
  for (auto _ : state) {
    for (index_t r = 0; r < rows; ++r) {
      y.row(r) = (x.row(r) - x.row(r).maxCoeff()).exp();
      y.row(r) /= y.row(r).sum();
      if (clip) y.row(r) = (scale * y.row(r) + shift).max(0.0f).min(1.0f);
    }
    benchmark::ClobberMemory();
  }
  set_counters(state, 2);
}

void eigen_backward(benchmark::State& state, double zeta, double gamma, bool clip) {
  auto& t = shared_tensors();
  const index_t cols = state.range(0), rows = elements / cols;
  using map = Eigen::Map<const Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
  map p(t.p.data(), rows, cols), dy(t.dy.data(), rows, cols);
  Eigen::Map<Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> dx(t.dx.data(), rows, cols);
  const auto scale = static_cast<float>(zeta - gamma), shift = static_cast<float>(gamma);
  row_array g(cols);
  for (auto _ : state) {
    for (index_t r = 0; r < rows; ++r) {
      if (clip) {
        const row_array v = scale * p.row(r) + shift;
        g = (v >= 0.0f && v <= 1.0f).select(scale * dy.row(r), 0.0f);
      } else {
        g = dy.row(r);
      }
      dx.row(r) = p.row(r) * (g - (p.row(r) * g).sum());
    }
    benchmark::ClobberMemory();
  }
  set_counters(state, 3);
}

// Yardsticks: the memory limit for 2 and 3 tensors.
void memcpy_2_tensors(benchmark::State& state) {
  auto& t = shared_tensors();
  for (auto _ : state) {
    std::memcpy(t.y.data(), t.x.data(), t.x.size() * sizeof(float));
    benchmark::ClobberMemory();
  }
  set_counters(state, 2);
}

void stream_3_tensors(benchmark::State& state) {
  auto& t = shared_tensors();
  for (auto _ : state) {
    float* __restrict dx = t.dx.data();
    const float* __restrict a = t.p.data();
    const float* __restrict b = t.dy.data();
    for (std::size_t i = 0; i < t.dx.size(); ++i) dx[i] = a[i] + b[i];
    benchmark::ClobberMemory();
  }
  set_counters(state, 3);
}

#if defined(QSAFE_BENCH_ONEDNN)
void onednn_forward(benchmark::State& state) {
  auto& t = shared_tensors();
  const index_t cols = state.range(0), rows = elements / cols;
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const dnnl::memory::desc md({rows, cols}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab);
  dnnl::memory src(md, engine, t.x.data()), dst(md, engine, t.y.data());
  const dnnl::softmax_forward::primitive_desc pd({dnnl::prop_kind::forward_inference, md, 1}, engine);
  dnnl::softmax_forward primitive(pd);
  for (auto _ : state) {
    primitive.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
    stream.wait();
  }
  set_counters(state, 2);
}

void onednn_backward(benchmark::State& state) {
  auto& t = shared_tensors();
  const index_t cols = state.range(0), rows = elements / cols;
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const dnnl::memory::desc md({rows, cols}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab);
  dnnl::memory y(md, engine, t.p.data()), dy(md, engine, t.dy.data()), dx(md, engine, t.dx.data());
  const dnnl::softmax_forward::primitive_desc forward_pd({dnnl::prop_kind::forward_training, md, 1}, engine);
  const dnnl::softmax_backward::primitive_desc pd({md, md, 1}, engine, forward_pd);
  dnnl::softmax_backward primitive(pd);
  for (auto _ : state) {
    primitive.execute(stream, {{DNNL_ARG_DST, y}, {DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_DIFF_SRC, dx}});
    stream.wait();
  }
  set_counters(state, 3);
}
#endif

void lengths(benchmark::internal::Benchmark* b) {
  for (const int64_t t : {128, 512, 2048, 8192}) b->Arg(t);
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK(memcpy_2_tensors)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(stream_3_tensors)->Unit(benchmark::kMillisecond)->UseRealTime();
#if defined(QSAFE_BENCH_ONEDNN)
BENCHMARK(onednn_forward)->Apply(lengths);
BENCHMARK(onednn_backward)->Apply(lengths);
#endif
BENCHMARK_CAPTURE(forward, simd_vanilla, qsafe::simd, vanilla)->Apply(lengths);
BENCHMARK_CAPTURE(forward, simd_clipped, qsafe::simd, clipped)->Apply(lengths);
BENCHMARK_CAPTURE(forward, simd_normalized_clipped, qsafe::simd, normalized)->Apply(lengths);
BENCHMARK_CAPTURE(backward, simd_vanilla, qsafe::simd, vanilla)->Apply(lengths);
BENCHMARK_CAPTURE(backward, simd_clipped, qsafe::simd, clipped)->Apply(lengths);
BENCHMARK_CAPTURE(backward, simd_normalized_clipped, qsafe::simd, normalized)->Apply(lengths);
BENCHMARK_CAPTURE(forward, scalar_vanilla, qsafe::cpu, vanilla)->Apply(lengths);
BENCHMARK_CAPTURE(forward, scalar_clipped, qsafe::cpu, clipped)->Apply(lengths);
BENCHMARK_CAPTURE(forward, scalar_normalized_clipped, qsafe::cpu, normalized)->Apply(lengths);
BENCHMARK_CAPTURE(backward, scalar_clipped, qsafe::cpu, clipped)->Apply(lengths);
BENCHMARK_CAPTURE(backward, scalar_normalized_clipped, qsafe::cpu, normalized)->Apply(lengths);
BENCHMARK_CAPTURE(eigen_forward, vanilla, 1.0, 0.0, false)->Apply(lengths);
BENCHMARK_CAPTURE(eigen_forward, clipped, clipped.zeta, clipped.gamma, true)->Apply(lengths);
BENCHMARK_CAPTURE(eigen_backward, clipped, clipped.zeta, clipped.gamma, true)->Apply(lengths);

int main(int argc, char** argv) {
#if defined(_OPENMP)
  omp_set_num_threads(1);  // one core: oneDNN and everything else single-threaded
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
