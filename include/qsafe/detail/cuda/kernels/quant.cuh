#pragma once
// Fake-quantization kernels (REFERENCE §2), per tensor or per channel (the parameters a policy struct below):
// elementwise over a matrix, 16-byte packets where aligned, fp32 arithmetic as the host kernels do for float:
// v = z + round(x·inv_s) (the rounding mode of fake_quant_options), clamp to the codes before anything else,
// x̂ = (q − z)·s, computed here on codes counted from z (code_params, bit for bit the same). No step can be contracted
// into an FMA, so float results are bit-identical to qsafe::cpu (the stochastic draws too: the same counter-based
// hash); half and bfloat16 inputs are widened exactly and the result rounded once.

#include <cuda_pipeline_primitives.h>
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

// The elementwise kernels' parameters: codes counted from the zero point. u = round(x·inv_s) is clamped to
// [lo, hi] = [quant_min − z, quant_max − z] and x̂ = (u + 0)·s. That equals z + u clamped to the codes, minus z, bit
// for bit: integers below 2^24 are exact in fp32 and beyond them both saturate; the + 0 turns u = −0 into the +0 that
// (z + u) − z gives. Four floats, one 16-byte load a channel (lane_params' five took 40 loads a thread for 8 bf16
// column channels).
struct alignas(16) code_params {
  float scale, inv_scale, lo, hi;
};
__host__ __device__ inline code_params to_code_params(const lane_params<float>& p) {
  return {p.scale, p.inv_scale, p.quant_min - p.zero_point, p.quant_max - p.zero_point};
}

template <class Rounding>
__device__ __forceinline__ float relative_code(const code_params& p, float x, const Rounding& rounding,
                                               std::uint64_t j) {
  return round_code(rounding, __fmul_rn(x, p.inv_scale), j);
}
// x̂ from u, clamped to [lo, hi] by min/max with NaN let through.
__device__ __forceinline__ float dequantize(const code_params& p, float u) {
  const float clamped = fminf(fmaxf(u, p.lo), p.hi);
  return ((u != u ? u : clamped) + 0.0f) * p.scale;
}
__device__ __forceinline__ bool passes_gradient(mask_code_tag, const code_params& p, float u, float) {
  return u >= p.lo && u <= p.hi;
}
__device__ __forceinline__ bool passes_gradient(mask_range_tag, const code_params& p, float, float x) {
  return x >= p.lo * p.scale && x <= p.hi * p.scale;
}
__device__ __forceinline__ bool passes_gradient(mask_none_tag, const code_params&, float, float x) {
  return x == x;
}

// The parameters as the kernels see them: for_row(r) gives row r's parameters, whose at(j) gives column j's.
// at(j, i) gives the parameters of element j + i (i < N, a compile-time lane), and for_columns<N>(j, cols) the
// parameters for a thread that keeps column packet j for every row (column channels: loaded once, into registers).
struct tensor_params {
  code_params p;
  __device__ __forceinline__ tensor_params for_row(index_t) const { return *this; }
  template <int N>
  __device__ __forceinline__ tensor_params for_columns(int, int) const {
    return *this;
  }
  __device__ __forceinline__ code_params at(int, int) const { return p; }
};
// Channels along rows: row r takes p[r % channels].
struct row_channel_params {
  const code_params* p;
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
  code_params p[N];
  __device__ __forceinline__ const column_packet_params& for_row(index_t) const { return *this; }
  __device__ __forceinline__ code_params at(int, int i) const { return p[i]; }
};
// Channels along columns: column j takes p[j].
struct column_channel_params {
  const code_params* p;
  int cols;
  __device__ __forceinline__ column_channel_params for_row(index_t) const { return *this; }
  template <int N>
  __device__ __forceinline__ column_packet_params<N> for_columns(int j, int end) const {
    column_packet_params<N> out;
#pragma unroll
    for (int i = 0; i < N; ++i) out.p[i] = p[min(j + i, end - 1)];
    return out;
  }
  __device__ __forceinline__ code_params at(int j, int i) const {
    return p[min(j + i, cols - 1)];
  }
};

