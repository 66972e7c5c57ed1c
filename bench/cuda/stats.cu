// GPU benchmark of the statistics and range-estimation ops: effective read bandwidth of the one-pass ops (the
// tensor read once) next to a device copy of the same bytes (read + write counted), histogram observe (each pass
// and both) per tensor and per column channel, and the time of the percentile selection and the MSE search. Each
// call returns its result on the host, so what is timed (CUDA events around the call) includes the final copy and
// synchronization. Calls use a cuda_workspace (the scratch memory kept between calls); the fixed cost without one
// is printed too. Median of --repeats.
//
//   bench_cuda_stats [--elements N] [--repeats R]

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "qsafe/cuda/estimators.cuh"
#include "qsafe/cuda/histogram.cuh"
#include "qsafe/cuda/stats.cuh"
#include "support.cuh"

namespace {

using qsafe::bench::check;

// Roughly normal values (sd 1.15), so that the keys crowd into few top bins as real activations do.
template <class T>
void fill(T* x, std::size_t n) {
  qsafe::bench::fill_sum_of_uniforms<<<1024, 256>>>(x, n, 7u, 1.15f);
  check(cudaDeviceSynchronize(), "fill");
}

double median_ms(int repeats, const std::function<void()>& run) {
  return qsafe::bench::median_ms(repeats, run, 2);
}

template <class T>
void bench_type(const char* dtype, std::size_t n, int repeats) {
  T *x, *y;
  check(cudaMalloc(&x, n * sizeof(T)), "cudaMalloc");
  check(cudaMalloc(&y, n * sizeof(T)), "cudaMalloc");
  fill(x, n);
  const double bytes = static_cast<double>(n) * sizeof(T);
  const auto size = static_cast<qsafe::index_t>(n);
  const qsafe::matrix_view<const T> flat(x, 1, size);
  const qsafe::index_t cols = 4096;
  const qsafe::matrix_view<const T> matrix(x, size / cols, cols);
  qsafe::cuda_workspace workspace;
  const qsafe::cuda_t gpu{nullptr, &workspace}, no_workspace{};
  const double copy = median_ms(
      repeats, [&] { check(cudaMemcpyAsync(y, x, n * sizeof(T), cudaMemcpyDeviceToDevice), "cudaMemcpyAsync"); });
  const double copy_tbps = 2 * bytes / copy * 1e-9;
  std::printf("%-9s device copy %.3f TB/s (read + write), %zu elements\n", dtype, copy_tbps, n);
  auto one_pass = [&](const char* name, auto&& run) {
    const double ms = median_ms(repeats, run);
    const double tbps = bytes / ms * 1e-9;
    std::printf("%-9s %-40s %8.3f ms %6.3f TB/s (%5.1f%% of copy)\n", dtype, name, ms, tbps, 100 * tbps / copy_tbps);
  };
  auto timed = [&](const char* name, int reps, auto&& run) {
    std::printf("%-9s %-40s %8.3f ms\n", dtype, name, median_ms(reps, run));
  };
  // The fixed cost of a call (launches, workspace, the copy of the result, the synchronization): 4096 elements.
  const qsafe::matrix_view<const T> small(x, 1, 4096);
  const std::vector<double> one = {99.0};
  timed("tensor_moments, 4096 el., no workspace", repeats, [&] { (void)qsafe::tensor_moments(no_workspace, small); });
  timed("tensor_moments, 4096 elements", repeats, [&] { (void)qsafe::tensor_moments(gpu, small); });
  timed("channel_ranges, 4096 elements", repeats, [&] { (void)qsafe::channel_ranges(gpu, small); });
  timed("percentile, 4096 elements", repeats,
        [&] { (void)qsafe::percentiles(gpu, small, std::span<const double>(one)); });
  qsafe::moments m;
  one_pass("tensor_moments", [&] { m = qsafe::tensor_moments(gpu, flat); });
  std::printf("%-9s   (mean %.6f, kurtosis %.6f)\n", dtype, m.mean, m.kurtosis());
  one_pass("channel_ranges per tensor (min-max)", [&] { (void)qsafe::channel_ranges(gpu, flat); });
  one_pass("channel_ranges 4096 column channels", [&] {
    (void)qsafe::channel_ranges(gpu, matrix, {qsafe::channel_axis::column, cols});
  });
  one_pass("channel_ranges 1024 row channels", [&] {
    (void)qsafe::channel_ranges(gpu, matrix, {qsafe::channel_axis::row, 1024});
  });
  // Histogram observe (qsafe/cuda/histogram.cuh, 2048 bins): pass 1 timed on a histogram kept in pass 1, pass 2 on
  // one kept in pass 2 (its grids from the same data), each including the copy of its result to the host and the
  // update of the host state; TB/s: the tensor's bytes once per pass.
  auto histogram_passes = [&](const char* name, qsafe::matrix_view<const T> v, qsafe::channel_layout layout) {
    qsafe::histogram<float> ranges(layout), counts(layout);
    const double pass1 = median_ms(repeats, [&] { ranges.observe(gpu, v); });
    counts.observe(gpu, v);
    counts.next_pass();
    const double pass2 = median_ms(repeats, [&] { counts.observe(gpu, v); });
    auto line = [&](const char* what, double ms, double reads) {
      char label[64];
      std::snprintf(label, sizeof label, "histogram %s, %s", name, what);
      const double tbps = reads * bytes / ms * 1e-9;
      std::printf("%-9s %-40s %8.3f ms %6.3f TB/s (%5.1f%% of copy)\n", dtype, label, ms, tbps, 100 * tbps / copy_tbps);
    };
    line("pass 1", pass1, 1);
    line("pass 2", pass2, 1);
    line("both", pass1 + pass2, 2);
  };
  histogram_passes("per tensor", flat, {});
  histogram_passes("4096 col. ch.", matrix, {qsafe::channel_axis::column, cols});
  const std::vector<double> tails = {0.001, 99.999}, median = {50.0};
  std::vector<double> got;
  timed("percentiles {0.001, 99.999} (4 ranks)", repeats,
        [&] { got = qsafe::percentiles(gpu, flat, std::span<const double>(tails)); });
  std::printf("%-9s   (%.7f, %.7f)\n", dtype, got[0], got[1]);
  timed("percentile 50", repeats, [&] { got = qsafe::percentiles(gpu, flat, std::span<const double>(median)); });
  timed("mse_search 8-bit symmetric, 100 cand.", std::max(3, repeats / 5),
        [&] { (void)qsafe::mse_search(gpu, flat, 8, qsafe::quant_mode::symmetric, 100); });
  cudaFree(x);
  cudaFree(y);
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t n = std::size_t{1} << 28;
  int repeats = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--elements")) n = std::strtoull(argv[i + 1], nullptr, 10);
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
  }
  n = n / 4096 * 4096;
  std::printf("# statistics and estimators, median of %d (CUDA events around each call, result on the host)\n",
              repeats);
  bench_type<float>("float32", n, repeats);
  bench_type<__nv_bfloat16>("bfloat16", n, repeats);
  return 0;
}
