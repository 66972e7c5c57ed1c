#pragma once
// Statistics kernels (REFERENCE §3): one read of the tensor.
//  - moments_kernel: each thread takes tiles of K packets (N elements each, 16-byte loads); a tile's power sums
//    about its midrange are taken in double and turned into central moments, merged into the thread's running
//    moments with the pairwise formulas of qsafe::moments::merge; a fixed-order block reduction writes one partial
//    per block, and combine_moments_kernel merges the partials in a fixed order. Deterministic for a given shape.
//  - row_ranges_kernel / column_ranges_kernel: min and max per channel, folded into order-preserving uint32 keys
//    with atomicMin / atomicMax (exact, so the order of the atomics does not matter).
// Both count non-finite values (the public functions reject them, as the host ones do).

#include <cuda_runtime.h>

#include <cstdint>

#include "qsafe/detail/cuda/block_reduce.cuh"
#include "qsafe/detail/cuda/element.cuh"
#include "qsafe/matrix_view.hpp"

namespace qsafe::detail::cuda {

// The float's bits mapped so that unsigned order is the float order (-inf < ... < -0 < +0 < ... < +inf).
__device__ __forceinline__ std::uint32_t order_key(float v) {
  const std::uint32_t bits = __float_as_uint(v);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Count, mean, central moment sums, min and max of a set of values, and how many were not finite.
struct partial_moments {
  double n, mean, m2, m3, m4;
  float lo, hi;
  unsigned long long non_finite;
};

__host__ __device__ inline partial_moments empty_moments() {
  return {0.0, 0.0, 0.0, 0.0, 0.0, INFINITY, -INFINITY, 0ull};
}

// a <- the moments of a ∪ b: the formulas of qsafe::moments::merge (Pébay 2008), in the same order.
__device__ __forceinline__ void merge_moments(partial_moments& a, const partial_moments& b) {
  a.non_finite += b.non_finite;
  a.lo = fminf(a.lo, b.lo);
  a.hi = fmaxf(a.hi, b.hi);
  if (b.n == 0.0) return;
  if (a.n == 0.0) {
    a.n = b.n;
    a.mean = b.mean;
    a.m2 = b.m2;
    a.m3 = b.m3;
    a.m4 = b.m4;
    return;
  }
  const double na = a.n, nb = b.n, n = na + nb;
  const double delta = b.mean - a.mean, dn = delta / n, dn2 = dn * dn;
  const double cross = delta * dn * na * nb;
  const double m4 = a.m4 + b.m4 + cross * dn2 * (na * na - na * nb + nb * nb) +
                    6.0 * dn2 * (na * na * b.m2 + nb * nb * a.m2) + 4.0 * dn * (na * b.m3 - nb * a.m3);
  const double m3 = a.m3 + b.m3 + cross * dn * (na - nb) + 3.0 * dn * (na * b.m2 - nb * a.m2);
  a.m2 = a.m2 + b.m2 + cross;
  a.m3 = m3;
  a.m4 = m4;
  a.mean = a.mean + nb * dn;
  a.n = n;
}

struct merge_moments_op {
  __device__ __forceinline__ void operator()(partial_moments& a, const partial_moments& b) const {
    merge_moments(a, b);
  }
};

// Grid-stride walk over a matrix: rows over blockIdx.y, tiles of `Tile` consecutive packets-per-thread along a row
// over blockIdx.x. f(row, base) is called for each tile start; the thread's packets are at
// base + (k·blockDim.x + threadIdx.x)·N, k < Tile / N.
template <int Tile, class F>
__device__ __forceinline__ void for_each_tile(index_t rows, int cols, F&& f) {
  const int span = static_cast<int>(blockDim.x) * Tile;
  for (index_t r = blockIdx.y; r < rows; r += gridDim.y) {
    for (int base = static_cast<int>(blockIdx.x) * span; base < cols; base += static_cast<int>(gridDim.x) * span) {
      f(r, base);
    }
  }
}

// The K packets of this thread's tile as floats; elements at or past `cols` read as `fill`.
template <int N, int K, class T>
__device__ __forceinline__ void load_tile(const T* row, int base, int cols, float fill, float (&v)[K][N]) {
  const T filler = from_float<T>(fill);
  packet<T, N> raw[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int j = base + (k * static_cast<int>(blockDim.x) + static_cast<int>(threadIdx.x)) * N;
    raw[k] = load_packet<N>(row, j, j < cols ? cols : 0, filler);
  }
#pragma unroll
  for (int k = 0; k < K; ++k) to_float(raw[k], v[k]);
}

template <int N, int K>
__device__ __forceinline__ bool valid(int base, int cols, int k, int i) {
  return base + (k * static_cast<int>(blockDim.x) + static_cast<int>(threadIdx.x)) * N + i < cols;
}

// One tile's moments: power sums of (v − midrange) in double (no scaling needed: the 4th power of a float
// difference stays far inside double's range), then central sums as qsafe::moments::from_power_sums does.
template <int N, int K, bool Full>
__device__ __forceinline__ partial_moments tile_moments(const float (&v)[K][N], int base, int cols) {
  float lo = INFINITY, hi = -INFINITY;
  unsigned bad = 0, count = 0;
#pragma unroll
  for (int k = 0; k < K; ++k)
#pragma unroll
    for (int i = 0; i < N; ++i) {
      if (Full || valid<N, K>(base, cols, k, i)) {
        lo = fminf(lo, v[k][i]);
        hi = fmaxf(hi, v[k][i]);
        bad += isfinite(v[k][i]) ? 0u : 1u;
        ++count;
      }
    }
  partial_moments m = empty_moments();
  m.non_finite = bad;
  m.lo = lo;
  m.hi = hi;
  if (count == 0) return m;
  const double shift = 0.5 * static_cast<double>(lo) + 0.5 * static_cast<double>(hi);
  double s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0;
#pragma unroll
  for (int k = 0; k < K; ++k)
#pragma unroll
    for (int i = 0; i < N; ++i) {
      if (Full || valid<N, K>(base, cols, k, i)) {
        const double d = static_cast<double>(v[k][i]) - shift, d2 = d * d;
        s1 += d;
        s2 += d2;
        s3 = fma(d2, d, s3);
        s4 = fma(d2, d2, s4);
      }
    }
  const double n = static_cast<double>(count), a = Full ? s1 * (1.0 / (N * K)) : s1 / n;
  m.n = n;
  m.mean = shift + a;
  m.m2 = fmax(s2 - a * s1, 0.0);
  m.m3 = s3 - 3.0 * a * s2 + 2.0 * n * a * a * a;
  m.m4 = fmax(s4 - 4.0 * a * s3 + 6.0 * a * a * s2 - 3.0 * n * a * a * a * a, 0.0);
  return m;
}

// One partial per block: partials[blockIdx.y · gridDim.x + blockIdx.x].
template <int N, int K, class T>
__global__ void __launch_bounds__(reduce_block_threads)
    moments_kernel(index_t rows, int cols, const T* x, index_t stride, partial_moments* partials) {
  __shared__ partial_moments slots[reduce_block_threads / 32];
  partial_moments acc = empty_moments();
  const int span = static_cast<int>(blockDim.x) * N * K;
  for_each_tile<N * K>(rows, cols, [&](index_t r, int base) {
    float v[K][N];
    load_tile<N, K>(x + r * stride, base, cols, 0.0f, v);
    if (base + span <= cols) {
      merge_moments(acc, tile_moments<N, K, true>(v, base, cols));
    } else {
      merge_moments(acc, tile_moments<N, K, false>(v, base, cols));
    }
  });
  acc = block_reduce(acc, empty_moments(), merge_moments_op{}, slots);
  if (threadIdx.x == 0) partials[blockIdx.y * gridDim.x + blockIdx.x] = acc;
}

// One block: thread t merges partials t, t + blockDim.x, ... in order, then the fixed block reduction.
// (A template, as every kernel in these headers, so that several translation units may include it.)
template <class Partial>
__global__ void __launch_bounds__(reduce_block_threads)
    combine_moments_kernel(const Partial* partials, int count, Partial* result) {
  __shared__ Partial slots[reduce_block_threads / 32];
  Partial acc = empty_moments();
  for (int i = static_cast<int>(threadIdx.x); i < count; i += static_cast<int>(blockDim.x)) {
    merge_moments(acc, partials[i]);
  }
  acc = block_reduce(acc, empty_moments(), merge_moments_op{}, slots);
  if (threadIdx.x == 0) *result = acc;
}

struct partial_range {
  float lo, hi;
  unsigned non_finite;
};

struct merge_range_op {
  __device__ __forceinline__ void operator()(partial_range& a, const partial_range& b) const {
    a.lo = fminf(a.lo, b.lo);
    a.hi = fmaxf(a.hi, b.hi);
    a.non_finite += b.non_finite;
  }
};

// keys[c] = min key, keys[channels + c] = max key of channel c (initialized by the caller to ~0u and 0).
__device__ __forceinline__ void publish_range(const partial_range& r, index_t channel, index_t channels,
                                              std::uint32_t* keys, unsigned long long* non_finite) {
  if (r.lo <= r.hi) {
    atomicMin(keys + channel, order_key(r.lo));
    atomicMax(keys + channels + channel, order_key(r.hi));
  }
  if (r.non_finite > 0) atomicAdd(non_finite, static_cast<unsigned long long>(r.non_finite));
}

// Channels along rows (row r is channel r % channels; per tensor: channels = 1). The block's rows are
// blockIdx.y + k·gridDim.y, so with gridDim.y a multiple of `channels` a block sees one channel and publishes
// once; otherwise it publishes at each change of channel (block-uniform).
template <int N, class T>
__global__ void __launch_bounds__(reduce_block_threads)
    row_ranges_kernel(index_t rows, int cols, const T* x, index_t stride, index_t channels, std::uint32_t* keys,
                      unsigned long long* non_finite) {
  __shared__ partial_range slots[reduce_block_threads / 32];
  const partial_range identity{INFINITY, -INFINITY, 0u};
  partial_range acc = identity;
  index_t channel = -1;
  for (index_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const index_t c = r % channels;
    if (c != channel) {
      if (channel >= 0) {
        const partial_range total = block_reduce(acc, identity, merge_range_op{}, slots);
        if (threadIdx.x == 0) publish_range(total, channel, channels, keys, non_finite);
        acc = identity;
      }
      channel = c;
    }
    const T* row = x + r * stride;
    for (int j = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) * N); j < cols;
         j += static_cast<int>(gridDim.x * blockDim.x * N)) {
      float v[N];
      to_float(load_packet<N>(row, j, cols, from_float<T>(0.0f)), v);
#pragma unroll
      for (int i = 0; i < N; ++i) {
        if (j + i < cols) {
          acc.lo = fminf(acc.lo, v[i]);
          acc.hi = fmaxf(acc.hi, v[i]);
          acc.non_finite += isfinite(v[i]) ? 0u : 1u;
        }
      }
    }
  }
  if (channel >= 0) {
    const partial_range total = block_reduce(acc, identity, merge_range_op{}, slots);
    if (threadIdx.x == 0) publish_range(total, channel, channels, keys, non_finite);
  }
}

