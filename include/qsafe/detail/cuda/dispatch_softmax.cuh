#pragma once
// Chooses the kernel shape and launch geometry for a softmax-family op, and launches it (no allocation, no sync).
//
// Shapes, by row length in packets (16 bytes of elements) when every row start is 16-byte aligned:
//   row fits in registers (<= max_threads_per_row · the op's cached elements): a row group of the smallest power of
//     two of threads (>= 4) that holds it, several groups per block for short rows (a warp or less per row), one
//     group per block for long rows (a block per row); each input read once. The 16-bit backward from scores of
//     the longest such rows (a block of max_threads_per_row a row) runs a staged kernel instead: one wave of blocks
//     that walk the rows, each copying its next row into shared memory while the current one reduces;
//   longer rows: a block per row that streams the row from memory at each pass (inputs read 2-3 times, mostly from
//     L2);
//   any unaligned start or stride: the streaming shape with single-element accesses.

#include <cuda_runtime.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "qsafe/cuda/execution.cuh"
#include "qsafe/detail/check.hpp"
#include "qsafe/detail/cuda/kernels/softmax.cuh"
#include "qsafe/detail/cuda/lengths.cuh"

namespace qsafe::detail::cuda {

// Tuning of the softmax family (each number with what chose it).
struct softmax_tuning {
  // Elements per thread held in registers (forward: fp32 exponentials; backward: the raw inputs), per op and
  // element type; threads per row follow (a power of two, 4 to 512). Measured with bench_cuda_softmax (--sweep
  // for the forward), H100, 2^28 elements, TB/s against a copy of 2.98 (float) / 2.6-2.9 (bf16):
  //   forward 32: float T = 2048 / 8192: 16 -> 3.00 / 2.88 (512 threads a row), 32 -> 2.97 / 2.98, 64 spills;
  //     bf16 T = 2048 / 8192: 16 -> 2.19 / 1.74, 32 -> 2.78 / 2.72. Fewer threads a row: fewer barriers and
  //     fewer registers spent per row beyond the data.
  //   backward 16: bf16 T = 128 .. 8192 (clipped): 16 -> 2.67-2.99, 32 -> 2.53-2.60 (100 registers, so 2 blocks
  //     an SM); float equal (3.04) both ways.
  //   backward from scores, float 32: T = 8192: 16 -> 2.65-2.72, 32 -> 3.06; bf16 16: T = 128 / 8192:
  //     16 -> 2.63-2.77 / 2.14-2.36, 32 -> 2.48-2.65 / 2.19-2.39.
  template <class T>
  static constexpr int forward_cached_elements = 32;
  template <class T>
  static constexpr int backward_cached_elements = 16;
  template <class T>
  static constexpr int backward_from_scores_cached_elements = sizeof(T) == 4 ? 32 : 16;
  // Bytes of each input that a block prefetches into L2 ahead of the rows it computes (prefetch_rows_ahead). H100,
  // bench_cuda_softmax, 2^28 elements, TB/s over T = 128 .. 8192 without -> with, swept over 0.5-6 MiB (2026-11-26):
  //   bf16 forward 2.34-2.88 -> 2.92-3.01 (3 MiB; 6 MiB: 2.69-2.99); bf16 backward 2.64-2.99 -> 2.90-3.06 (1 MiB;
  //   3 MiB: 2.68-3.00); bf16 backward from scores 2.07-2.75 -> 2.19-2.97 (3 MiB; 2-4 MiB alike);
  //   float32 forward 2.96-3.00 -> 3.00-3.02 (1 MiB). Float backward: none; it runs at the copy without, and
  //   from 2 MiB on it fell (2.42-2.50 at 6 MiB), presumably as lines are evicted before their use and read twice.
  template <class T>
  static constexpr double forward_prefetch_bytes = sizeof(T) == 2 ? 3 << 20 : 1 << 20;
  template <class T>
  static constexpr double backward_prefetch_bytes = sizeof(T) == 2 ? 1 << 20 : 0;
  template <class T>
  static constexpr double backward_from_scores_prefetch_bytes = sizeof(T) == 2 ? 3 << 20 : 0;
  // Threads per row (a block a row) from which the 16-bit backward from scores runs the staged kernel, which copies
  // a block's next row into shared memory while the current one reduces (softmax_backward_from_scores_staged_kernel).
  // H100, bench_cuda_softmax --sweep, bf16 T = 8192, TB/s plain -> staged (2026-11-26): vanilla 2.51 -> 2.75,
  // clipped 2.26 -> 2.36, NCS 2.20 -> 2.31 (its affine computed once per distinct length), NCS causal (a length,
  // so a double division, each row) 2.12 -> 2.15. T = 2048 (128 threads): not staged.
  template <class T>
  static constexpr int backward_from_scores_staged_threads = sizeof(T) == 2 ? 512 : INT_MAX;
  // Threads per block when several short rows share a block: 256 gives 8 blocks (2048 threads) per SM.
  static constexpr int block_threads = 256;
  static constexpr int min_threads_per_row = 4;
  static constexpr int max_threads_per_row = max_threads_per_block;
  // The streaming shape's threads per row (rows past the cached capacity).
  static constexpr int streaming_threads_per_row = max_threads_per_block;
};

struct launch_geometry {
  int threads_per_row;
  int rows_per_block;
  unsigned grid;
};

inline int power_of_two_at_least(index_t n, int lo, int hi) {
  if (n <= lo) return lo;
  if (n >= hi) return hi;
  return static_cast<int>(std::bit_ceil(static_cast<std::uint64_t>(n)));
}

inline launch_geometry geometry(std::string_view function, index_t rows, int threads_per_row) {
  const int rows_per_block =
      threads_per_row >= softmax_tuning::block_threads ? 1 : softmax_tuning::block_threads / threads_per_row;
  const index_t grid = (rows + rows_per_block - 1) / rows_per_block;
  if (grid > INT_MAX) fail(function, "x", "has too many rows (" + std::to_string(rows) + ") for one launch");
  return {threads_per_row, rows_per_block, static_cast<unsigned>(grid)};
}

template <class T>
bool aligned_16(const T* data, index_t row_stride, index_t rows) {
  return reinterpret_cast<std::uintptr_t>(data) % 16 == 0 &&
         (rows <= 1 || (static_cast<std::size_t>(row_stride) * sizeof(T)) % 16 == 0);
}

// Every view's rows start 16-byte aligned: the packet kernels' condition.
template <class... Views>
bool all_aligned_16(const Views&... views) {
  return (aligned_16(views.data, views.row_stride, views.rows) && ...);
}

// Every view's rows lie back to back (views of one shape): a contiguous matrix can be walked as one row.
template <class... Views>
bool all_contiguous(const Views&... views) {
  return ((views.rows <= 1 || views.row_stride == views.cols) && ...);
}

// Calls launch(shape, geometry) with the shape for these rows (CachedElements per thread when the row fits);
// checks the launch.
template <class T, int CachedElements, class Launch>
void launch_rows(std::string_view function, index_t rows, index_t cols, bool aligned, Launch&& launch) {
  using tuning = softmax_tuning;
  constexpr int packet = 16 / static_cast<int>(sizeof(T));
  constexpr int cached = CachedElements / packet;
  const index_t packets = (cols + packet - 1) / packet;
  if (aligned && packets <= static_cast<index_t>(tuning::max_threads_per_row) * cached) {
    const int threads = power_of_two_at_least((packets + cached - 1) / cached, tuning::min_threads_per_row,
                                              tuning::max_threads_per_row);
    launch(softmax_shape<packet, cached>{}, geometry(function, rows, threads));
  } else if (aligned) {
    launch(softmax_shape<packet, 0>{}, geometry(function, rows, tuning::streaming_threads_per_row));
  } else {
    const int threads = power_of_two_at_least((cols + cached - 1) / cached, tuning::min_threads_per_row,
                                              tuning::streaming_threads_per_row);
    launch(softmax_shape<1, 0>{}, geometry(function, rows, threads));
  }
  check(cudaGetLastError(), function, "the kernel launch");
}

// Rows ahead that a block prefetches into L2: `bytes` of each input.
template <class T>
index_t rows_ahead(double bytes, index_t cols) {
  return cols > 0 ? static_cast<index_t>(bytes / (static_cast<double>(cols) * sizeof(T))) : 0;
}

inline dim3 block_of(const launch_geometry& g) {
  return dim3(static_cast<unsigned>(g.threads_per_row * g.rows_per_block));
}

// The variant the kernels run. NCS on full rows has one gamma, gamma_for(cols), for every row: it runs as the
// clipped softmax with that gamma (the same doubles, so the same results), sparing each row NCS's double division.
template <class Variant, class Lengths>
const Variant& kernel_variant(const Variant& variant, const Lengths&, index_t) {
  return variant;
}
inline clipped_softmax kernel_variant(const normalized_clipped_softmax& variant, const full_rows&, index_t cols) {
  return {variant.zeta, variant.gamma_for(cols)};
}

template <class Variant, class Lengths, class T>
void softmax_forward(cudaStream_t stream, const Variant& variant, const Lengths& lengths, matrix_view<const T> x,
                     matrix_view<T> y, T* p, index_t p_stride) {
  const bool aligned = all_aligned_16(x, y) && (p == nullptr || aligned_16(p, p_stride, x.rows));
  launch_rows<T, softmax_tuning::forward_cached_elements<T>>(
      "softmax_forward", x.rows, x.cols, aligned, [&](auto shape, const launch_geometry& g) {
        softmax_forward_kernel<decltype(shape)><<<g.grid, block_of(g), 0, stream>>>(
            kernel_variant(variant, lengths, x.cols), device_form(lengths), x.rows, static_cast<int>(x.cols),
            g.threads_per_row, x.data, x.row_stride, y.data, y.row_stride, p, p_stride,
            rows_ahead<T>(softmax_tuning::forward_prefetch_bytes<T>, x.cols));
      });
}

template <class Variant, class Lengths, class T>
void softmax_backward(cudaStream_t stream, const Variant& variant, const Lengths& lengths, matrix_view<const T> p,
                      matrix_view<const T> dy, matrix_view<T> dx) {
  const bool aligned = all_aligned_16(p, dy, dx);
  launch_rows<T, softmax_tuning::backward_cached_elements<T>>(
      "softmax_backward", p.rows, p.cols, aligned, [&](auto shape, const launch_geometry& g) {
        softmax_backward_kernel<decltype(shape)><<<g.grid, block_of(g), 0, stream>>>(
            kernel_variant(variant, lengths, p.cols), device_form(lengths), p.rows, static_cast<int>(p.cols),
            g.threads_per_row, p.data, p.row_stride, dy.data, dy.row_stride, dx.data, dx.row_stride,
            rows_ahead<T>(softmax_tuning::backward_prefetch_bytes<T>, p.cols));
      });
}

// Blocks of `kernel` that fit on the device at once (one wave), at most `blocks`: the grid of a kernel whose blocks
// walk the rows.
template <class Kernel>
unsigned one_wave(std::string_view function, Kernel kernel, int threads, std::size_t shared_bytes, unsigned blocks) {
  int device = 0, sms = 0, per_sm = 0;
  check(cudaGetDevice(&device), function, "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), function, "cudaDeviceGetAttribute");
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, shared_bytes), function,
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  return std::min(blocks, static_cast<unsigned>(std::max(1, sms * per_sm)));
}

template <class Variant, class Lengths, class T>
void softmax_backward_from_scores(cudaStream_t stream, const Variant& variant, const Lengths& lengths,
                                  matrix_view<const T> x, matrix_view<const T> dy, matrix_view<T> dx) {
  const bool aligned = all_aligned_16(x, dy, dx);
  const auto& kernel_var = kernel_variant(variant, lengths, x.cols);
  using KernelVariant = std::decay_t<decltype(kernel_var)>;
  launch_rows<T, softmax_tuning::backward_from_scores_cached_elements<T>>(
      "softmax_backward_from_scores", x.rows, x.cols, aligned, [&](auto shape, const launch_geometry& g) {
        using Shape = decltype(shape);
        if constexpr (Shape::cached > 0 && Shape::packet * sizeof(T) == 16 &&
                      softmax_tuning::backward_from_scores_staged_threads<T> != INT_MAX) {
          if (g.threads_per_row >= softmax_tuning::backward_from_scores_staged_threads<T> && g.rows_per_block == 1) {
            const auto kernel =
                softmax_backward_from_scores_staged_kernel<Shape, KernelVariant,
                                                           std::decay_t<decltype(device_form(lengths))>, T>;
            const std::size_t shared_bytes = staged_shared_bytes<Shape>(g.threads_per_row);
            kernel<<<one_wave("softmax_backward_from_scores", kernel, g.threads_per_row, shared_bytes, g.grid),
                     g.threads_per_row, shared_bytes, stream>>>(kernel_var, device_form(lengths), x.rows,
                                                                static_cast<int>(x.cols), x.data, x.row_stride, dy.data,
                                                                dy.row_stride, dx.data, dx.row_stride);
            return;
          }
        }
        softmax_backward_from_scores_kernel<decltype(shape)><<<g.grid, block_of(g), 0, stream>>>(
            kernel_var, device_form(lengths), x.rows, static_cast<int>(x.cols), g.threads_per_row, x.data, x.row_stride,
            dy.data, dy.row_stride, dx.data, dx.row_stride,
            rows_ahead<T>(softmax_tuning::backward_from_scores_prefetch_bytes<T>, x.cols));
      });
}

}  // namespace qsafe::detail::cuda