// The inputs of an elementwise kernel: K matrices of one element type, walked together.
template <class T, int K>
struct packet_inputs {
  const T* data[K];
  index_t stride[K];
};

// Packets a thread keeps in flight, over its inputs: 4 / K stages of one packet an input (16 KiB of shared memory a
// block). 8 measured the same or worse (float32 per tensor 96% of a copy against 101%).
inline constexpr int quant_stage_packets = 4;
inline constexpr int quant_block_threads = 256;

// Rows in blockIdx.y (strided), packets of a row over the x dimension (grid-stride): finish(row parameters, r, j,
// packets) computes and stores packet j of row r from the K inputs' packets. When the x dimension covers a row in one
// step, each thread keeps one column packet: its parameters are taken once.
// 16-byte packets are copied asynchronously (cp.async) into the thread's own slots of a ring in shared memory, several
// stages ahead: the bytes in flight then cost no registers (with them in registers, a bf16 launch with 8 column
// channels' parameters a thread ran at 24% occupancy and 70% of a copy). Other packets are loaded into registers, a
// few at a time.
template <int N, class Params, class T, int K, class Finish>
__device__ __forceinline__ void for_each_packet(const Params& params, index_t rows, int cols,
                                                const packet_inputs<T, K>& in, Finish&& finish) {
  const int first = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) * N);
  const int step = static_cast<int>(gridDim.x * blockDim.x * N);
  const index_t row_step = gridDim.y;
  if (first >= cols) return;
  // The walk visits (r, j): j from `first` by `step` along row r, then the next row (r + row_step) from `first`.
  struct cursor {
    index_t r;
    int j;
  };
  const auto advance = [&](cursor& c) {
    c.j += step;
    if (c.j >= cols) {
      c.j = first;
      c.r += row_step;
    }
  };
  // Calls walk(parameters): a thread that keeps one column packet (a step covers the row) takes its columns' once.
  const auto with_params = [&](const auto& walk) {
    if (step >= cols) {
      walk(params.template for_columns<N>(first, cols));
    } else {
      walk(params);
    }
  };
  constexpr int S = quant_stage_packets / K;
  if constexpr (sizeof(packet<T, N>) == 16) {
    __shared__ packet<T, N> ring[S][K][quant_block_threads];
    const auto issue = [&](int s, const cursor& c) {
      if (c.r < rows) {
        // A row's last packet may be partial: the bytes past the end are filled with zeros, not read.
        const int bytes = static_cast<int>(sizeof(T)) * min(N, cols - c.j);
#pragma unroll
        for (int k = 0; k < K; ++k)
          __pipeline_memcpy_async(&ring[s][k][threadIdx.x], in.data[k] + c.r * in.stride[k] + c.j, 16,
                                  static_cast<std::size_t>(16 - bytes));
      }
      __pipeline_commit();  // an empty group past the end keeps the count of groups per stage
    };
    const auto walk = [&](const auto& walk_params) {
      cursor ahead{static_cast<index_t>(blockIdx.y), first};
#pragma unroll
      for (int s = 0; s < S; ++s) {
        issue(s, ahead);
        advance(ahead);
      }
      // A row's parameters (a load, for channels along rows) are fetched one packet ahead, so that their latency
      // hides behind the packet before (fetched when needed, bf16 rows ran at 73-76% of a copy, against 79-85% before
      // the ring).
      cursor c{static_cast<index_t>(blockIdx.y), first};
      auto row_params = walk_params.for_row(c.r);
      for (int s = 0; c.r < rows; s = s + 1 == S ? 0 : s + 1) {
        __pipeline_wait_prior(S - 1);
        packet<T, N> packets[K];
#pragma unroll
        for (int k = 0; k < K; ++k) packets[k] = ring[s][k][threadIdx.x];
        cursor next = c;
        advance(next);
        const auto next_params = walk_params.for_row(next.r);  // in range for any r (r % channels)
        finish(row_params, c.r, c.j, packets);
        // The slot is refilled after finish has used its packets (only this thread reads or writes it).
        issue(s, ahead);
        advance(ahead);
        c = next;
        row_params = next_params;
      }
    };
    with_params(walk);
  } else {
    const auto walk = [&](const auto& walk_params) {
      for (cursor c{static_cast<index_t>(blockIdx.y), first}; c.r < rows;) {
        cursor at[S];
        packet<T, N> packets[S][K];
#pragma unroll
        for (int s = 0; s < S; ++s) {
          at[s] = c;
          if (c.r < rows) {
#pragma unroll
            for (int k = 0; k < K; ++k)
              packets[s][k] = load_packet<N>(in.data[k] + c.r * in.stride[k], c.j, cols, from_float<T>(0.0f));
            advance(c);
          }
        }
#pragma unroll
        for (int s = 0; s < S; ++s)
          if (at[s].r < rows) finish(walk_params.for_row(at[s].r), at[s].r, at[s].j, packets[s]);
      }
    };
    with_params(walk);
  }
}

