#pragma once
// Warp and block pieces: a *row group* is `threads` consecutive threads of a block (a power of two, 4 to 1024) that
// compute one row together. Groups of up to 32 threads reduce with warp shuffles alone; larger groups add one
// exchange through shared memory. Reductions combine in a fixed order, so results are deterministic.

#include <cuda_runtime.h>

#include <cmath>

#include "qsafe/detail/cuda/element.cuh"
#include "qsafe/matrix_view.hpp"

namespace qsafe::detail::cuda {

inline constexpr int max_warps_per_block = 32;

struct row_group {
  int threads;  // threads per row
  int thread;   // this thread's index in its row group
  index_t row;  // the row this group computes (may be >= rows in the last block)

  __device__ explicit row_group(int threads_per_row)
      : threads(threads_per_row),
        thread(static_cast<int>(threadIdx.x) % threads_per_row),
        row(static_cast<index_t>(blockIdx.x) * static_cast<index_t>(blockDim.x / threads_per_row) +
            static_cast<index_t>(threadIdx.x) / threads_per_row) {}

  // Reduces `value` over the group with the commutative `op`; every thread of the group gets the result.
  // `slots` (shared memory, one per warp of the block) is used when the group spans several warps; each call needs
  // its own `slots` (no barrier after the read), and every thread of the block must make the same calls.
  template <class Op>
  __device__ __forceinline__ float reduce(float value, Op op, float* slots) const {
    const int width = threads < 32 ? threads : 32;
    for (int offset = width / 2; offset > 0; offset /= 2)
      value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
    if (threads > 32) {
      const int warp = static_cast<int>(threadIdx.x) / 32;
      if (threadIdx.x % 32 == 0) slots[warp] = value;
      __syncthreads();
      const int first = warp - thread / 32;
      value = slots[first];
      for (int w = 1; w < threads / 32; ++w) value = op(value, slots[first + w]);
    }
    return value;
  }
};

// The walk of one thread over its row: packets of N elements at j = (k·threads + thread)·N, k = 0, 1, ...;
// `Cached` > 0 unrolls a fixed number of steps (the row then fits in registers), 0 walks while j < end.
template <int N, int Cached>
struct row_walk {
  int first, step;
  __device__ explicit row_walk(const row_group& g) : first(g.thread * N), step(g.threads * N) {}

  template <class F>
  __device__ __forceinline__ void operator()(int end, F&& f) const {
    if constexpr (Cached > 0) {
#pragma unroll
      for (int k = 0; k < Cached; ++k) {
        const int j = first + k * step;
        if (j < end) f(k, j);
      }
    } else {
      for (int j = first; j < end; j += step) f(0, j);
    }
  }
};

// One thread's `Cached` packets of a row, held in registers.
template <class T, int N, int Cached>
struct row_packets {
  packet<T, N> v[Cached];
};

// This thread's packets of a row from memory; elements at or past `length` read as `fill`.
template <class T, int N, int Cached>
__device__ __forceinline__ row_packets<T, N, Cached> load_row_packets(const T* row, int length, T fill,
                                                                      const row_walk<N, Cached>& walk) {
  row_packets<T, N, Cached> out;
#pragma unroll
  for (int k = 0; k < Cached; ++k) {
    const int j = walk.first + k * walk.step;
    out.v[k] = load_packet<N>(row, j, j < length ? length : 0, fill);
  }
  return out;
}

// One thread's share of a row's valid keys: held in registers (Cached > 0) or re-read from memory at each pass.
template <class T, int N, int Cached>
struct row_source {
  const T* row;
  int length;
  T fill;
  packet<T, N> cache[Cached > 0 ? Cached : 1];

  __device__ row_source(const T* row_, int length_, T fill_, const row_walk<N, Cached>& walk)
      : row(row_), length(length_), fill(fill_) {
    if constexpr (Cached > 0) {
      const row_packets<T, N, Cached> loaded = load_row_packets(row, length, fill, walk);
#pragma unroll
      for (int k = 0; k < Cached; ++k) cache[k] = loaded.v[k];
    }
  }
  // From packets already in registers (elements past the row's length must hold `fill`).
  __device__ row_source(const row_packets<T, N, Cached>& cached, int length_) : row(nullptr), length(length_), fill{} {
#pragma unroll
    for (int k = 0; k < Cached; ++k) cache[k] = cached.v[k];
  }

  __device__ __forceinline__ void at(int k, int j, float (&out)[N]) const {
    if constexpr (Cached > 0) {
      to_float(cache[k], out);
    } else {
      to_float(load_packet<N>(row, j, length, fill), out);
    }
  }
};

}  // namespace qsafe::detail::cuda
