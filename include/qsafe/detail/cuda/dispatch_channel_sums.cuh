#pragma once
// Launch of the channel-sums pass (kernels/channel_sums.cuh) for LSQ's backward and the error metrics: geometry,
// scratch memory (the policy's cuda_workspace, or stream-ordered allocations), the parameters' copy to the device,
// the pass, the fixed-order combine and one copy of the sums to the host (the call synchronizes the stream).

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "qsafe/cuda/execution.cuh"
#include "qsafe/detail/cuda/dispatch_softmax.cuh"  // aligned_16
#include "qsafe/detail/cuda/dispatch_stats.cuh"    // scratch, reduction_tuning, copy_to_host
#include "qsafe/detail/cuda/kernels/channel_sums.cuh"
#include "qsafe/quant.hpp"

namespace qsafe::detail::cuda {

// The three matrices of one pass: `a` (x), `b` (dy or y; read where Op::reads_second) and `out` (dx; written where
// Op::writes_output), all of a's shape.
template <class T>
struct sums_operands {
  matrix_view<const T> a;
  matrix_view<const T> b;
  matrix_view<T> out;
};

// Per-channel sums, Op::sums per channel: returns sums[c·Op::sums + k]. `params`: one lane_params per channel
// (empty when the op takes none). `axis`: channel_axis::row with `channels` channels (1: per tensor) or
// channel_axis::column (channels == cols). The matrices must be non-empty with cols <= INT_MAX / 2.
template <class Op, class T>
std::vector<double> channel_sums(std::string_view function, const cuda_t& policy, const Op& op,
                                 std::span<const lane_params<float>> params, channel_axis axis, index_t channels,
                                 const sums_operands<T>& m) {
  constexpr int K = Op::sums;
  const cudaStream_t stream = policy.stream;
  const bool along_columns = axis == channel_axis::column;
  index_t rows = m.a.rows, a_stride = m.a.row_stride, b_stride = m.b.row_stride, out_stride = m.out.row_stride;
  index_t cols = m.a.cols;
  const bool contiguous = rows <= 1 || (a_stride == cols && (!Op::reads_second || b_stride == cols) &&
                                        (!Op::writes_output || out_stride == cols));
  if (!along_columns && channels == 1 && contiguous && rows * cols <= INT_MAX / 2) {
    cols *= rows;
    rows = 1;
    a_stride = b_stride = out_stride = cols;
  }
  const bool aligned = aligned_16(m.a.data, m.a.row_stride, m.a.rows) &&
                       (!Op::reads_second || aligned_16(m.b.data, m.b.row_stride, m.b.rows)) &&
                       (!Op::writes_output || aligned_16(m.out.data, m.out.row_stride, m.out.rows));
  constexpr index_t packet = 16 / static_cast<index_t>(sizeof(T));
  const index_t n = aligned ? packet : 1;
  const index_t span = index_t{reduce_block_threads} * n;
  const index_t max_blocks = reduction_tuning::max_blocks;
  // Geometry (a function of the shape, the channels and the alignment only).
  index_t gx = 0, gy = 0, virtual_rows = 0, groups = 0;
  if (along_columns) {
    gx = (cols + span - 1) / span;
    gy = std::clamp<index_t>(max_blocks / gx, 1, std::min<index_t>(rows, 65535));
    groups = gy;
  } else {
    // Many channels: one block a row group (enough blocks already); few: the rows split along x too.
    gx = std::clamp<index_t>((cols + span - 1) / span, 1, std::max<index_t>(1, max_blocks / channels));
    const index_t k = std::max<index_t>(1, std::min(rows / channels, max_blocks / gx / channels));
    virtual_rows = channels * k;
    gy = std::min<index_t>(virtual_rows, 65535);
    groups = k * gx;
  }
  // Scratch: the parameters, the partials, the combined sums.
  const auto c = static_cast<std::size_t>(channels);
  const std::size_t params_bytes = (params.size() * sizeof(lane_params<float>) + 15) / 16 * 16;
  const std::size_t partial_bytes = static_cast<std::size_t>(groups) * c * K * sizeof(double);
  const std::size_t result_bytes = c * K * sizeof(double);
  const scratch space(function, policy, params_bytes + partial_bytes + result_bytes,
                      std::max(params_bytes, result_bytes));
  auto* lanes = space.device_at<lane_params<float>>(0);
  auto* partials = space.device_at<double>(params_bytes);
  auto* sums = space.device_at<double>(params_bytes + partial_bytes);
  if (!params.empty()) {
    // Through the host buffer (pinned with a workspace); the copy back reuses it after this copy (stream order).
    std::memcpy(space.host_at<unsigned char>(0), params.data(), params.size() * sizeof(lane_params<float>));
    check(cudaMemcpyAsync(lanes, space.host_at<unsigned char>(0), params.size() * sizeof(lane_params<float>),
                          cudaMemcpyHostToDevice, stream),
          function, "cudaMemcpyAsync(params)");
  }
  const channel_lanes on_device{params.empty() ? nullptr : lanes};
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
  const auto go = [&](auto packet_constant) {
    constexpr int N = decltype(packet_constant)::value;
    if (along_columns) {
      column_channel_sums_kernel<N>
          <<<grid, reduce_block_threads, 0, stream>>>(op, on_device, rows, static_cast<int>(cols), m.a.data, a_stride,
                                                      m.b.data, b_stride, m.out.data, out_stride, partials);
    } else {
      row_channel_sums_kernel<N><<<grid, reduce_block_threads, 0, stream>>>(
          op, on_device, rows, static_cast<int>(cols), channels, virtual_rows, m.a.data, a_stride, m.b.data, b_stride,
          m.out.data, out_stride, partials);
    }
  };
  if (aligned) {
    go(std::integral_constant<int, static_cast<int>(packet)>{});
  } else {
    go(std::integral_constant<int, 1>{});
  }
  check(cudaGetLastError(), function, "the kernel launch");
  combine_channel_sums_kernel<K>
      <<<static_cast<unsigned>((channels + 255) / 256), 256, 0, stream>>>(partials, groups, channels, sums);
  check(cudaGetLastError(), function, "the combine kernel launch");
  copy_to_host(function, stream, space.host_at<double>(0), sums, c * K);
  std::vector<double> out(c * K);
  std::memcpy(out.data(), space.host_at<double>(0), result_bytes);
  return out;
}

}  // namespace qsafe::detail::cuda
