#pragma once
// Fake-quantization kernels (REFERENCE §2), per tensor or per channel (the parameters a policy struct below):
// elementwise over a matrix, 16-byte packets where aligned, fp32 arithmetic as the host kernels do for float:
// v = z + round(x·inv_s) (the rounding mode of fake_quant_options), clamp to the codes before anything else,
// x̂ = (q − z)·s. No step can be contracted into an FMA, so float results are bit-identical to qsafe::cpu (the
// stochastic draws too: the same counter-based hash); half and bfloat16 inputs are widened exactly and the result
// rounded once.

#include <cuda_runtime.h>

#include <cstdint>

#include "qsafe/detail/cuda/element.cuh"
#include "qsafe/detail/scalar/quant.hpp"
#include "qsafe/matrix_view.hpp"

namespace qsafe::detail::cuda {

// The rounding modes of the host (detail/scalar/quant.hpp), on fp32: `j` is the element's index in the stochastic
// stream (the tag's `first` = options.index_offset, plus r·cols + column).
__device__ __forceinline__ float round_code(round_half_even_tag, float v, std::uint64_t) {
  return rintf(v);
}
__device__ __forceinline__ float round_code(round_half_away_tag, float v, std::uint64_t) {
  return roundf(v);
}
__device__ __forceinline__ float round_code(const round_stochastic_tag& r, float v, std::uint64_t j) {
  const float f = floorf(v);
  return f + (stochastic_uniform<float>(r.seed, r.first + j) < v - f ? 1.0f : 0.0f);
}

template <class Rounding = round_half_even_tag>
__device__ __forceinline__ float unclamped_code(const lane_params<float>& p, float x, const Rounding& rounding = {},
                                                std::uint64_t j = 0) {
  // __fmul_rn: the product is rounded on its own, as on the host (stochastic rounding's v − floor(v) could otherwise
  // be contracted with it into one FMA).
  return p.zero_point + round_code(rounding, __fmul_rn(x, p.inv_scale), j);
}

// The straight-through masks (qsafe::ste_mask); v is the unclamped code, x the input.
__device__ __forceinline__ bool passes_gradient(mask_code_tag, const lane_params<float>& p, float v, float) {
  return v >= p.quant_min && v <= p.quant_max;
}
__device__ __forceinline__ bool passes_gradient(mask_range_tag, const lane_params<float>& p, float, float x) {
  return x >= (p.quant_min - p.zero_point) * p.scale && x <= (p.quant_max - p.zero_point) * p.scale;
}
__device__ __forceinline__ bool passes_gradient(mask_none_tag, const lane_params<float>&, float, float x) {
  return x == x;
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
  // 32-bit remainder where r fits (a 64-bit one is a ~70-instruction call, per row and thread).
  __device__ __forceinline__ tensor_params for_row(index_t r) const {
    return {
        p[r <= UINT32_MAX ? static_cast<index_t>(static_cast<std::uint32_t>(r) % static_cast<std::uint32_t>(channels))
                          : r % channels]};
  }
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

// Rows in blockIdx.y (strided), packets of a row over the x dimension (grid-stride): load(r, j) reads packet j of row
// r, finish(row parameters, r, j, loaded) computes and stores it. Each thread first issues U independent loads (U
// rows, or U steps along a row), then finishes them: one load in flight per thread did not cover the memory latency
// (per-channel launches ran at 48-76% of a copy). When the x dimension covers a row in one step, each thread keeps one
// column packet: its parameters are taken once.
template <int N, int U, class Params, class Load, class Finish>
__device__ __forceinline__ void for_each_packet(const Params& params, index_t rows, int cols, Load&& load,
                                                Finish&& finish) {
  const int first = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) * N);
  const int step = static_cast<int>(gridDim.x * blockDim.x * N);
  const index_t row_step = gridDim.y;
  using loaded = decltype(load(index_t{0}, 0));
  if (step >= cols) {
    if (first >= cols) return;
    const auto columns = params.template for_columns<N>(first, cols);
    index_t r = blockIdx.y;
    for (; r + (U - 1) * row_step < rows; r += U * row_step) {
      loaded in[U];
#pragma unroll
      for (int u = 0; u < U; ++u) in[u] = load(r + u * row_step, first);
#pragma unroll
      for (int u = 0; u < U; ++u) finish(columns.for_row(r + u * row_step), r + u * row_step, first, in[u]);
    }
    for (; r < rows; r += row_step) finish(columns.for_row(r), r, first, load(r, first));
    return;
  }
  for (index_t r = blockIdx.y; r < rows; r += row_step) {
    const auto row_params = params.for_row(r);
    int j = first;
    for (; j + (U - 1) * step < cols; j += U * step) {
      loaded in[U];
#pragma unroll
      for (int u = 0; u < U; ++u) in[u] = load(r, j + u * step);
#pragma unroll
      for (int u = 0; u < U; ++u) finish(row_params, r, j + u * step, in[u]);
    }
    for (; j < cols; j += step) finish(row_params, r, j, load(r, j));
  }
}

