// GPU benchmark of the softmax family: effective bandwidth (each tensor read or written once: forward x -> y is two
// tensors, backward p, dy -> dx three) of qsafe's CUDA kernels next to a device-to-device copy of the same bytes
// measured in the same process. CUDA events around each launch, median of --repeats after warm-up, on random data.
//
//   bench_cuda_softmax [--elements N] [--repeats R] [--csv FILE] [--sweep]
//
// Prints a table; --csv writes the rows as op,variant,dtype,cols,impl,ms,tbps (scripts/gpu-check joins them with
// bench/cuda/pytorch_softmax.py's rows).

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "qsafe/cuda/softmax.cuh"
#include "support.cuh"

namespace {

using qsafe::bench::buffer;
using qsafe::bench::check;
using qsafe::bench::median_ms;

struct result {
  std::string op, variant, dtype;
  long cols;
  std::string impl;
  double ms, tbps;
};

template <class T>
void bench_type(const char* dtype, std::size_t elements, int repeats, std::vector<result>& out) {
  const std::size_t bytes = elements * sizeof(T);
  buffer<T> x(elements), y(elements), p(elements), dy(elements), dx(elements);
  qsafe::bench::fill_sum_of_uniforms<<<1024, 256>>>(x.data, elements, 1u, 3.0f);
  qsafe::bench::fill_sum_of_uniforms<<<1024, 256>>>(dy.data, elements, 2u, 1.0f);
  check(cudaGetLastError(), "fill_random");

  const double copy_ms = median_ms(
      repeats, [&] { check(cudaMemcpyAsync(y.data, x.data, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpyAsync"); });
  out.push_back({"copy", "-", dtype, 0, "cudaMemcpy", copy_ms, 2.0 * static_cast<double>(bytes) / copy_ms * 1e-9});

  for (const long cols : {128L, 512L, 2048L, 8192L}) {
    const long rows = static_cast<long>(elements) / cols;
    const qsafe::matrix_view<const T> xv(x.data, rows, cols), dyv(dy.data, rows, cols), pv_in(p.data, rows, cols);
    const qsafe::matrix_view<T> yv(y.data, rows, cols), pv(p.data, rows, cols), dxv(dx.data, rows, cols);
    const qsafe::cuda_t gpu{};
    const auto add = [&](const char* op, const char* variant, int tensors, double ms) {
      out.push_back(
          {op, variant, dtype, cols, "qsafe", ms, tensors * static_cast<double>(rows * cols) * sizeof(T) / ms * 1e-9});
    };
    const auto each_variant = [&](const char* name, const auto& variant) {
      add("forward", name, 2, median_ms(repeats, [&] { softmax_forward(gpu, variant, qsafe::full_rows{}, xv, yv); }));
      softmax_forward(gpu, variant, qsafe::full_rows{}, xv, yv, pv);  // a real p for the backward
      add("backward", name, 3,
          median_ms(repeats, [&] { softmax_backward(gpu, variant, qsafe::full_rows{}, pv_in, dyv, dxv); }));
      add("backward_from_scores", name, 3,
          median_ms(repeats, [&] { softmax_backward_from_scores(gpu, variant, qsafe::full_rows{}, xv, dyv, dxv); }));
    };
    each_variant("vanilla", qsafe::vanilla_softmax{});
    each_variant("clipped", qsafe::clipped_softmax::from_alpha(3.2, 128));
    each_variant("ncs", qsafe::normalized_clipped_softmax::from_alpha(3.2, 128));
    // NCS with causal rows: the per-row gamma and masked tails (bytes counted as for full rows).
    add("forward", "ncs_causal", 2, median_ms(repeats, [&] {
          softmax_forward(gpu, qsafe::normalized_clipped_softmax{1.0, 0.9}, qsafe::causal_rows{cols, 0}, xv, yv);
        }));
  }
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

// --sweep: the tuning choices of detail/cuda/dispatch_softmax.cuh measured directly: elements cached per thread
// (threads per row follow) and the streamed shape, forward and backward from scores, vanilla, full rows.
template <class T, int Cached>
void sweep_shape(const char* dtype, std::size_t elements, int repeats, long cols, int stream_threads) {
  namespace dc = qsafe::detail::cuda;
  constexpr int packet = 16 / static_cast<int>(sizeof(T));
  using shape = dc::softmax_shape<packet, Cached>;
  const long rows = static_cast<long>(elements) / cols;
  const int threads = Cached > 0 ? dc::power_of_two_at_least(cols / (packet * Cached), 4, 512) : stream_threads;
  if (Cached > 0 && static_cast<long>(threads) * packet * Cached < cols) return;  // does not fit
  buffer<T> x(elements), y(elements), dy(elements);
  qsafe::bench::fill_sum_of_uniforms<<<1024, 256>>>(x.data, elements, 1u, 3.0f);
  qsafe::bench::fill_sum_of_uniforms<<<1024, 256>>>(dy.data, elements, 2u, 1.0f);
  const dc::launch_geometry g = dc::geometry("sweep", rows, threads);
  const qsafe::vanilla_softmax variant{};
  const qsafe::full_rows mode{};
  cudaFuncAttributes fa{}, ba{};
  check(cudaFuncGetAttributes(&fa, dc::softmax_forward_kernel<shape, qsafe::vanilla_softmax, qsafe::full_rows, T>),
        "cudaFuncGetAttributes");
  check(cudaFuncGetAttributes(
            &ba, dc::softmax_backward_from_scores_kernel<shape, qsafe::vanilla_softmax, qsafe::full_rows, T>),
        "cudaFuncGetAttributes");
  const qsafe::index_t no_prefetch = 0;  // the shapes alone, without the L2 prefetch of later rows
  const double fwd = median_ms(repeats, [&] {
    dc::softmax_forward_kernel<shape><<<g.grid, dc::block_of(g)>>>(variant, mode, rows, static_cast<int>(cols), threads,
                                                                   x.data, cols, y.data, cols, static_cast<T*>(nullptr),
                                                                   0, no_prefetch);
  });
  const double bwd = median_ms(repeats, [&] {
    dc::softmax_backward_from_scores_kernel<shape><<<g.grid, dc::block_of(g)>>>(
        variant, mode, rows, static_cast<int>(cols), threads, x.data, cols, dy.data, cols, y.data, cols, no_prefetch);
  });
  check(cudaGetLastError(), "sweep launch");
  const double bytes = static_cast<double>(rows * cols) * sizeof(T);
  std::printf(
      "sweep %-8s T=%5ld cached_elements=%3d threads_per_row=%3d regs=%3d/%3d  forward %6.3f TB/s  "
      "backward_from_scores %6.3f TB/s\n",
      dtype, cols, Cached * packet, threads, fa.numRegs, ba.numRegs, 2 * bytes / fwd * 1e-9, 3 * bytes / bwd * 1e-9);
}

// --sweep, 16-bit types: the backward from scores of rows that take a block of max_threads_per_row, by the plain
// kernel and by the staged one (which the dispatcher runs: softmax_tuning), for each variant, on
// full rows or causal ones (`mode`; TB/s counts the bytes of full rows either way).
template <class T, class Variant, class Mode = qsafe::full_rows>
void sweep_staged(const char* dtype, const char* name, const Variant& variant, std::size_t elements, int repeats,
                  long cols, const Mode& mode = {}) {
  namespace dc = qsafe::detail::cuda;
  constexpr int packet = 16 / static_cast<int>(sizeof(T));
  constexpr int cached = dc::softmax_tuning::backward_from_scores_cached_elements<T> / packet;
  using shape = dc::softmax_shape<packet, cached>;
  const long rows = static_cast<long>(elements) / cols;
  const int threads = dc::power_of_two_at_least((cols + packet * cached - 1) / (packet * cached), 4, 512);
  buffer<T> x(elements), dy(elements), dx(elements);
  qsafe::bench::fill_sum_of_uniforms<<<1024, 256>>>(x.data, elements, 1u, 3.0f);
  qsafe::bench::fill_sum_of_uniforms<<<1024, 256>>>(dy.data, elements, 2u, 1.0f);
  const dc::launch_geometry g = dc::geometry("sweep", rows, threads);
  const auto staged = dc::softmax_backward_from_scores_staged_kernel<shape, Variant, Mode, T>;
  const std::size_t shared_bytes = dc::staged_shared_bytes<shape>(threads);
  const unsigned wave = dc::one_wave("sweep", staged, threads, shared_bytes, g.grid);
  cudaFuncAttributes pa{}, sa{};
  check(cudaFuncGetAttributes(&pa, dc::softmax_backward_from_scores_kernel<shape, Variant, Mode, T>),
        "cudaFuncGetAttributes");
  check(cudaFuncGetAttributes(&sa, staged), "cudaFuncGetAttributes");
  const qsafe::index_t ahead = dc::rows_ahead<T>(dc::softmax_tuning::backward_from_scores_prefetch_bytes<T>, cols);
  const double plain_ms = median_ms(repeats, [&] {
    dc::softmax_backward_from_scores_kernel<shape><<<g.grid, dc::block_of(g)>>>(
        variant, mode, rows, static_cast<int>(cols), threads, x.data, cols, dy.data, cols, dx.data, cols, ahead);
  });
  const double staged_ms = median_ms(repeats, [&] {
    staged<<<wave, threads, shared_bytes>>>(variant, mode, rows, static_cast<int>(cols), x.data, cols, dy.data, cols,
                                            dx.data, cols);
  });
  check(cudaGetLastError(), "sweep launch");
  const double bytes = 3.0 * static_cast<double>(rows * cols) * sizeof(T);
  std::printf(
      "sweep %-8s T=%5ld backward_from_scores %-10s threads_per_row=%3d plain (regs %3d, stack %4zu) %6.3f TB/s  "
      "staged (regs %3d, stack %4zu, %u blocks) %6.3f TB/s\n",
      dtype, cols, name, threads, pa.numRegs, pa.localSizeBytes, bytes / plain_ms * 1e-9, sa.numRegs, sa.localSizeBytes,
      wave, bytes / staged_ms * 1e-9);
}

template <class T>
void sweep(const char* dtype, std::size_t elements, int repeats) {
  constexpr int packet = 16 / static_cast<int>(sizeof(T));
  for (const long cols : {2048L, 8192L}) {
    sweep_shape<T, 16 / packet>(dtype, elements, repeats, cols, 0);
    sweep_shape<T, 32 / packet>(dtype, elements, repeats, cols, 0);
    sweep_shape<T, 64 / packet>(dtype, elements, repeats, cols, 0);
    for (const int t : {128, 256, 512}) sweep_shape<T, 0>(dtype, elements, repeats, cols, t);
  }
  if constexpr (sizeof(T) == 2) {
    for (const long cols : {4104L, 8192L}) {
      sweep_staged<T>(dtype, "vanilla", qsafe::vanilla_softmax{}, elements, repeats, cols);
      sweep_staged<T>(dtype, "CS", qsafe::clipped_softmax::from_alpha(3.2, 128), elements, repeats, cols);
      sweep_staged<T>(dtype, "NCS", qsafe::normalized_clipped_softmax::from_alpha(3.2, 128), elements, repeats, cols);
      sweep_staged<T>(dtype, "NCS_causal", qsafe::normalized_clipped_softmax::from_alpha(3.2, 128), elements, repeats,
                      cols, qsafe::causal_rows{cols, 0});
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t elements = std::size_t{1} << 28;
  int repeats = 30;
  const char* csv = nullptr;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--elements")) elements = std::strtoull(argv[i + 1], nullptr, 10);
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--csv")) csv = argv[i + 1];
  }
  int device = 0;
  cudaDeviceProp properties{};
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaGetDeviceProperties(&properties, device), "cudaGetDeviceProperties");
  std::printf("# %s, %d SMs, %zu elements per tensor, median of %d\n", properties.name, properties.multiProcessorCount,
              elements, repeats);

  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--sweep")) {
      sweep<float>("float32", elements, repeats);
      sweep<__nv_bfloat16>("bfloat16", elements, repeats);
      return 0;
    }
  }
  std::vector<result> results;
  bench_type<float>("float32", elements, repeats, results);
  bench_type<__nv_bfloat16>("bfloat16", elements, repeats, results);

  double copy_tbps[2] = {0, 0};
  std::printf("%-22s %-11s %-9s %6s %9s %7s %7s\n", "op", "variant", "dtype", "T", "ms", "TB/s", "%copy");
  for (const result& r : results) {
    const int t = r.dtype == "float32" ? 0 : 1;
    if (r.op == "copy") copy_tbps[t] = r.tbps;
    std::printf("%-22s %-11s %-9s %6ld %9.4f %7.3f %6.1f%%\n", r.op.c_str(), r.variant.c_str(), r.dtype.c_str(), r.cols,
                r.ms, r.tbps, 100.0 * r.tbps / copy_tbps[t]);
  }
  if (csv != nullptr) {
    FILE* f = std::fopen(csv, "w");
    if (f == nullptr) {
      std::perror(csv);
      return 1;
    }
    std::fprintf(f, "op,variant,dtype,cols,impl,ms,tbps\n");
    for (const result& r : results) {
      std::fprintf(f, "%s,%s,%s,%ld,%s,%.5f,%.4f\n", r.op.c_str(), r.variant.c_str(), r.dtype.c_str(), r.cols,
                   r.impl.c_str(), r.ms, r.tbps);
    }
    std::fclose(f);
  }
  return 0;
}
