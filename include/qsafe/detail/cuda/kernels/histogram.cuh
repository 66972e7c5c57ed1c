#pragma once
// Histogram kernels (qsafe::histogram's two passes on device memory; detail/scalar/histogram.hpp defines them):
//  - row_finite_ranges_kernel / column_finite_ranges_kernel: per channel, the min and max of the finite values
//    (order keys with atomicMin / atomicMax: exact in any order) and the exact NaN and ±inf counts. The path taken
//    only when stats.cuh's range kernels flagged a NaN or ±inf (their min and max would include ±inf).
//  - row_histogram_kernel / column_histogram_kernel: counts per bin, the bin computed as the host's
//    scalar::bin_of, operation for operation (__fsub_rn / __fmul_rn: one correctly rounded fp32 operation each,
//    never contracted), into per-block 32-bit shared-memory tables flushed into 64-bit global counts with
//    atomicAdd (integer sums: the order does not matter) before a counter could reach 2^32. Values outside the
//    grid go to the last slot of their channel, as on the host, and are tallied as NaN, ±inf or finite off-grid.

#include <cuda_runtime.h>

#include <cstdint>

#include "qsafe/detail/cuda/block_reduce.cuh"
#include "qsafe/detail/cuda/element.cuh"
#include "qsafe/detail/cuda/kernels/stats.cuh"  // order_key, load_tile, valid
#include "qsafe/detail/scalar/histogram.hpp"    // grid_lanes
#include "qsafe/matrix_view.hpp"

namespace qsafe::detail::cuda {

// ---- pass 1, exact path -------------------------------------------------------------------------------------

struct finite_tally {
  float lo, hi;  // of the finite values (lo > hi: none)
  unsigned long long nan, inf;
};

__host__ __device__ inline finite_tally empty_finite_tally() {
  return {INFINITY, -INFINITY, 0ull, 0ull};
}

struct merge_finite_op {
  __device__ __forceinline__ void operator()(finite_tally& a, const finite_tally& b) const {
    a.lo = fminf(a.lo, b.lo);
    a.hi = fmaxf(a.hi, b.hi);
    a.nan += b.nan;
    a.inf += b.inf;
  }
};

__device__ __forceinline__ void fold_finite(float v, finite_tally& t) {
  if (isnan(v)) {
    ++t.nan;
  } else if (isinf(v)) {
    ++t.inf;
  } else {
    t.lo = fminf(t.lo, v);
    t.hi = fmaxf(t.hi, v);
  }
}

// min_keys / max_keys start at ~0u / 0 (a min key still ~0u: the channel has no finite value); nan / inf at 0.
__device__ __forceinline__ void publish_finite(const finite_tally& t, index_t channel, std::uint32_t* min_keys,
                                               std::uint32_t* max_keys, unsigned long long* nan,
                                               unsigned long long* inf) {
  if (t.lo <= t.hi) {
    atomicMin(min_keys + channel, order_key(t.lo));
    atomicMax(max_keys + channel, order_key(t.hi));
  }
  if (t.nan > 0) atomicAdd(nan + channel, t.nan);
  if (t.inf > 0) atomicAdd(inf + channel, t.inf);
}

// Channels along rows (row r is channel r % channels): the structure of row_ranges_kernel, one element a step.
template <class T>
__global__ void __launch_bounds__(reduce_block_threads)
    row_finite_ranges_kernel(index_t rows, int cols, const T* x, index_t stride, index_t channels,
                             std::uint32_t* min_keys, std::uint32_t* max_keys, unsigned long long* nan,
                             unsigned long long* inf) {
  __shared__ finite_tally slots[reduce_block_threads / 32];
  finite_tally acc = empty_finite_tally();
  index_t channel = -1;
  for (index_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const index_t c = r % channels;
    if (c != channel) {  // block-uniform
      if (channel >= 0) {
        const finite_tally total = block_reduce(acc, empty_finite_tally(), merge_finite_op{}, slots);
        if (threadIdx.x == 0) publish_finite(total, channel, min_keys, max_keys, nan, inf);
        acc = empty_finite_tally();
      }
      channel = c;
    }
    const T* row = x + r * stride;
    for (int j = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); j < cols;
         j += static_cast<int>(gridDim.x * blockDim.x)) {
      fold_finite(to_float(row[j]), acc);
    }
  }
  if (channel >= 0) {
    const finite_tally total = block_reduce(acc, empty_finite_tally(), merge_finite_op{}, slots);
    if (threadIdx.x == 0) publish_finite(total, channel, min_keys, max_keys, nan, inf);
  }
}

