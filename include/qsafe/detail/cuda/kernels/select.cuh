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

struct select_target {
  std::uint32_t prefix;  // the known leading bits of the wanted key
  std::uint32_t pad;
  unsigned long long rank;  // the rank among the keys with that prefix
};

// Counts digit (key >> (32 − known − bits)) & (2^bits − 1) of each value whose key starts with a target's
// prefix (known = 0: every value, into one histogram). `copies` histograms per target in shared memory (warp w
// counts into copy w % copies) spread the same-bin atomics of pass 1; counts: [histograms][2^bits], 64-bit.
template <int N, class T>
__global__ void __launch_bounds__(reduce_block_threads)
    radix_histogram_kernel(index_t rows, int cols, const T* x, index_t stride, const select_target* targets,
                           int histograms, int known, int bits, int copies, unsigned long long* counts,
                           unsigned long long* non_finite) {
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
  unsigned bad = 0;
  constexpr int unroll = 4;
  for (index_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const T* row = x + r * stride;
    const int step = static_cast<int>(gridDim.x * blockDim.x) * N;
    for (int j0 = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) * N); j0 < cols; j0 += unroll * step) {
      float v[unroll][N];
#pragma unroll
      for (int u = 0; u < unroll; ++u) {
        const int j = j0 + u * step;
        to_float(load_packet<N>(row, j, j < cols ? cols : 0, from_float<T>(0.0f)), v[u]);
      }
#pragma unroll
      for (int u = 0; u < unroll; ++u) {
#pragma unroll
        for (int i = 0; i < N; ++i) {
          if (j0 + u * step + i >= cols) continue;
          const std::uint32_t key = order_key(v[u][i]);
          if (known == 0) {
            atomicAdd(mine + (key >> shift), 1u);
            bad += isfinite(v[u][i]) ? 0u : 1u;
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
  if (known == 0) {
    bad = warp_reduce(bad, [](unsigned& a, unsigned b) { a += b; });
    if (threadIdx.x % 32 == 0 && bad > 0) atomicAdd(non_finite, static_cast<unsigned long long>(bad));
  }
}

// Warp t: finds the bin of histogram (histograms == 1 ? 0 : t) holding targets[t].rank and descends into it.
template <class Target>
__global__ void radix_select_kernel(Target* targets, int count, const unsigned long long* counts, int histograms,
                                    int bits) {
  const int t = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  if (t >= count) return;
  const int bins = 1 << bits, per_lane = bins / 32;
  const unsigned long long* h = counts + (histograms == 1 ? 0 : t) * bins;
  const unsigned long long rank = targets[t].rank;
  const std::uint32_t prefix = targets[t].prefix;
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
