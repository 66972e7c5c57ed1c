#pragma once
// Statistics kernels (REFERENCE §3): one read of the tensor.
//  - moments_kernel: each thread takes tiles of K packets (N elements each, 16-byte loads); a tile's power sums
//    about its midrange are taken in fp32 (32 or 64 terms) and turned into central moments in double, merged into the
//    thread's running moments with the pairwise formulas of qsafe::moments::merge; a fixed-order block reduction writes
//    one partial per block, and combine_moments_kernel merges the partials in a fixed order. Deterministic for a given
//    shape.
//  - row_ranges_kernel / column_ranges_kernel: min and max per channel, folded into order-preserving uint32 keys
//    with atomicMin / atomicMax (exact, so the order of the atomics does not matter).
// Both flag non-finite values; count_non_finite_kernel counts them for the error message (the public functions
// reject them, as the host ones do).

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "qsafe/detail/cuda/block_reduce.cuh"
#include "qsafe/detail/cuda/element.cuh"
#include "qsafe/matrix_view.hpp"

namespace qsafe::detail::cuda {

// The float's bits mapped so that unsigned order is the float order (-inf < ... < -0 < +0 < ... < +inf).
__device__ __forceinline__ std::uint32_t order_key(float v) {
  const std::uint32_t bits = __float_as_uint(v);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Count, mean, central moment sums, min and max of a set of values, and how many of its tiles held a NaN or ±inf
// (the exact count is taken by count_non_finite_kernel, on the error path only).
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

// The K packets of this thread's tile; elements at or past `cols` read as `fill`.
template <int N, int K, class T>
__device__ __forceinline__ void load_raw_tile(const T* row, int base, int cols, T fill, packet<T, N> (&raw)[K]) {
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int j = base + (k * static_cast<int>(blockDim.x) + static_cast<int>(threadIdx.x)) * N;
    raw[k] = load_packet<N>(row, j, j < cols ? cols : 0, fill);
  }
}

// The K packets of this thread's tile as floats; elements at or past `cols` read as `fill`.
template <int N, int K, class T>
__device__ __forceinline__ void load_tile(const T* row, int base, int cols, float fill, float (&v)[K][N]) {
  packet<T, N> raw[K];
  load_raw_tile<N, K>(row, base, cols, from_float<T>(fill), raw);
#pragma unroll
  for (int k = 0; k < K; ++k) to_float(raw[k], v[k]);
}

template <int N, int K>
__device__ __forceinline__ bool valid(int base, int cols, int k, int i) {
  return base + (k * static_cast<int>(blockDim.x) + static_cast<int>(threadIdx.x)) * N + i < cols;
}

// min and max of a whole tile of 16-bit values, on the packed pairs (__hmin2 / __hmax2: one instruction per two
// values, NaN ignored as fminf does; exact, the packed types' order is the values' order).
template <int N, int K, class T>
__device__ __forceinline__ void packed_range(const packet<T, N> (&t)[K], float& lo, float& hi) {
  using pair = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
  pair lo2, hi2;
  memcpy(&lo2, &t[0].v[0], sizeof(pair));
  hi2 = lo2;
#pragma unroll
  for (int k = 0; k < K; ++k)
#pragma unroll
    for (int i = 0; i < N; i += 2) {
      pair p;
      memcpy(&p, &t[k].v[i], sizeof(pair));
      lo2 = __hmin2(lo2, p);
      hi2 = __hmax2(hi2, p);
    }
  lo = fminf(to_float(lo2.x), to_float(lo2.y));
  hi = fmaxf(to_float(hi2.x), to_float(hi2.y));
}

// One tile's moments: the power sums of its deviations from its midrange, scaled by a power of two 2^-e so that
// their 4th powers neither overflow nor underflow (as the host kernels do), summed in fp32 over the tile (at most
// 64 terms: relative error <= 64·2^-24 per sum), then unscaled exactly in double and turned into central sums as
// qsafe::moments::from_power_sums does. The midrange shift keeps clustered data (1e6 + N(0, 1)) exact: the
// differences are then exact in fp32. A spread in [2^-30, 2^30) needs no scaling (e = 0: the same sums as the
// scaled ones up to an exact power of two), which saves a multiply per value.
template <int N, int K, bool Full, class T>
__device__ __forceinline__ partial_moments tile_moments(const packet<T, N> (&t)[K], int base, int cols) {
  // Values are widened where used (a 16-bit packet holds half the registers of its floats).
  const auto v = [&](int k, int i) { return to_float(t[k].v[i]); };
  partial_moments m = empty_moments();
  unsigned count = 0;
  if constexpr (Full && sizeof(T) == 2 && N % 2 == 0) {
    packed_range<N, K>(t, m.lo, m.hi);
    count = N * K;
  } else {
    // Two interleaved chains (even and odd packets): half the dependent latency.
    float lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int k = 0; k < K; ++k)
#pragma unroll
      for (int i = 0; i < N; ++i) {
        if (Full || valid<N, K>(base, cols, k, i)) {
          lo[k % 2] = fminf(lo[k % 2], v(k, i));
          hi[k % 2] = fmaxf(hi[k % 2], v(k, i));
          ++count;
        }
      }
    m.lo = fminf(lo[0], lo[1]);
    m.hi = fmaxf(hi[0], hi[1]);
  }
  if (count == 0) return m;
  const float shift = 0.5f * m.lo + 0.5f * m.hi;
  // e: the exponent of the spread, kept where 2^-e and 2^(4e) are normal (and 0 for a zero or non-finite spread);
  // read off the bits (a subnormal spread reads -127, clamped to -118 as its true exponent would be).
  const float spread = fmaxf(m.hi - shift, shift - m.lo);
  int e = spread > 0.0f && spread <= FLT_MAX
              ? max(-118, min(126, static_cast<int>((__float_as_uint(spread) >> 23) & 0xffu) - 127))
              : 0;
  if (e >= -30 && e <= 29) e = 0;  // 64 values' d^4 < 2^126 unscaled; the largest term's d^4 stays normal
  const float scale = __int_as_float((127 - e) << 23);
  float s1[2] = {}, s2[2] = {}, s3[2] = {}, s4[2] = {};
  const auto accumulate = [&](auto scaled) {
#pragma unroll
    for (int k = 0; k < K; ++k)
#pragma unroll
      for (int i = 0; i < N; ++i) {
        if (Full || valid<N, K>(base, cols, k, i)) {
          const float d = decltype(scaled)::value ? (v(k, i) - shift) * scale : v(k, i) - shift, d2 = d * d;
          s1[k % 2] += d;
          s2[k % 2] = fmaf(d, d, s2[k % 2]);
          s3[k % 2] = fmaf(d2, d, s3[k % 2]);
          s4[k % 2] = fmaf(d2, d2, s4[k % 2]);
        }
      }
  };
  if (e == 0) {
    accumulate(std::false_type{});
  } else {
    accumulate(std::true_type{});
  }
  // A NaN or ±inf makes the scaled sums NaN or inf (finite deviations are at most 2 after scaling).
  const float u1 = s1[0] + s1[1], u2 = s2[0] + s2[1], u3 = s3[0] + s3[1], u4 = s4[0] + s4[1];
  m.non_finite = fabsf(u1) + u2 <= 1e30f ? 0ull : 1ull;
  const double p = __longlong_as_double(static_cast<long long>(1023 + e) << 52), p2 = p * p;
  const double t1 = static_cast<double>(u1) * p, t2 = static_cast<double>(u2) * p2;
  const double t3 = static_cast<double>(u3) * p2 * p, t4 = static_cast<double>(u4) * p2 * p2;
  const double n = static_cast<double>(count), a = Full ? t1 * (1.0 / (N * K)) : t1 / n;
  m.n = n;
  m.mean = static_cast<double>(shift) + a;
  m.m2 = fmax(t2 - a * t1, 0.0);
  m.m3 = t3 - 3.0 * a * t2 + 2.0 * n * a * a * a;
  m.m4 = fmax(t4 - 4.0 * a * t3 + 6.0 * a * a * t2 - 3.0 * n * a * a * a * a, 0.0);
  return m;
}

