// GPU benchmark of fake-quantization (per tensor and per channel, 8-bit asymmetric): effective bandwidth (forward x ->
// y two tensors, backward x, dy -> dx three) next to a device copy of the same bytes, CUDA events, median of --repeats
// (per-channel calls also queued back to back, next to a queued copy, and with the parameters held on the device).
//
//   bench_cuda_quant [--elements N] [--repeats R] [--csv FILE]     (CSV: op,variant,dtype,cols,impl,ms,tbps)

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "qsafe/cuda/lsq.cuh"
#include "qsafe/cuda/metrics.cuh"
#include "qsafe/cuda/quant.cuh"
#include "support.cuh"

namespace {

using qsafe::bench::check;
using qsafe::bench::median_ms;
using qsafe::bench::queued_median_ms;

template <class T>
__global__ void fill_random(T* out, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n;
       i += std::size_t{gridDim.x} * blockDim.x) {
    std::uint32_t h = static_cast<std::uint32_t>(i) * 0x9E3779B1u ^ seed;
    h ^= h >> 15;
    h *= 0x2C1B3C6Du;
    h ^= h >> 12;
    h *= 0x297A2D39u;
    h ^= h >> 15;
    out[i] = static_cast<T>(static_cast<float>(h >> 8) * 0x1p-24f * 8.0f - 4.0f);  // uniform in [-4, 4)
  }
}

