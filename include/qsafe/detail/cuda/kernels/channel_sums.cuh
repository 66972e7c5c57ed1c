#pragma once
// Elementwise pass with per-channel sums in double (LSQ's parameter gradients, the quantization error metrics): an
// `Op` maps each element (x, and a second input where Op::reads_second; its stream index r·cols + j for stochastic
// rounding) to an output (stored where Op::writes_output) and adds its terms to Op::sums running sums. Deterministic:
// the partition of the matrix depends only on its shape (never on the GPU), every thread adds its elements in a fixed
// order, blocks reduce in the fixed tree of block_reduce.cuh, and combine_channel_sums_kernel adds each channel's
// partials in index order.
//
// Layout of the partials: partials[(g·channels + c)·sums + k] for the group g < groups of channel c.
// - Row kernel (per tensor: one channel; per channel along rows: row r in channel r % channels): a virtual block vy
//   takes the rows r ≡ vy (mod virtual_rows), virtual_rows a multiple of the channels, so it sees channel
//   vy % channels only; blockIdx.x splits the row (grid-stride). Group g = (vy / channels)·gridDim.x + blockIdx.x.
// - Column kernel (per channel along columns): a thread keeps column packet j for the rows r ≡ blockIdx.y
//   (mod gridDim.y), one set of sums per lane (no block reduction). Group g = blockIdx.y, channel = column.

#include <cuda_runtime.h>

#include <cstdint>

#include "qsafe/detail/cuda/block_reduce.cuh"
#include "qsafe/detail/cuda/element.cuh"
#include "qsafe/detail/scalar/quant.hpp"
#include "qsafe/matrix_view.hpp"

namespace qsafe::detail::cuda {

// K running sums in double.
template <int K>
struct double_sums {
  double v[K];
};

template <int K>
__device__ __forceinline__ double_sums<K> zero_sums() {
  double_sums<K> s;
#pragma unroll
  for (int k = 0; k < K; ++k) s.v[k] = 0.0;
  return s;
}

// The parameters of channel c: from a device array of lane_params (nullptr: the op needs none).
struct channel_lanes {
  const lane_params<float>* p;
  __device__ __forceinline__ lane_params<float> operator()(index_t c) const {
    return p != nullptr ? p[c] : lane_params<float>{1.0f, 1.0f, 0.0f, 0.0f, 0.0f};
  }
};

// Packets in flight per thread: each thread issues this many independent loads before it finishes any of them (one
// in flight left the elementwise quant kernels at 48-76% of a copy, kernels/quant.cuh). Fewer along columns, where a
// thread also keeps N lanes of sums in registers.
inline constexpr int sums_row_unroll = 4;
inline constexpr int sums_column_unroll = 2;

// The inputs of packet j of row r: a, and b where Op::reads_second (else left unread).
template <class T, int N>
struct sums_inputs {
  packet<T, N> a, b;
};

template <int N, class Op, class T>
__device__ __forceinline__ sums_inputs<T, N> load_sums_inputs(index_t r, int j, int cols, const T* a, index_t a_stride,
                                                              const T* b, index_t b_stride) {
  sums_inputs<T, N> in;
  in.a = load_packet<N>(a + r * a_stride, j, cols, from_float<T>(0.0f));
  if constexpr (Op::reads_second) in.b = load_packet<N>(b + r * b_stride, j, cols, from_float<T>(0.0f));
  return in;
}

// Applies op to the lanes of packet j of row r (those before `cols`) and stores the outputs where Op::writes_output.
// Lane i takes the parameters params(i) and adds into the sums sums(i) (a double[Op::sums]).
template <int N, class Op, class T, class Params, class Sums>
__device__ __forceinline__ void finish_sums_packet(const Op& op, const Params& params, Sums&& sums, index_t r, int j,
                                                   int cols, const sums_inputs<T, N>& in, T* out, index_t out_stride) {
  float x[N], y[N], o[N];
  to_float(in.a, x);
  if constexpr (Op::reads_second) {
    to_float(in.b, y);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) y[i] = 0.0f;
  }
  const std::uint64_t index = static_cast<std::uint64_t>(r) * static_cast<std::uint64_t>(cols) + j;
#pragma unroll
  for (int i = 0; i < N; ++i) o[i] = j + i < cols ? op(params(i), x[i], y[i], sums(i), index + i) : 0.0f;
  if constexpr (Op::writes_output) store_packet<N>(out + r * out_stride, j, cols, o);
}

