#pragma once
// Launches of qsafe::histogram's two passes on device memory (kernels/histogram.cuh): grids, shared-memory table
// sizes, the scratch layout, and the one copy of each pass's result to the host.

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "qsafe/cuda/execution.cuh"
#include "qsafe/detail/cuda/dispatch_stats.cuh"
#include "qsafe/detail/cuda/kernels/histogram.cuh"
#include "qsafe/histogram.hpp"

namespace qsafe::detail::cuda {

// Shared memory a counting block may use without opting in to more: 48 KiB (2048 bins: 8 KiB per table).
inline constexpr std::size_t histogram_shared_bytes = 48 * 1024;

// Pass 1: per channel, the finite min and max and the NaN and ±inf counts (finite_range_row's result). One read
// (stats.cuh's range kernels) when the batch is finite; when they flag a NaN or ±inf, a second, exact read.
template <class T>
std::vector<finite_range<float>> finite_channel_ranges(std::string_view function, const cuda_t& policy,
                                                       const matrix_view<const T>& x, const channel_layout& layout) {
  const bool columns = layout.axis == channel_axis::column;
  const auto c = static_cast<std::size_t>(layout.channels);
  std::vector<finite_range<float>> out(c);
  {
    const channel_extremes e = channel_ranges(function, policy, x, columns, layout.channels);
    if (e.non_finite == 0) {
      for (std::size_t i = 0; i < c; ++i) out[i].lo = e.lo[i], out[i].hi = e.hi[i];
      return out;
    }
  }
  const cudaStream_t stream = policy.stream;
  // Layout: the min keys (start at ~0u), then the max keys, NaN and ±inf counts (start at 0); one copy back.
  const std::size_t keys_bytes = (c * sizeof(std::uint32_t) + 7) / 8 * 8;
  const std::size_t bytes = 2 * keys_bytes + 2 * c * sizeof(unsigned long long);
  const scratch space(function, policy, bytes, bytes);
  auto* min_keys = space.device_at<std::uint32_t>(0);
  auto* max_keys = space.device_at<std::uint32_t>(keys_bytes);
  auto* nan = space.device_at<unsigned long long>(2 * keys_bytes);
  unsigned long long* inf = nan + c;
  check(cudaMemsetAsync(min_keys, 0xff, keys_bytes, stream), function, "cudaMemsetAsync");
  check(cudaMemsetAsync(max_keys, 0, bytes - keys_bytes, stream), function, "cudaMemsetAsync");
  if (columns) {
    const index_t bx = (x.cols + reduce_block_threads - 1) / reduce_block_threads;
    const index_t by = std::clamp<index_t>(reduction_tuning::max_blocks / bx, 1, std::min<index_t>(x.rows, 65535));
    column_finite_ranges_kernel<<<dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by)), reduce_block_threads, 0,
                                  stream>>>(x.rows, static_cast<int>(x.cols), x.data, x.row_stride, min_keys, max_keys,
                                            nan, inf);
  } else {
    const walk_shape s =
        layout.channels == 1 ? flat_shape(x) : walk_shape{x.rows, static_cast<int>(x.cols), x.row_stride};
    dim3 grid = reduction_grid(s, 1);
    if (layout.channels > 1 && layout.channels <= 65535) {  // a multiple of `channels` rows apart, as channel_ranges
      const index_t per = std::max<index_t>(1, std::min<index_t>(65535 / layout.channels, grid.y / layout.channels));
      grid.y = static_cast<unsigned>(std::min(layout.channels * per, s.rows));
    }
    row_finite_ranges_kernel<<<grid, reduce_block_threads, 0, stream>>>(s.rows, s.cols, x.data, s.stride,
                                                                        layout.channels, min_keys, max_keys, nan, inf);
  }
  check(cudaGetLastError(), function, "the finite range kernel launch");
  auto* host = space.host_at<unsigned char>(0);
  copy_to_host(function, stream, host, space.device_at<unsigned char>(0), bytes);
  for (std::size_t i = 0; i < c; ++i) {
    std::uint32_t lo = 0, hi = 0;
    unsigned long long n = 0, m = 0;
    std::memcpy(&lo, host + i * sizeof lo, sizeof lo);
    std::memcpy(&hi, host + keys_bytes + i * sizeof hi, sizeof hi);
    std::memcpy(&n, host + 2 * keys_bytes + i * sizeof n, sizeof n);
    std::memcpy(&m, host + 2 * keys_bytes + (c + i) * sizeof m, sizeof m);
    if (lo != ~0u) {  // else no finite value: the host's empty range (+inf, -inf)
      out[i].lo = from_order_key(lo);
      out[i].hi = from_order_key(hi);
    }
    out[i].nan = static_cast<std::int64_t>(n);
    out[i].inf = static_cast<std::int64_t>(m);
  }
  return out;
}