template <int N, class Params, class Rounding, class T>
__global__ void __launch_bounds__(quant_block_threads)
    fake_quantize_kernel(const Params params, const Rounding rounding, index_t rows, int cols, const T* x,
                         index_t x_stride, T* y, index_t y_stride) {
  for_each_packet<N>(params, rows, cols, packet_inputs<T, 1>{{x}, {x_stride}},
                     [&](const auto& row_params, index_t r, int j, const packet<T, N>(&in)[1]) {
                       float v[N];
                       to_float(in[0], v);
                       const std::uint64_t index = static_cast<std::uint64_t>(r) * static_cast<std::uint64_t>(cols) + j;
#pragma unroll
                       for (int i = 0; i < N; ++i) {
                         const code_params p = row_params.at(j, i);
                         v[i] = dequantize(p, relative_code(p, v[i], rounding, index + i));
                       }
                       store_packet<N>(y + r * y_stride, j, cols, v);
                     });
}

// The kernel for N elements a packet, named for the launch (dispatch_quant.cuh).
template <class Params, class Rounding, class T>
struct fake_quantize_kernel_of {
  template <int N>
  struct at {
    static constexpr auto value = &fake_quantize_kernel<N, Params, Rounding, T>;
  };
};

// Straight-through estimator: dx = dy where the mask passes (default: the unclamped code lies in [quant_min,
// quant_max]), else 0.
template <int N, class Params, class Rounding, class Mask, class T>
__global__ void __launch_bounds__(quant_block_threads)
    fake_quantize_backward_kernel(const Params params, const Rounding rounding, const Mask mask, index_t rows, int cols,
                                  const T* x, index_t x_stride, const T* dy, index_t dy_stride, T* dx,
                                  index_t dx_stride) {
  for_each_packet<N>(params, rows, cols, packet_inputs<T, 2>{{x, dy}, {x_stride, dy_stride}},
                     [&](const auto& row_params, index_t r, int j, const packet<T, N>(&in)[2]) {
                       float v[N], g[N];
                       to_float(in[0], v);
                       to_float(in[1], g);
                       const std::uint64_t index = static_cast<std::uint64_t>(r) * static_cast<std::uint64_t>(cols) + j;
#pragma unroll
                       for (int i = 0; i < N; ++i) {
                         const code_params p = row_params.at(j, i);
                         g[i] =
                             passes_gradient(mask, p, relative_code(p, v[i], rounding, index + i), v[i]) ? g[i] : 0.0f;
                       }
                       store_packet<N>(dx + r * dx_stride, j, cols, g);
                     });
}

template <class Params, class Rounding, class Mask, class T>
struct fake_quantize_backward_kernel_of {
  template <int N>
  struct at {
    static constexpr auto value = &fake_quantize_backward_kernel<N, Params, Rounding, Mask, T>;
  };
};

}  // namespace qsafe::detail::cuda