// One partial per block: partials[blockIdx.y · gridDim.x + blockIdx.x]. Built for MinBlocks resident blocks an SM
// (reduction_tuning::moments_blocks_per_sm): at 4 (64 registers) a tile of 32 values and the double merge spilled.
template <int N, int K, class T, int MinBlocks>
__global__ void __launch_bounds__(reduce_block_threads, MinBlocks)
    moments_kernel(index_t rows, int cols, const T* x, index_t stride, partial_moments* partials) {
  __shared__ partial_moments slots[reduce_block_threads / 32];
  partial_moments acc = empty_moments();
  const int span = static_cast<int>(blockDim.x) * N * K;
  const T zero = from_float<T>(0.0f);
  for_each_tile<N * K>(rows, cols, [&](index_t r, int base) {
    packet<T, N> t[K];
    load_raw_tile<N, K>(x + r * stride, base, cols, zero, t);
    if (base + span <= cols) {
      merge_moments(acc, tile_moments<N, K, true>(t, base, cols));
    } else {
      merge_moments(acc, tile_moments<N, K, false>(t, base, cols));
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

// Packets per thread in flight in the range kernels.
inline constexpr int range_unroll = 4;

// min, max, and `probe` = the sum of v·0, which is NaN exactly when some v is NaN or ±inf (one FMA a value
// instead of a classification; the exact count is taken on the error path only).
struct partial_range {
  float lo, hi, probe;
};

struct merge_range_op {
  __device__ __forceinline__ void operator()(partial_range& a, const partial_range& b) const {
    a.lo = fminf(a.lo, b.lo);
    a.hi = fmaxf(a.hi, b.hi);
    a.probe += b.probe;
  }
};

template <int N, int K, bool Full>
__device__ __forceinline__ void fold_range(const float (&v)[K][N], int base, int cols, partial_range& acc) {
#pragma unroll
  for (int k = 0; k < K; ++k)
#pragma unroll
    for (int i = 0; i < N; ++i) {
      if (Full || valid<N, K>(base, cols, k, i)) {
        acc.lo = fminf(acc.lo, v[k][i]);
        acc.hi = fmaxf(acc.hi, v[k][i]);
        acc.probe = fmaf(v[k][i], 0.0f, acc.probe);
      }
    }
}

// min_keys[c] / max_keys[c]: the order keys of channel c's min and max (initialized by the caller to ~0u and 0).
__device__ __forceinline__ void publish_range(const partial_range& r, index_t channel, std::uint32_t* min_keys,
                                              std::uint32_t* max_keys, unsigned long long* non_finite) {
  if (r.lo <= r.hi) {
    atomicMin(min_keys + channel, order_key(r.lo));
    atomicMax(max_keys + channel, order_key(r.hi));
  }
  if (!(r.probe == 0.0f)) atomicAdd(non_finite, 1ull);
}

// Channels along rows (row r is channel r % channels; per tensor: channels = 1). The block's rows are
// blockIdx.y + k·gridDim.y, so with gridDim.y a multiple of `channels` (`OneChannel`: the dispatcher arranges it
// where it can) a block sees one channel and publishes once, and each thread loads its packet of `range_unroll` of
// the block's rows at a time: rows shorter than a block's tile (1024-column bf16 channels) then still keep every
// thread busy with several loads in flight (the tile along a row left half the threads idle: 48% of copy).
// Otherwise the block publishes at each change of channel (block-uniform) and walks a row at a time.
template <int N, bool OneChannel, class T>
__global__ void __launch_bounds__(reduce_block_threads, reduce_blocks_per_sm)
    row_ranges_kernel(index_t rows, int cols, const T* x, index_t stride, index_t channels, std::uint32_t* min_keys,
                      std::uint32_t* max_keys, unsigned long long* non_finite) {
  __shared__ partial_range slots[reduce_block_threads / 32];
  const partial_range identity{INFINITY, -INFINITY, 0.0f};
  partial_range acc = identity;
  if constexpr (OneChannel) {
    if (blockIdx.y >= rows) return;
    const index_t row_step = gridDim.y;
    for (index_t r0 = blockIdx.y; r0 < rows; r0 += range_unroll * row_step) {
      for (int j = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) * N); j < cols;
           j += static_cast<int>(gridDim.x * blockDim.x * N)) {
        float v[range_unroll][N];
#pragma unroll
        for (int u = 0; u < range_unroll; ++u) {
          // A row past the end repeats row r0 (no effect on min, max or the NaN probe's verdict).
          const index_t r = r0 + u * row_step < rows ? r0 + u * row_step : r0;
          to_float(load_packet<N>(x + r * stride, j, cols, from_float<T>(0.0f)), v[u]);
        }
#pragma unroll
        for (int u = 0; u < range_unroll; ++u)
#pragma unroll
          for (int i = 0; i < N; ++i) {
            if (j + i < cols) {
              acc.lo = fminf(acc.lo, v[u][i]);
              acc.hi = fmaxf(acc.hi, v[u][i]);
              acc.probe = fmaf(v[u][i], 0.0f, acc.probe);
            }
          }
      }
    }
    const partial_range total = block_reduce(acc, identity, merge_range_op{}, slots);
    if (threadIdx.x == 0) publish_range(total, blockIdx.y % channels, min_keys, max_keys, non_finite);
    return;
  }
  index_t channel = -1;
  for (index_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const index_t c = r % channels;
    if (c != channel) {
      if (channel >= 0) {
        const partial_range total = block_reduce(acc, identity, merge_range_op{}, slots);
        if (threadIdx.x == 0) publish_range(total, channel, min_keys, max_keys, non_finite);
        acc = identity;
      }
      channel = c;
    }
    const T* row = x + r * stride;
    const int span = static_cast<int>(blockDim.x) * N * range_unroll;
    for (int base = static_cast<int>(blockIdx.x) * span; base < cols; base += static_cast<int>(gridDim.x) * span) {
      float v[range_unroll][N];
      load_tile<N, range_unroll>(row, base, cols, 0.0f, v);
      // Whole tiles skip the per-element bound test.
      if (base + span <= cols) {
        fold_range<N, range_unroll, true>(v, base, cols, acc);
      } else {
        fold_range<N, range_unroll, false>(v, base, cols, acc);
      }
    }
  }
  if (channel >= 0) {
    const partial_range total = block_reduce(acc, identity, merge_range_op{}, slots);
    if (threadIdx.x == 0) publish_range(total, channel, min_keys, max_keys, non_finite);
  }
}

// Channels along columns (column j is channel j): each thread keeps the range of its N columns over the rows
// blockIdx.y + k·gridDim.y, then publishes them.
template <int N, class T>
__global__ void __launch_bounds__(reduce_block_threads, reduce_blocks_per_sm)
    column_ranges_kernel(index_t rows, int cols, const T* x, index_t stride, std::uint32_t* min_keys,
                         std::uint32_t* max_keys, unsigned long long* non_finite) {
  const int j = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) * N);
  if (j >= cols) return;
  float lo[N], hi[N];
  float probe = 0.0f;
#pragma unroll
  for (int i = 0; i < N; ++i) lo[i] = INFINITY, hi[i] = -INFINITY;
  for (index_t r0 = blockIdx.y; r0 < rows; r0 += range_unroll * index_t{gridDim.y}) {
    float v[range_unroll][N];
#pragma unroll
    for (int u = 0; u < range_unroll; ++u) {
      // A row past the end repeats row r0 (no effect on min and max; not counted twice below).
      const index_t r = r0 + u * index_t{gridDim.y} < rows ? r0 + u * index_t{gridDim.y} : r0;
      to_float(load_packet<N>(x + r * stride, j, cols, from_float<T>(0.0f)), v[u]);
    }
#pragma unroll
    for (int u = 0; u < range_unroll; ++u)
#pragma unroll
      for (int i = 0; i < N; ++i) {
        lo[i] = fminf(lo[i], v[u][i]);
        hi[i] = fmaxf(hi[i], v[u][i]);
        if (j + i < cols) probe = fmaf(v[u][i], 0.0f, probe);  // a repeated row only repeats a value
      }
  }
#pragma unroll
  for (int i = 0; i < N; ++i) {
    if (j + i < cols) publish_range({lo[i], hi[i], i == 0 ? probe : 0.0f}, j + i, min_keys, max_keys, non_finite);
  }
}

// The exact number of NaN and ±inf values (the error path: the other kernels only flag them).
template <int N, class T>
__global__ void __launch_bounds__(reduce_block_threads)
    count_non_finite_kernel(index_t rows, int cols, const T* x, index_t stride, unsigned long long* count) {
  unsigned bad = 0;
  for (index_t r = blockIdx.y; r < rows; r += gridDim.y) {
    for (int j = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) * N); j < cols;
         j += static_cast<int>(gridDim.x * blockDim.x * N)) {
      float v[N];
      to_float(load_packet<N>(x + r * stride, j, cols, from_float<T>(0.0f)), v);
#pragma unroll
      for (int i = 0; i < N; ++i) bad += (j + i < cols && !isfinite(v[i])) ? 1u : 0u;
    }
  }
  bad = warp_reduce(bad, [](unsigned& a, unsigned b) { a += b; });
  if (threadIdx.x % 32 == 0 && bad > 0) atomicAdd(count, static_cast<unsigned long long>(bad));
}

}  // namespace qsafe::detail::cuda
