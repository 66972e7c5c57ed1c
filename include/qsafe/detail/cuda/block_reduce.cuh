#pragma once
// Block-wide reductions of small structs (partial moments, ranges) with a fixed combination order, so that a
// non-associative merge (the moments' pairwise update) still gives the same result on every run: lane i merges
// lane i + offset for offset = 16, 8, 4, 2, 1, then warp 0 does the same over the warps' results.

#include <cuda_runtime.h>

#include <cstring>

namespace qsafe::detail::cuda {

inline constexpr int reduce_block_threads = 256;
// The reduction kernels are built for 4 resident blocks an SM (at most 64 registers a thread); the dispatcher's
// grid is one wave of them (reduction_tuning::max_blocks).
inline constexpr int reduce_blocks_per_sm = 4;

// __shfl_down_sync of any trivially copyable struct whose size is a multiple of 4 bytes, word by word.
template <class V>
__device__ __forceinline__ V shuffle_down(const V& v, int offset) {
  static_assert(sizeof(V) % 4 == 0, "shuffled structs are whole 32-bit words");
  constexpr int words = static_cast<int>(sizeof(V) / 4);
  unsigned in[words], out[words];
  memcpy(in, &v, sizeof(V));
#pragma unroll
  for (int i = 0; i < words; ++i) out[i] = __shfl_down_sync(0xffffffffu, in[i], offset);
  V r;
  memcpy(&r, out, sizeof(V));
  return r;
}

// Lane 0 gets merge(... merge(v_0, v_1) ...) over the warp in the fixed tree order.
template <class V, class Merge>
__device__ __forceinline__ V warp_reduce(V v, Merge&& merge) {
  const int lane = static_cast<int>(threadIdx.x % 32);
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const V other = shuffle_down(v, offset);
    if (lane + offset < 32) merge(v, other);
  }
  return v;
}

// Thread 0 of the block gets the reduction of every thread's `v`; `identity` fills the unused lanes of warp 0.
// `slots`: shared memory for one V per warp. Every thread of the block must call; the slots may be reused right
// after (the function ends with a barrier).
template <class V, class Merge>
__device__ __forceinline__ V block_reduce(V v, const V& identity, Merge&& merge, V* slots) {
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int warps = static_cast<int>((blockDim.x + 31) / 32);
  v = warp_reduce(v, merge);
  if (lane == 0) slots[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? slots[lane] : identity;
    v = warp_reduce(v, merge);
  }
  __syncthreads();
  return v;
}

}  // namespace qsafe::detail::cuda