// Channels along columns: thread j keeps column j's tally over the rows blockIdx.y + k·gridDim.y.
template <class T>
__global__ void __launch_bounds__(reduce_block_threads)
    column_finite_ranges_kernel(index_t rows, int cols, const T* x, index_t stride, std::uint32_t* min_keys,
                                std::uint32_t* max_keys, unsigned long long* nan, unsigned long long* inf) {
  const index_t j = index_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  finite_tally acc = empty_finite_tally();
  for (index_t r = blockIdx.y; r < rows; r += gridDim.y) fold_finite(to_float(x[r * stride + j]), acc);
  publish_finite(acc, j, min_keys, max_keys, nan, inf);
}

// ---- pass 2 -------------------------------------------------------------------------------------------------

// scalar::bin_of, step for step: the range test, fl(x − lo), fl(· × scale), std::min(t, last) (= t unless
// last < t), truncation toward zero.
__device__ __forceinline__ int bin_of(const grid_lanes<float>& g, float x) {
  if (!(x >= g.lo && x <= g.hi)) return g.bins;
  const float t = __fmul_rn(__fsub_rn(x, g.lo), g.scale);
  return __float2int_rz(g.last < t ? g.last : t);
}

// The values of a batch that went to a channel's last slot, by kind.
struct outside_tally {
  unsigned long long nan = 0, inf = 0, off_grid = 0;
};

__device__ __forceinline__ void tally_outside(float v, outside_tally& t) {
  if (isnan(v)) {
    ++t.nan;
  } else if (isinf(v)) {
    ++t.inf;
  } else {
    ++t.off_grid;
  }
}

// Every thread: outside[0..2] += the block's NaN, ±inf and off-grid tallies (a warp sum, then one atomic a warp).
__device__ __forceinline__ void publish_outside(outside_tally t, unsigned long long* outside) {
  const auto add = [](unsigned long long& a, unsigned long long b) { a += b; };
  t.nan = warp_reduce(t.nan, add);
  t.inf = warp_reduce(t.inf, add);
  t.off_grid = warp_reduce(t.off_grid, add);
  if (threadIdx.x % 32 == 0) {
    if (t.nan > 0) atomicAdd(outside, t.nan);
    if (t.inf > 0) atomicAdd(outside + 1, t.inf);
    if (t.off_grid > 0) atomicAdd(outside + 2, t.off_grid);
  }
}

// A block flushes its shared tables when it has counted this many values since the last flush, so that no 32-bit
// counter (at most that many plus one step's values) can wrap.
inline constexpr long long histogram_flush_every = 1ll << 30;

// Whole block: counts[slot] += table[slot] for slot < n, table zeroed (barriers before and after).
__device__ __forceinline__ void flush_table(unsigned* table, int n, unsigned long long* counts) {
  __syncthreads();
  for (int i = static_cast<int>(threadIdx.x); i < n; i += static_cast<int>(blockDim.x)) {
    const unsigned k = table[i];
    if (k != 0) {
      atomicAdd(counts + i, static_cast<unsigned long long>(k));
      table[i] = 0;
    }
  }
  __syncthreads();
}

// Packets per thread in flight in the counting kernels.
inline constexpr int histogram_rows_unroll = 4;

