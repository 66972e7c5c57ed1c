#pragma once
// Fake-quantization kernels (REFERENCE §2): elementwise over a matrix, 16-byte packets where aligned, fp32
// arithmetic as the host kernels do for float: v = z + rint(x·inv_s) (round half to even), clamp to the codes
// before anything else, x̂ = (q − z)·s. No step can be contracted into an FMA, so float results are bit-identical
// to qsafe::cpu; half and bfloat16 inputs are widened exactly and the result rounded once.

#include <cuda_runtime.h>

#include "qsafe/detail/cuda/element.cuh"
#include "qsafe/detail/scalar/quant.hpp"
#include "qsafe/matrix_view.hpp"

namespace qsafe::detail::cuda {

__device__ __forceinline__ float unclamped_code(const lane_params<float>& p, float x) {
  return p.zero_point + rintf(x * p.inv_scale);
}

// clamp to [quant_min, quant_max] that lets NaN through (min/max and a select: the ?: chain compiled to two
// branches per element).
__device__ __forceinline__ float clamp_code(const lane_params<float>& p, float v) {
  const float clamped = fminf(fmaxf(v, p.quant_min), p.quant_max);
  return v != v ? v : clamped;
}

// Rows in blockIdx.y (strided), packets of a row over the x dimension (grid-stride).
template <int N, class T, class Op>
__device__ __forceinline__ void for_each_packet(index_t rows, int cols, Op&& op) {
  for (index_t r = blockIdx.y; r < rows; r += gridDim.y) {
    for (int j = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) * N); j < cols;
         j += static_cast<int>(gridDim.x * blockDim.x * N)) {
      op(r, j);
    }
  }
}

template <int N, class T>
__global__ void __launch_bounds__(256) fake_quantize_kernel(const lane_params<float> p, index_t rows, int cols,
                                                            const T* x, index_t x_stride, T* y, index_t y_stride) {
  for_each_packet<N, T>(rows, cols, [&](index_t r, int j) {
    float v[N];
    to_float(load_packet<N>(x + r * x_stride, j, cols, from_float<T>(0.0f)), v);
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = (clamp_code(p, unclamped_code(p, v[i])) - p.zero_point) * p.scale;
    store_packet<N>(y + r * y_stride, j, cols, v);
  });
}

// Straight-through estimator: dx = dy where the unclamped code lies in [quant_min, quant_max], else 0.
template <int N, class T>
__global__ void __launch_bounds__(256)
    fake_quantize_backward_kernel(const lane_params<float> p, index_t rows, int cols, const T* x, index_t x_stride,
                                  const T* dy, index_t dy_stride, T* dx, index_t dx_stride) {
  for_each_packet<N, T>(rows, cols, [&](index_t r, int j) {
    float v[N], g[N];
    to_float(load_packet<N>(x + r * x_stride, j, cols, from_float<T>(0.0f)), v);
    to_float(load_packet<N>(dy + r * dy_stride, j, cols, from_float<T>(0.0f)), g);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const float code = unclamped_code(p, v[i]);
      g[i] = (code >= p.quant_min && code <= p.quant_max) ? g[i] : 0.0f;
    }
    store_packet<N>(dx + r * dx_stride, j, cols, g);
  });
}

}  // namespace qsafe::detail::cuda