// Channels along columns (column j is channel j): each thread keeps the range of its N columns over the rows
// blockIdx.y + k·gridDim.y, then publishes them.
template <int N, class T>
__global__ void __launch_bounds__(reduce_block_threads)
    column_ranges_kernel(index_t rows, int cols, const T* x, index_t stride, std::uint32_t* keys,
                         unsigned long long* non_finite) {
  const int j = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) * N);
  if (j >= cols) return;
  float lo[N], hi[N];
  unsigned bad = 0;
#pragma unroll
  for (int i = 0; i < N; ++i) lo[i] = INFINITY, hi[i] = -INFINITY;
  for (index_t r = blockIdx.y; r < rows; r += gridDim.y) {
    float v[N];
    to_float(load_packet<N>(x + r * stride, j, cols, from_float<T>(0.0f)), v);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      lo[i] = fminf(lo[i], v[i]);
      hi[i] = fmaxf(hi[i], v[i]);
      bad += (j + i < cols && !isfinite(v[i])) ? 1u : 0u;
    }
  }
#pragma unroll
  for (int i = 0; i < N; ++i) {
    if (j + i < cols) publish_range({lo[i], hi[i], 0u}, j + i, cols, keys, non_finite);
  }
  if (bad > 0) atomicAdd(non_finite, static_cast<unsigned long long>(bad));
}

}  // namespace qsafe::detail::cuda
