#pragma once
// Squared fake-quantization error of every candidate in one read of the tensor (the MSE range search,
// REFERENCE §2): each thread holds a tile of K packets in registers and, for each candidate, sums
// (x − x̂)^2 over it in fp32 (x̂ computed exactly as fake_quantize_kernel does, the product not contracted, so
// x̂ equals the CPU's); the warp's sum goes into a per-warp double accumulator in shared memory. Each block
// writes one partial per candidate; sum_partials_kernel adds them in block order (deterministic).

#include <cuda_runtime.h>

#include "qsafe/detail/cuda/block_reduce.cuh"
#include "qsafe/detail/cuda/kernels/quant.cuh"
#include "qsafe/detail/cuda/kernels/stats.cuh"

namespace qsafe::detail::cuda {

// Dynamic shared memory: `count` lane_params, then (blockDim.x / 32) × count doubles.
template <int N, int K, class T>
__global__ void __launch_bounds__(reduce_block_threads, reduce_blocks_per_sm)
    squared_error_kernel(index_t rows, int cols, const T* x, index_t stride, const lane_params<float>* candidates,
                         int count, double* partials) {
  extern __shared__ double shared_space[];
  const int warps = static_cast<int>(blockDim.x / 32), warp = static_cast<int>(threadIdx.x / 32);
  double* sums = shared_space;
  auto* params = reinterpret_cast<lane_params<float>*>(shared_space + warps * count);
  for (int i = static_cast<int>(threadIdx.x); i < warps * count; i += static_cast<int>(blockDim.x)) sums[i] = 0.0;
  for (int i = static_cast<int>(threadIdx.x); i < count; i += static_cast<int>(blockDim.x)) params[i] = candidates[i];
  __syncthreads();
  for_each_tile<N * K>(rows, cols, [&](index_t r, int base) {
    float v[K][N];
    // Past the end: 0, whose fake-quantized value is exactly 0 (the zero point is a code), so it adds no error.
    load_tile<N, K>(x + r * stride, base, cols, 0.0f, v);
    for (int c = 0; c < count; ++c) {
      const lane_params<float> p = params[c];
      float e = 0.0f;
#pragma unroll
      for (int k = 0; k < K; ++k)
#pragma unroll
        for (int i = 0; i < N; ++i) {
          const float y = __fmul_rn(clamp_code(p, unclamped_code(p, v[k][i])) - p.zero_point, p.scale);
          const float d = v[k][i] - y;
          e = fmaf(d, d, e);
        }
      const double total = warp_reduce(static_cast<double>(e), [](double& a, double b) { a += b; });
      if (threadIdx.x % 32 == 0) sums[warp * count + c] += total;
    }
  });
  __syncthreads();
  const int block = static_cast<int>(blockIdx.y * gridDim.x + blockIdx.x);
  for (int c = static_cast<int>(threadIdx.x); c < count; c += static_cast<int>(blockDim.x)) {
    double total = 0.0;
    for (int w = 0; w < warps; ++w) total += sums[w * count + c];
    partials[block * count + c] = total;
  }
}

// out[c] = sum over blocks b (in order) of partials[b · count + c].
template <class Sum>
__global__ void sum_partials_kernel(const Sum* partials, int blocks, int count, Sum* out) {
  const int c = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (c >= count) return;
  Sum total = 0;
  for (int b = 0; b < blocks; ++b) total += partials[b * count + c];
  out[c] = total;
}

}  // namespace qsafe::detail::cuda
