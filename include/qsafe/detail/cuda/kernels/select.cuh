#pragma once
// Exact order statistics on the device: a radix selection on the float's order-preserving uint32 key
// (kernels/stats.cuh, order_key), three passes of 11, 11 and 10 bits. Each pass counts, for every wanted rank
// (a *target*), the next digit of the keys that share the target's known prefix (pass 1: the top 11 bits of every
// key, one histogram for all targets) into shared-memory histograms, added to a global one; a one-warp-per-target
// kernel then finds the bin holding the target's rank and extends its prefix. After 32 bits the prefix is the
// value's key: exact, no sort, no copy of the tensor, no host round trip between passes.

#include <cuda_runtime.h>

#include <cstdint>

#include "qsafe/detail/cuda/block_reduce.cuh"
#include "qsafe/detail/cuda/element.cuh"
#include "qsafe/detail/cuda/kernels/stats.cuh"
#include "qsafe/matrix_view.hpp"

namespace qsafe::detail::cuda {

// Targets handled by one run of the passes (one warp each in the select kernel, one histogram each).
inline constexpr int max_select_targets = 4;
inline constexpr int select_digit_bits[3] = {11, 11, 10};
inline constexpr int select_max_bins = 2048;
// Packets per thread in flight in the histogram kernel.
inline constexpr int histogram_unroll = 4;

struct select_target {
  std::uint32_t prefix;  // the known leading bits of the wanted key
  std::uint32_t pad;
  unsigned long long rank;  // the rank among the keys with that prefix
};

// Counts digit (key >> (32 − known − bits)) & (2^bits − 1) of each value whose key starts with a target's
// prefix (known = 0: every value, into one histogram; NaN and ±inf land in the end bins, see radix_select_kernel).
// `copies` histograms per target in shared memory (warp w counts into copy w % copies) spread the same-bin atomics of
// pass 1; counts: [histograms][2^bits], 64-bit.
template <int N, class T>
__global__ void __launch_bounds__(reduce_block_threads, reduce_blocks_per_sm)
    radix_histogram_kernel(index_t rows, int cols, const T* x, index_t stride, const select_target* targets,
                           int histograms, int known, int bits, int copies, unsigned long long* counts) {
  extern __shared__ unsigned shared_counts[];
  const int bins = 1 << bits, size = histograms * bins;
  for (int i = static_cast<int>(threadIdx.x); i < copies * size; i += static_cast<int>(blockDim.x)) {
    shared_counts[i] = 0;
  }
  std::uint32_t prefix[max_select_targets] = {};
  if (known > 0) {
#pragma unroll
    for (int t = 0; t < max_select_targets; ++t)
      if (t < histograms) prefix[t] = targets[t].prefix;
  }
  __syncthreads();
  unsigned* mine = shared_counts + (static_cast<int>(threadIdx.x) / 32 % copies) * size;
  const int shift = 32 - known - bits;
  const std::uint32_t mask = static_cast<std::uint32_t>(bins - 1);
  for (index_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const T* row = x + r * stride;
    const int step = static_cast<int>(gridDim.x * blockDim.x) * N;
    for (int j0 = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) * N); j0 < cols;
         j0 += histogram_unroll * step) {
      float v[histogram_unroll][N];
#pragma unroll
      for (int u = 0; u < histogram_unroll; ++u) {
        const int j = j0 + u * step;
        to_float(load_packet<N>(row, j, j < cols ? cols : 0, from_float<T>(0.0f)), v[u]);
      }
#pragma unroll
      for (int u = 0; u < histogram_unroll; ++u) {
#pragma unroll
        for (int i = 0; i < N; ++i) {
          if (j0 + u * step + i >= cols) continue;
          const std::uint32_t key = order_key(v[u][i]);
          if (known == 0) {
            atomicAdd(mine + (key >> shift), 1u);
          } else {
#pragma unroll
            for (int t = 0; t < max_select_targets; ++t) {
              if (t < histograms && (key >> (32 - known)) == prefix[t]) {
                atomicAdd(mine + t * bins + ((key >> shift) & mask), 1u);
              }
            }
          }
        }
      }
    }
  }
  __syncthreads();
  for (int i = static_cast<int>(threadIdx.x); i < size; i += static_cast<int>(blockDim.x)) {
    unsigned long long sum = 0;
    for (int c = 0; c < copies; ++c) sum += shared_counts[c * size + i];
    if (sum > 0) atomicAdd(counts + i, sum);
  }
}

// The ranks of a group of targets, passed by value to the first select kernel.
struct select_ranks_init {
  unsigned long long rank[max_select_targets];
};

// Warp t: finds the bin of histogram (histograms == 1 ? 0 : t) holding target t's rank and descends into it. In the
// first pass (known == 0) the target starts from `init`, else from targets[t]; then thread 0 also writes the number
// of NaN and ±inf values to `non_finite` (if not null): with 11 bits, the bins at or below -inf's key and at or above
// +inf's hold nothing else (±FLT_MAX fall in the next bins).
template <class Target>
__global__ void radix_select_kernel(Target* targets, int count, select_ranks_init init, int known,
                                    const unsigned long long* counts, int histograms, int bits,
                                    unsigned long long* non_finite) {
  const int t = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  if (t >= count) return;
  const int bins = 1 << bits, per_lane = bins / 32;
  const unsigned long long* h = counts + (histograms == 1 ? 0 : t) * bins;
  if (known == 0 && threadIdx.x == 0 && non_finite != nullptr) {
    const int below = static_cast<int>(order_key(-INFINITY) >> (32 - bits));
    const int above = static_cast<int>(order_key(INFINITY) >> (32 - bits));
    unsigned long long bad = 0;
    for (int b = 0; b <= below; ++b) bad += h[b];
    for (int b = above; b < bins; ++b) bad += h[b];
    *non_finite = bad;
  }
  const unsigned long long rank = known == 0 ? init.rank[t] : targets[t].rank;
  const std::uint32_t prefix = known == 0 ? 0u : targets[t].prefix;
  unsigned long long mine = 0;
  for (int b = lane * per_lane; b < (lane + 1) * per_lane; ++b) mine += h[b];
  unsigned long long inclusive = mine;
  for (int offset = 1; offset < 32; offset *= 2) {
    const unsigned long long other = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  unsigned long long below = inclusive - mine;
  if (below <= rank && rank < inclusive) {
    int b = lane * per_lane;
    while (below + h[b] <= rank) below += h[b++];
    targets[t].prefix = (prefix << bits) | static_cast<std::uint32_t>(b);
    targets[t].rank = rank - below;
  }
}

}  // namespace qsafe::detail::cuda