template <class T>
void bench_type(const char* dtype, std::size_t n, int repeats, FILE* csv) {
  T *x, *y, *dy;
  check(cudaMalloc(&x, n * sizeof(T)), "cudaMalloc");
  check(cudaMalloc(&y, n * sizeof(T)), "cudaMalloc");
  check(cudaMalloc(&dy, n * sizeof(T)), "cudaMalloc");
  fill_random<<<1024, 256>>>(x, n, 1u);
  fill_random<<<1024, 256>>>(dy, n, 2u);
  const double bytes = static_cast<double>(n) * sizeof(T);
  const qsafe::quant_params p = qsafe::make_qparams<float>({-3.0, 3.0}, 8, qsafe::quant_mode::asymmetric);
  const qsafe::matrix_view<const T> xv(x, 1, static_cast<qsafe::index_t>(n)),
      dyv(dy, 1, static_cast<qsafe::index_t>(n));
  const qsafe::matrix_view<T> yv(y, 1, static_cast<qsafe::index_t>(n));
  const auto copy_once = [&] {
    check(cudaMemcpyAsync(y, x, n * sizeof(T), cudaMemcpyDeviceToDevice), "cudaMemcpyAsync");
  };
  const double copy = median_ms(repeats, copy_once), copy_queued = queued_median_ms(repeats, copy_once);
  const double fwd = median_ms(repeats, [&] { qsafe::fake_quantize(qsafe::cuda_t{}, xv, p, yv); });
  const double bwd = median_ms(repeats, [&] { qsafe::fake_quantize_backward(qsafe::cuda_t{}, xv, p, dyv, yv); });
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  // Per channel: the matrix as rows x 4096 columns, a channel per column, or per row (4096 channels, row r in
  // channel r % 4096).
  const auto cols = qsafe::index_t{4096}, rows = static_cast<qsafe::index_t>(n) / cols;
  const qsafe::matrix_view<const T> xm(x, rows, cols), dym(dy, rows, cols);
  const qsafe::matrix_view<T> ym(y, rows, cols);
  // Per-channel calls with a workspace (the parameters' upload is then asynchronous), one at a time from an idle
  // stream (the host's conversion and upload in the figure) and queued back to back; the forward without one too.
  qsafe::cuda_workspace workspace;
  const qsafe::cuda_t gpu{nullptr, &workspace};
  double channel_fwd[2], channel_bwd[2], channel_fwd_plain[2], queued_fwd[2], queued_bwd[2], resident_fwd[2],
      resident_bwd[2];
  for (const qsafe::channel_axis axis : {qsafe::channel_axis::column, qsafe::channel_axis::row}) {
    const qsafe::index_t channels = 4096;  // columns, or rows r % 4096 (a weight's output channels)
    std::vector<qsafe::quant_params> params;
    for (qsafe::index_t c = 0; c < channels; ++c) {
      const double hi = 2.0 + static_cast<double>(c % 7) * 0.25;
      params.push_back(qsafe::make_qparams<float>({-hi, hi}, 8, qsafe::quant_mode::asymmetric));
    }
    const std::span<const qsafe::quant_params> ps(params);
    const int a = axis == qsafe::channel_axis::column ? 0 : 1;
    channel_fwd[a] = median_ms(repeats, [&] { qsafe::fake_quantize(gpu, xm, ps, axis, ym); });
    channel_bwd[a] = median_ms(repeats, [&] { qsafe::fake_quantize_backward(gpu, xm, ps, axis, dym, ym); });
    channel_fwd_plain[a] = median_ms(repeats, [&] { qsafe::fake_quantize(qsafe::cuda_t{}, xm, ps, axis, ym); });
    queued_fwd[a] = queued_median_ms(repeats, [&] { qsafe::fake_quantize(gpu, xm, ps, axis, ym); });
    queued_bwd[a] = queued_median_ms(repeats, [&] { qsafe::fake_quantize_backward(gpu, xm, ps, axis, dym, ym); });
    const qsafe::cuda_channel_params resident(ps);
    resident_fwd[a] = median_ms(repeats, [&] { qsafe::fake_quantize(qsafe::cuda_t{}, xm, resident, axis, ym); });
    resident_bwd[a] =
        median_ms(repeats, [&] { qsafe::fake_quantize_backward(qsafe::cuda_t{}, xm, resident, axis, dym, ym); });
  }
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  const double c = 2 * bytes / copy * 1e-9, f = 2 * bytes / fwd * 1e-9, b = 3 * bytes / bwd * 1e-9;
  std::printf(
      "%-9s copy %6.3f TB/s | fake_quantize %6.3f TB/s (%5.1f%%) | fake_quantize_backward %6.3f TB/s (%5.1f%%)\n",
      dtype, c, f, 100 * f / c, b, 100 * b / c);
  for (int a = 0; a < 2; ++a) {
    const double cf = 2 * bytes / channel_fwd[a] * 1e-9, cb = 3 * bytes / channel_bwd[a] * 1e-9,
                 cp = 2 * bytes / channel_fwd_plain[a] * 1e-9;
    std::printf(
        "%-9s per channel, %-14s fake_quantize %6.3f TB/s (%5.1f%%) | backward %6.3f TB/s (%5.1f%%) | forward "
        "without a workspace %6.3f TB/s (%5.1f%%)\n",
        dtype, a == 0 ? "4096 columns" : "4096 rows", cf, 100 * cf / c, cb, 100 * cb / c, cp, 100 * cp / c);
  }
  const double cq = 2 * bytes / copy_queued * 1e-9;
  for (int a = 0; a < 2; ++a) {
    const double qf = 2 * bytes / queued_fwd[a] * 1e-9, qb = 3 * bytes / queued_bwd[a] * 1e-9;
    std::printf(
        "%-9s per channel, %-14s queued back to back: fake_quantize %6.3f TB/s (%5.1f%%) | backward %6.3f TB/s "
        "(%5.1f%%) | a queued copy %6.3f TB/s\n",
        dtype, a == 0 ? "4096 columns" : "4096 rows", qf, 100 * qf / cq, qb, 100 * qb / cq, cq);
  }
  for (int a = 0; a < 2; ++a) {
    const double rf = 2 * bytes / resident_fwd[a] * 1e-9, rb = 3 * bytes / resident_bwd[a] * 1e-9;
    std::printf(
        "%-9s per channel, %-14s parameters on the device (cuda_channel_params): fake_quantize %6.3f TB/s (%5.1f%%) | "
        "backward %6.3f TB/s (%5.1f%%)\n",
        dtype, a == 0 ? "4096 columns" : "4096 rows", rf, 100 * rf / c, rb, 100 * rb / c);
  }
  // LSQ backward (x, dy -> dx; d scale / d zero point to the host) and the fused error metrics (x read once; the
  // sums to the host), per tensor and per channel along the 4096 columns, with a workspace: each call ends with the
  // fixed-order combine, a copy and a synchronization (their fixed cost is in the figure).
  const qsafe::learnable_qparams lp{p.scale, static_cast<double>(p.zero_point) + 0.3, p.quant_min, p.quant_max};
  const std::vector<qsafe::learnable_qparams> lps(static_cast<std::size_t>(cols), lp);
  const std::vector<qsafe::quant_params> qps(static_cast<std::size_t>(cols), p);
  std::vector<qsafe::lsq_gradients> grads(lps.size());
  std::vector<qsafe::quant_error> errors(qps.size());
  const double lsq = median_ms(repeats, [&] { qsafe::lsq_fake_quantize_backward(gpu, xv, lp, dyv, yv); });
  const double lsq_channels = median_ms(repeats, [&] {
    qsafe::lsq_fake_quantize_backward(gpu, xm, std::span<const qsafe::learnable_qparams>(lps),
                                      qsafe::channel_axis::column, dym, ym, std::span<qsafe::lsq_gradients>(grads));
  });
  const double metric = median_ms(repeats, [&] { (void)qsafe::tensor_quant_error(gpu, xv, p); });
  const double metric_channels = median_ms(repeats, [&] {
    qsafe::channel_quant_error(gpu, xm, std::span<const qsafe::quant_params>(qps), qsafe::channel_axis::column,
                               std::span<qsafe::quant_error>(errors));
  });
  const double l = 3 * bytes / lsq * 1e-9, lc = 3 * bytes / lsq_channels * 1e-9, m = bytes / metric * 1e-9,
               mc = bytes / metric_channels * 1e-9;
  std::printf("%-9s lsq_fake_quantize_backward %6.3f TB/s (%5.1f%%) | per channel, 4096 columns %6.3f TB/s (%5.1f%%)\n",
              dtype, l, 100 * l / c, lc, 100 * lc / c);
  std::printf("%-9s quant_error fused         %6.3f TB/s (%5.1f%%) | per channel, 4096 columns %6.3f TB/s (%5.1f%%)\n",
              dtype, m, 100 * m / c, mc, 100 * mc / c);
  if (csv != nullptr) {
    std::fprintf(csv, "lsq_fake_quantize_backward,8bit,%s,0,qsafe,%.5f,%.4f\n", dtype, lsq, l);
    std::fprintf(csv, "lsq_fake_quantize_backward,8bit,%s,4096,qsafe,%.5f,%.4f\n", dtype, lsq_channels, lc);
    std::fprintf(csv, "quant_error_fused,8bit,%s,0,qsafe,%.5f,%.4f\n", dtype, metric, m);
    std::fprintf(csv, "quant_error_fused,8bit,%s,4096,qsafe,%.5f,%.4f\n", dtype, metric_channels, mc);
  }
  if (csv != nullptr) {
    std::fprintf(csv, "copy,-,%s,0,cudaMemcpy,%.5f,%.4f\n", dtype, copy, c);
    std::fprintf(csv, "fake_quantize,8bit,%s,0,qsafe,%.5f,%.4f\n", dtype, fwd, f);
    std::fprintf(csv, "fake_quantize_backward,8bit,%s,0,qsafe,%.5f,%.4f\n", dtype, bwd, b);
  }
  cudaFree(x);
  cudaFree(y);
  cudaFree(dy);
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t n = std::size_t{1} << 28;
  int repeats = 30;
  FILE* csv = nullptr;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--elements")) n = std::strtoull(argv[i + 1], nullptr, 10);
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--csv")) csv = std::fopen(argv[i + 1], "w");
  }
  if (csv != nullptr) std::fprintf(csv, "op,variant,dtype,cols,impl,ms,tbps\n");
  std::printf("# fake-quantization, per tensor 8-bit asymmetric, %zu elements, median of %d\n", n, repeats);
  bench_type<float>("float32", n, repeats, csv);
  bench_type<__nv_bfloat16>("bfloat16", n, repeats, csv);
  if (csv != nullptr) std::fclose(csv);
  return 0;
}
