#pragma once
// Fake-quantization kernels (REFERENCE §2), per tensor or per channel (the parameters a policy struct below):
// elementwise over a matrix, 16-byte packets where aligned, fp32
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

// The parameters as the kernels see them: for_row(r) gives row r's parameters, whose at(j) gives column j's.
// at(j, i) gives the parameters of element j + i (i < N, a compile-time lane), and for_columns<N>(j, cols) the
// parameters for a thread that keeps column packet j for every row (column channels: loaded once, into registers).
struct tensor_params {
  lane_params<float> p;
  __device__ __forceinline__ tensor_params for_row(index_t) const { return *this; }
  template <int N>
  __device__ __forceinline__ tensor_params for_columns(int, int) const {
    return *this;
  }
  __device__ __forceinline__ lane_params<float> at(int, int) const { return p; }
};
// Channels along rows: row r takes p[r % channels].
struct row_channel_params {
  const lane_params<float>* p;
  index_t channels;
  __device__ __forceinline__ tensor_params for_row(index_t r) const { return {p[r % channels]}; }
  template <int N>
  __device__ __forceinline__ row_channel_params for_columns(int, int) const {
    return *this;
  }
};
// Column channels held by one thread: the parameters of columns j .. j + N − 1.
template <int N>
struct column_packet_params {
  lane_params<float> p[N];
  __device__ __forceinline__ const column_packet_params& for_row(index_t) const { return *this; }
  __device__ __forceinline__ lane_params<float> at(int, int i) const { return p[i]; }
};
// Channels along columns: column j takes p[j].
struct column_channel_params {
  const lane_params<float>* p;
  int cols;
  __device__ __forceinline__ column_channel_params for_row(index_t) const { return *this; }
  template <int N>
  __device__ __forceinline__ column_packet_params<N> for_columns(int j, int end) const {
    column_packet_params<N> out;
#pragma unroll
    for (int i = 0; i < N; ++i) out.p[i] = p[min(j + i, end - 1)];
    return out;
  }
  __device__ __forceinline__ lane_params<float> at(int j, int i) const {
    return p[min(j + i, cols - 1)];
  }
};

// Rows in blockIdx.y (strided), packets of a row over the x dimension (grid-stride): op(row parameters, r, j). When
// the x dimension covers a row in one step, each thread keeps one column packet: its parameters are taken once.
template <int N, class Params, class Op>
__device__ __forceinline__ void for_each_packet(const Params& params, index_t rows, int cols, Op&& op) {
  const int first = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) * N);
  const int step = static_cast<int>(gridDim.x * blockDim.x * N);
  if (step >= cols) {
    if (first >= cols) return;
    const auto columns = params.template for_columns<N>(first, cols);
    for (index_t r = blockIdx.y; r < rows; r += gridDim.y) op(columns.for_row(r), r, first);
    return;
  }
  for (index_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const auto row_params = params.for_row(r);
    for (int j = first; j < cols; j += step) op(row_params, r, j);
  }
}

template <int N, class Params, class T>
__global__ void __launch_bounds__(256) fake_quantize_kernel(const Params params, index_t rows, int cols, const T* x,
                                                            index_t x_stride, T* y, index_t y_stride) {
  for_each_packet<N>(params, rows, cols, [&](const auto& row_params, index_t r, int j) {
    float v[N];
    to_float(load_packet<N>(x + r * x_stride, j, cols, from_float<T>(0.0f)), v);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const lane_params<float> p = row_params.at(j, i);
      v[i] = (clamp_code(p, unclamped_code(p, v[i])) - p.zero_point) * p.scale;
    }
    store_packet<N>(y + r * y_stride, j, cols, v);
  });
}

// Straight-through estimator: dx = dy where the unclamped code lies in [quant_min, quant_max], else 0.
template <int N, class Params, class T>
__global__ void __launch_bounds__(256)
    fake_quantize_backward_kernel(const Params params, index_t rows, int cols, const T* x, index_t x_stride,
                                  const T* dy, index_t dy_stride, T* dx, index_t dx_stride) {
  for_each_packet<N>(params, rows, cols, [&](const auto& row_params, index_t r, int j) {
    float v[N], g[N];
    to_float(load_packet<N>(x + r * x_stride, j, cols, from_float<T>(0.0f)), v);
    to_float(load_packet<N>(dy + r * dy_stride, j, cols, from_float<T>(0.0f)), g);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const lane_params<float> p = row_params.at(j, i);
      const float code = unclamped_code(p, v[i]);
      g[i] = (code >= p.quant_min && code <= p.quant_max) ? g[i] : 0.0f;
    }
    store_packet<N>(dx + r * dx_stride, j, cols, g);
  });
}

}  // namespace qsafe::detail::cuda