// Pass 2: add(counts) with the counts of x on `grids` (one per channel, all with the same bin count), channels ×
// (bins + 1) slots viewing the scratch buffer,
// and the NaN, ±inf and finite off-grid totals of the values that went to the last slots.
template <class T, class Add>
void count_bins(std::string_view function, const cuda_t& policy, const matrix_view<const T>& x,
                const channel_layout& layout, std::span<const grid_lanes<float>> grids, Add&& add) {
  const cudaStream_t stream = policy.stream;
  const int bins = grids[0].bins, slots = bins + 1;
  const std::size_t n_counts = grids.size() * static_cast<std::size_t>(slots);
  // Layout: the grids, then the counts and the three outside tallies (zeroed; one copy back).
  const std::size_t grids_bytes = (grids.size() * sizeof(grid_lanes<float>) + 15) / 16 * 16;
  const std::size_t result_bytes = (n_counts + 3) * sizeof(unsigned long long);
  const scratch space(function, policy, grids_bytes + result_bytes, std::max(grids_bytes, result_bytes));
  auto* device_grids = space.device_at<grid_lanes<float>>(0);
  auto* counts = space.device_at<unsigned long long>(grids_bytes);
  unsigned long long* outside = counts + n_counts;
  // Through the host buffer (pinned with a workspace), which the copy back reuses only after synchronizing.
  std::memcpy(space.host_at<unsigned char>(0), grids.data(), grids.size() * sizeof(grid_lanes<float>));
  check(cudaMemcpyAsync(device_grids, space.host_at<unsigned char>(0), grids.size() * sizeof(grid_lanes<float>),
                        cudaMemcpyHostToDevice, stream),
        function, "cudaMemcpyAsync(grids)");
  check(cudaMemsetAsync(counts, 0, result_bytes, stream), function, "cudaMemsetAsync(counts)");
  const std::size_t table_bytes = static_cast<std::size_t>(slots) * sizeof(unsigned);
  if (layout.axis == channel_axis::column) {
    // Tile: the most columns (a power of two, at most 32) whose tables fit the shared memory; none fits: atomics on
    // the global counts, 32 columns a block.
    int tile = 32;
    while (tile > 1 && tile * table_bytes > histogram_shared_bytes) tile /= 2;
    const bool shared = tile * table_bytes <= histogram_shared_bytes;
    const index_t rows_per_step = reduce_block_threads / tile;
    const index_t bx = (x.cols + tile - 1) / tile;
    const index_t by = std::clamp<index_t>(reduction_tuning::max_blocks / bx, 1,
                                           std::min<index_t>((x.rows + rows_per_step - 1) / rows_per_step, 65535));
    const dim3 grid(static_cast<unsigned>(bx), static_cast<unsigned>(by));
    if (shared) {
      column_histogram_kernel<true><<<grid, reduce_block_threads, tile * table_bytes, stream>>>(
          x.rows, static_cast<int>(x.cols), x.data, x.row_stride, tile, bins, device_grids, counts, outside);
    } else {
      column_histogram_kernel<false><<<grid, reduce_block_threads, 0, stream>>>(
          x.rows, static_cast<int>(x.cols), x.data, x.row_stride, tile, bins, device_grids, counts, outside);
    }
  } else {
    const bool shared = table_bytes <= histogram_shared_bytes;
    const walk_shape s =
        layout.channels == 1 ? flat_shape(x) : walk_shape{x.rows, static_cast<int>(x.cols), x.row_stride};
    with_packet(x, [&](auto packet) {
      constexpr int N = decltype(packet)::value;
      dim3 grid = reduction_grid(s, histogram_rows_unroll * N);
      if (layout.channels > 1 && layout.channels <= 65535) {  // each block sees one channel (one flush)
        const index_t per = std::max<index_t>(1, std::min<index_t>(65535 / layout.channels, grid.y / layout.channels));
        grid.y = static_cast<unsigned>(std::min(layout.channels * per, s.rows));
      }
      if (shared) {
        row_histogram_kernel<N, true><<<grid, reduce_block_threads, table_bytes, stream>>>(
            s.rows, s.cols, x.data, s.stride, layout.channels, bins, device_grids, counts, outside);
      } else {
        row_histogram_kernel<N, false><<<grid, reduce_block_threads, 0, stream>>>(
            s.rows, s.cols, x.data, s.stride, layout.channels, bins, device_grids, counts, outside);
      }
    });
  }
  check(cudaGetLastError(), function, "the histogram kernel launch");
  auto* host = space.host_at<unsigned long long>(0);
  copy_to_host(function, stream, host, counts, n_counts + 3);
  // Handed over in place: the histogram adds them while the scratch (the pinned or pageable buffer) is alive.
  histogram_batch_counts out;
  out.counts = std::span<const unsigned long long>(host, n_counts);
  out.nan = static_cast<std::int64_t>(host[n_counts]);
  out.inf = static_cast<std::int64_t>(host[n_counts + 1]);
  out.off_grid = static_cast<std::int64_t>(host[n_counts + 2]);
  add(out);
}

}  // namespace qsafe::detail::cuda