// Channels along rows (per tensor: channels = 1, the matrix walked as one row). Shared: a table of bins + 1
// 32-bit counters in dynamic shared memory, flushed at each change of channel (block-uniform: with gridDim.y a
// multiple of `channels` a block sees one channel) and every histogram_flush_every values; else atomics straight
// into the global counts (grids too large for shared memory).
template <int N, bool Shared, class T>
__global__ void __launch_bounds__(reduce_block_threads)
    row_histogram_kernel(index_t rows, int cols, const T* x, index_t stride, index_t channels, int bins,
                         const grid_lanes<float>* grids, unsigned long long* counts, unsigned long long* outside) {
  extern __shared__ unsigned table[];
  constexpr int K = histogram_rows_unroll;
  const int slots = bins + 1;
  if (Shared) {
    for (int i = static_cast<int>(threadIdx.x); i < slots; i += static_cast<int>(blockDim.x)) table[i] = 0;
    __syncthreads();
  }
  outside_tally tally;
  index_t channel = -1;
  grid_lanes<float> g{};
  unsigned long long* out = counts;
  long long pending = 0;  // values counted into the table since its last flush (block-uniform)
  const int span = static_cast<int>(blockDim.x) * N * K;
  for (index_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const index_t c = r % channels;
    if (c != channel) {
      if (Shared && channel >= 0) flush_table(table, slots, out);
      pending = 0;
      channel = c;
      g = grids[c];
      out = counts + c * slots;
    }
    const T* row = x + r * stride;
    for (int base = static_cast<int>(blockIdx.x) * span; base < cols; base += static_cast<int>(gridDim.x) * span) {
      if (Shared && pending >= histogram_flush_every) {
        flush_table(table, slots, out);
        pending = 0;
      }
      float v[K][N];
      load_tile<N, K>(row, base, cols, 0.0f, v);
#pragma unroll
      for (int k = 0; k < K; ++k)
#pragma unroll
        for (int i = 0; i < N; ++i) {
          if (valid<N, K>(base, cols, k, i)) {
            const int b = bin_of(g, v[k][i]);
            if (b == g.bins) tally_outside(v[k][i], tally);
            if (Shared) {
              atomicAdd(table + b, 1u);
            } else {
              atomicAdd(out + b, 1ull);
            }
          }
        }
      pending += span;
    }
  }
  if (Shared && channel >= 0) flush_table(table, slots, out);
  publish_outside(tally, outside);
}

// Rows loaded per thread before they are counted in column_histogram_kernel.
inline constexpr int histogram_columns_unroll = 4;

// Channels along columns: a block takes `tile` consecutive columns (thread t: column t mod tile, rows t / tile +
// k·(blockDim.x / tile)); Shared: one table of bins + 1 32-bit counters per column of the tile, flushed every
// histogram_flush_every rows and at the end; else atomics straight into the global counts.
template <bool Shared, class T>
__global__ void __launch_bounds__(reduce_block_threads)
    column_histogram_kernel(index_t rows, int cols, const T* x, index_t stride, int tile, int bins,
                            const grid_lanes<float>* grids, unsigned long long* counts, unsigned long long* outside) {
  extern __shared__ unsigned table[];
  constexpr int U = histogram_columns_unroll;
  const int slots = bins + 1;
  const int lane = static_cast<int>(threadIdx.x) % tile;
  const index_t first = index_t{blockIdx.x} * tile;  // the tile's first column
  const index_t j = first + lane;
  const bool active = j < cols;
  const grid_lanes<float> g = grids[active ? j : first];
  if (Shared) {
    for (int i = static_cast<int>(threadIdx.x); i < tile * slots; i += static_cast<int>(blockDim.x)) table[i] = 0;
    __syncthreads();
  }
  unsigned* mine = table + lane * slots;
  unsigned long long* out = counts + (active ? j : first) * slots;
  // Whole block: the tile's tables into the global counts (columns past the end have nothing counted).
  const auto flush = [&] {
    __syncthreads();
    for (int i = static_cast<int>(threadIdx.x); i < tile * slots; i += static_cast<int>(blockDim.x)) {
      const unsigned k = table[i];
      if (k != 0) {
        atomicAdd(counts + first * slots + i, static_cast<unsigned long long>(k));
        table[i] = 0;
      }
    }
    __syncthreads();
  };
  outside_tally tally;
  const index_t rows_per_step = static_cast<index_t>(blockDim.x) / tile;
  const index_t step = rows_per_step * gridDim.y;  // rows from one step of the block to its next
  long long pending = 0;                           // rows a column counted since the last flush (block-uniform)
  for (index_t r0 = index_t{blockIdx.y} * rows_per_step; r0 < rows; r0 += U * step) {
    if (Shared && pending >= histogram_flush_every) {
      flush();
      pending = 0;
    }
    float v[U];
    bool in[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const index_t r = r0 + u * step + static_cast<index_t>(threadIdx.x) / tile;
      in[u] = active && r < rows;
      v[u] = in[u] ? to_float(x[r * stride + j]) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (in[u]) {
        const int b = bin_of(g, v[u]);
        if (b == g.bins) tally_outside(v[u], tally);
        if (Shared) {
          atomicAdd(mine + b, 1u);
        } else {
          atomicAdd(out + b, 1ull);
        }
      }
    }
    pending += U * rows_per_step;
  }
  if (Shared) flush();
  publish_outside(tally, outside);
}

}  // namespace qsafe::detail::cuda