// Packets in flight per thread (see for_each_packet).
inline constexpr int quant_unroll = 4;

template <int N, class Params, class Rounding, class T>
__global__ void __launch_bounds__(256)
    fake_quantize_kernel(const Params params, const Rounding rounding, index_t rows, int cols, const T* x,
                         index_t x_stride, T* y, index_t y_stride) {
  for_each_packet<N, quant_unroll>(
      params, rows, cols,
      [&](index_t r, int j) { return load_packet<N>(x + r * x_stride, j, cols, from_float<T>(0.0f)); },
      [&](const auto& row_params, index_t r, int j, const packet<T, N>& in) {
        float v[N];
        to_float(in, v);
        const std::uint64_t index = static_cast<std::uint64_t>(r) * static_cast<std::uint64_t>(cols) + j;
#pragma unroll
        for (int i = 0; i < N; ++i) {
          const lane_params<float> p = row_params.at(j, i);
          v[i] = (clamp_code(p, unclamped_code(p, v[i], rounding, index + i)) - p.zero_point) * p.scale;
        }
        store_packet<N>(y + r * y_stride, j, cols, v);
      });
}

// Straight-through estimator: dx = dy where the mask passes (default: the unclamped code lies in [quant_min,
// quant_max]), else 0.
template <int N, class Params, class Rounding, class Mask, class T>
__global__ void __launch_bounds__(256)
    fake_quantize_backward_kernel(const Params params, const Rounding rounding, const Mask mask, index_t rows, int cols,
                                  const T* x, index_t x_stride, const T* dy, index_t dy_stride, T* dx,
                                  index_t dx_stride) {
  struct pair {
    packet<T, N> x, dy;
  };
  for_each_packet<N, quant_unroll>(
      params, rows, cols,
      [&](index_t r, int j) {
        return pair{load_packet<N>(x + r * x_stride, j, cols, from_float<T>(0.0f)),
                    load_packet<N>(dy + r * dy_stride, j, cols, from_float<T>(0.0f))};
      },
      [&](const auto& row_params, index_t r, int j, const pair& in) {
        float v[N], g[N];
        to_float(in.x, v);
        to_float(in.dy, g);
        const std::uint64_t index = static_cast<std::uint64_t>(r) * static_cast<std::uint64_t>(cols) + j;
#pragma unroll
        for (int i = 0; i < N; ++i) {
          const lane_params<float> p = row_params.at(j, i);
          const float code = unclamped_code(p, v[i], rounding, index + i);
          g[i] = passes_gradient(mask, p, code, v[i]) ? g[i] : 0.0f;
        }
        store_packet<N>(dx + r * dx_stride, j, cols, g);
      });
}

}  // namespace qsafe::detail::cuda
