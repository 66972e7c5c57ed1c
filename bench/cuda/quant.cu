// GPU benchmark of fake-quantization (per tensor, 8-bit asymmetric): effective bandwidth (forward x -> y two
// tensors, backward x, dy -> dx three) next to a device copy of the same bytes, CUDA events, median of --repeats.
//
//   bench_cuda_quant [--elements N] [--repeats R] [--csv FILE]     (CSV: op,variant,dtype,cols,impl,ms,tbps)

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "qsafe/cuda/quant.cuh"

namespace {

void check(cudaError_t code, const char* call) {
  qsafe::detail::cuda::check(code, "bench", call);
}

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

template <class F>
double median_ms(int repeats, F&& run) {
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  for (int i = 0; i < 3; ++i) run();
  std::vector<float> times;
  for (int i = 0; i < repeats; ++i) {
    check(cudaEventRecord(start), "cudaEventRecord");
    run();
    check(cudaEventRecord(stop), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
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
  const double copy = median_ms(
      repeats, [&] { check(cudaMemcpyAsync(y, x, n * sizeof(T), cudaMemcpyDeviceToDevice), "cudaMemcpyAsync"); });
  const double fwd = median_ms(repeats, [&] { qsafe::fake_quantize(qsafe::cuda_t{}, xv, p, yv); });
  const double bwd = median_ms(repeats, [&] { qsafe::fake_quantize_backward(qsafe::cuda_t{}, xv, p, dyv, yv); });
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  const double c = 2 * bytes / copy * 1e-9, f = 2 * bytes / fwd * 1e-9, b = 3 * bytes / bwd * 1e-9;
  std::printf(
      "%-9s copy %6.3f TB/s | fake_quantize %6.3f TB/s (%5.1f%%) | fake_quantize_backward %6.3f TB/s (%5.1f%%)\n",
      dtype, c, f, 100 * f / c, b, 100 * b / c);
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
