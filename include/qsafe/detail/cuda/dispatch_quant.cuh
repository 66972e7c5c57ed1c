#pragma once
// Launch geometry of the elementwise fake-quantization kernels: a contiguous matrix is one long row; blocks of
// 256 threads, each thread one 16-byte packet per step, at most `max_blocks_x` blocks along a row (grid-stride
// beyond), rows over the y dimension.

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <string_view>

#include "qsafe/cuda/execution.cuh"
#include "qsafe/detail/cuda/dispatch_softmax.cuh"  // aligned_16
#include "qsafe/detail/cuda/kernels/quant.cuh"

namespace qsafe::detail::cuda {

struct quant_tuning {
  static constexpr int block_threads = 256;
  // 132 SMs x 8 blocks of 256 threads fill an H100; more blocks only add scheduling.
  static constexpr index_t max_blocks_x = 1056;
  static constexpr index_t max_blocks_y = 65535;
};

// Calls launch(packet, grid, rows, cols) for the matrix (rows x cols with the strides given), flattening a
// contiguous one into a single row when its size fits an int.
template <class T, class Launch>
void launch_elementwise(std::string_view function, index_t rows, index_t cols, bool contiguous, bool aligned,
                        Launch&& launch) {
  if (contiguous && rows * cols <= INT_MAX / 2) {
    cols *= rows;
    rows = 1;
  }
  const auto go = [&](auto packet) {
    constexpr int N = decltype(packet)::value;
    const index_t steps = (cols + N * quant_tuning::block_threads - 1) / (N * quant_tuning::block_threads);
    const dim3 grid(static_cast<unsigned>(std::min(steps, quant_tuning::max_blocks_x)),
                    static_cast<unsigned>(std::min(rows, quant_tuning::max_blocks_y)));
    launch(packet, grid, rows, static_cast<int>(cols));
  };
  if (aligned) {
    go(std::integral_constant<int, 16 / static_cast<int>(sizeof(T))>{});
  } else {
    go(std::integral_constant<int, 1>{});
  }
  check(cudaGetLastError(), function, "the kernel launch");
}

template <class T>
void fake_quantize(cudaStream_t stream, const lane_params<float>& p, matrix_view<const T> x, matrix_view<T> y) {
  const bool contiguous = (x.rows <= 1 || (x.row_stride == x.cols && y.row_stride == y.cols));
  const bool aligned = aligned_16(x.data, x.row_stride, x.rows) && aligned_16(y.data, y.row_stride, y.rows);
  launch_elementwise<T>(
      "fake_quantize", x.rows, x.cols, contiguous, aligned, [&](auto packet, dim3 grid, index_t rows, int cols) {
        fake_quantize_kernel<decltype(packet)::value><<<grid, quant_tuning::block_threads, 0, stream>>>(
            p, rows, cols, x.data, x.row_stride, y.data, y.row_stride);
      });
}

template <class T>
void fake_quantize_backward(cudaStream_t stream, const lane_params<float>& p, matrix_view<const T> x,
                            matrix_view<const T> dy, matrix_view<T> dx) {
  const bool contiguous =
      (x.rows <= 1 || (x.row_stride == x.cols && dy.row_stride == dy.cols && dx.row_stride == dx.cols));
  const bool aligned = aligned_16(x.data, x.row_stride, x.rows) && aligned_16(dy.data, dy.row_stride, dy.rows) &&
                       aligned_16(dx.data, dx.row_stride, dx.rows);
  launch_elementwise<T>("fake_quantize_backward", x.rows, x.cols, contiguous, aligned,
                        [&](auto packet, dim3 grid, index_t rows, int cols) {
                          fake_quantize_backward_kernel<decltype(packet)::value>
                              <<<grid, quant_tuning::block_threads, 0, stream>>>(
                                  p, rows, cols, x.data, x.row_stride, dy.data, dy.row_stride, dx.data, dx.row_stride);
                        });
}

}  // namespace qsafe::detail::cuda