// Per tensor and per channel along rows. Every virtual block writes its partial (zeros when it saw no element).
template <int N, class Op, class T>
__global__ void __launch_bounds__(reduce_block_threads)
    row_channel_sums_kernel(const Op op, const channel_lanes lanes, index_t rows, int cols, index_t channels,
                            index_t virtual_rows, const T* a, index_t a_stride, const T* b, index_t b_stride, T* out,
                            index_t out_stride, double* partials) {
  constexpr int K = Op::sums, U = sums_row_unroll;
  __shared__ double_sums<K> slots[reduce_block_threads / 32];
  const int first = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) * N);
  const int step = static_cast<int>(gridDim.x * blockDim.x * N);
  for (index_t vy = blockIdx.y; vy < virtual_rows; vy += gridDim.y) {
    const index_t c = vy % channels;
    const lane_params<float> p = lanes(c);
    double_sums<K> s = zero_sums<K>();
    // Every lane: the channel's parameters and the one set of sums (terms added in element order).
    const auto params = [&](int) { return p; };
    const auto sums = [&](int) -> double(&)[K] { return s.v; };
    for (index_t r = vy; r < rows; r += virtual_rows) {
      int j = first;
      for (; j + (U - 1) * step < cols; j += U * step) {
        sums_inputs<T, N> in[U];
#pragma unroll
        for (int u = 0; u < U; ++u) in[u] = load_sums_inputs<N, Op>(r, j + u * step, cols, a, a_stride, b, b_stride);
#pragma unroll
        for (int u = 0; u < U; ++u)
          finish_sums_packet<N>(op, params, sums, r, j + u * step, cols, in[u], out, out_stride);
      }
      for (; j < cols; j += step) {
        finish_sums_packet<N>(op, params, sums, r, j, cols,
                              load_sums_inputs<N, Op>(r, j, cols, a, a_stride, b, b_stride), out, out_stride);
      }
    }
    s = block_reduce(
        s, zero_sums<K>(),
        [](double_sums<K>& u, const double_sums<K>& w) {
#pragma unroll
          for (int k = 0; k < K; ++k) u.v[k] += w.v[k];
        },
        slots);
    if (threadIdx.x == 0) {
      const index_t g = (vy / channels) * gridDim.x + blockIdx.x;
#pragma unroll
      for (int k = 0; k < K; ++k) partials[(g * channels + c) * K + k] = s.v[k];
    }
  }
}

// Per channel along columns: gridDim.x · blockDim.x · N covers the columns (no grid-stride along a row).
template <int N, class Op, class T>
__global__ void __launch_bounds__(reduce_block_threads)
    column_channel_sums_kernel(const Op op, const channel_lanes lanes, index_t rows, int cols, const T* a,
                               index_t a_stride, const T* b, index_t b_stride, T* out, index_t out_stride,
                               double* partials) {
  constexpr int K = Op::sums, U = sums_column_unroll;
  const int j = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) * N);
  if (j >= cols) return;
  lane_params<float> p[N];
  double_sums<K> s[N];
#pragma unroll
  for (int i = 0; i < N; ++i) {
    p[i] = lanes(j + i < cols ? j + i : cols - 1);
    s[i] = zero_sums<K>();
  }
  const auto params = [&](int i) { return p[i]; };
  const auto sums = [&](int i) -> double(&)[K] { return s[i].v; };
  const index_t row_step = gridDim.y;
  index_t r = blockIdx.y;
  for (; r + (U - 1) * row_step < rows; r += U * row_step) {
    sums_inputs<T, N> in[U];
#pragma unroll
    for (int u = 0; u < U; ++u) in[u] = load_sums_inputs<N, Op>(r + u * row_step, j, cols, a, a_stride, b, b_stride);
#pragma unroll
    for (int u = 0; u < U; ++u)
      finish_sums_packet<N>(op, params, sums, r + u * row_step, j, cols, in[u], out, out_stride);
  }
  for (; r < rows; r += row_step) {
    finish_sums_packet<N>(op, params, sums, r, j, cols, load_sums_inputs<N, Op>(r, j, cols, a, a_stride, b, b_stride),
                          out, out_stride);
  }
  const index_t g = blockIdx.y;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    if (j + i < cols) {
#pragma unroll
      for (int k = 0; k < K; ++k) partials[(g * cols + j + i) * K + k] = s[i].v[k];
    }
  }
}

// out[c·sums + k] = Σ_{g < groups} partials[(g·channels + c)·sums + k], added in g order: one thread a channel.
template <int K>
__global__ void combine_channel_sums_kernel(const double* partials, index_t groups, index_t channels, double* out) {
  const index_t c = blockIdx.x * index_t{blockDim.x} + threadIdx.x;
  if (c >= channels) return;
  double s[K];
#pragma unroll
  for (int k = 0; k < K; ++k) s[k] = 0.0;
  for (index_t g = 0; g < groups; ++g) {
#pragma unroll
    for (int k = 0; k < K; ++k) s[k] += partials[(g * channels + c) * K + k];
  }
#pragma unroll
  for (int k = 0; k < K; ++k) out[c * K + k] = s[k];
}

}  // namespace qsafe::detail::cuda
