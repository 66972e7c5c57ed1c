#pragma once
// The softmax family's CUDA kernels (REFERENCE §1), one per op, each parameterized by
//   Shape    the packet width N (elements per access) and `cached`, the packets per thread held in registers
//            (0: stream the row from memory at each pass), see dispatch_softmax.cuh;
//   Variant  vanilla / clipped / normalized clipped / off-by-one (qsafe/softmax_variant.hpp);
//   Lengths  a row-length mode in its device form (detail/cuda/lengths.cuh).
// A row group (detail/cuda/row_group.cuh) computes one row; fp32 arithmetic for every element type. With the row
// cached, each input element is read once from memory and each output element written once.
// Kernels trust their inputs (the public functions check them); a row length outside [0, cols] is clamped.

#include <cuda_pipeline_primitives.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>

#include "qsafe/detail/cuda/element.cuh"
#include "qsafe/detail/cuda/row_group.cuh"
#include "qsafe/softmax_variant.hpp"

namespace qsafe::detail::cuda {

template <int Packet, int Cached>
struct softmax_shape {
  static constexpr int packet = Packet;  // elements per load/store (16 bytes, or 1 for the unaligned fallback)
  static constexpr int cached = Cached;  // packets per thread kept in registers; 0 streams the row
};

inline constexpr float negative_infinity = -INFINITY;
// The largest block the dispatcher launches (softmax_tuning::max_threads_per_row); the register budget follows
// (up to 128 a thread). Tighter bounds (256 threads and 3-4 blocks an SM: 64-80 registers) made ptxas spill.
inline constexpr int max_threads_per_block = 512;

struct max_op {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct plus_op {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

// exp(x_j - base) for this thread's keys, `base` its largest finite key (0 if it has none): kept in registers for
// the cached shapes, so each key costs one exp. The streamed shape keeps only (base, sum), per packet rescaled.
// NaN keys make `sum` NaN (fmaxf skips them in the max), which marks the row NaN after the reductions.
template <class Shape, class T>
struct row_exponentials {
  static constexpr int N = Shape::packet, C = Shape::cached > 0 ? Shape::cached : 1;
  float e[C][N];
  float base = 0.0f;
  float max = negative_infinity;  // the largest key, -inf if none is finite
  float sum = 0.0f;               // sum of exp(x_j - base)
  const T* row;
  int length;

  __device__ row_exponentials(const T* row_, int length_, const row_walk<N, Shape::cached>& walk)
      : row(row_), length(length_) {
    const T fill = from_float<T>(negative_infinity);
    if constexpr (Shape::cached > 0) {
      exponentiate<false>(load_row_packets(row, length, fill, walk), walk);  // the loads filled the tail
    } else {
      walk(length, [&](int, int j) {
        float v[N];
        to_float(load_packet<N>(row, j, length, fill), v);
        float m = max;
#pragma unroll
        for (int i = 0; i < N; ++i) m = fmaxf(m, v[i]);
        const float b = m == negative_infinity ? 0.0f : m;
        float s = max == negative_infinity ? sum : sum * __expf(base - b);  // sum is 0 (or NaN) until a finite key
#pragma unroll
        for (int i = 0; i < N; ++i) s += __expf(v[i] - b);
        max = m;
        base = b;
        sum = s;
      });
    }
  }

  // From this thread's packets already in registers, whatever they hold past the row's length; cached shapes.
  __device__ row_exponentials(const row_packets<T, N, C>& raw, int length_, const row_walk<N, Shape::cached>& walk)
      : row(nullptr), length(length_) {
    exponentiate<true>(raw, walk);
  }

  // Masked: keys past the row's length are set to -inf first.
  template <bool Masked>
  __device__ __forceinline__ void exponentiate(const row_packets<T, N, C>& raw,
                                               const row_walk<N, Shape::cached>& walk) {
#pragma unroll
    for (int k = 0; k < C; ++k) {
      to_float(raw.v[k], e[k]);
      const int j = walk.first + k * walk.step;
      if (Masked && j + N > length) {
#pragma unroll
        for (int i = 0; i < N; ++i) e[k][i] = j + i < length ? e[k][i] : negative_infinity;
      }
#pragma unroll
      for (int i = 0; i < N; ++i) max = fmaxf(max, e[k][i]);
    }
    base = max == negative_infinity ? 0.0f : max;
#pragma unroll
    for (int k = 0; k < C; ++k) {
#pragma unroll
      for (int i = 0; i < N; ++i) {
        e[k][i] = __expf(e[k][i] - base);
        sum += e[k][i];
      }
    }
  }

  // This thread's sum rescaled to the row's shift.
  __device__ __forceinline__ float sum_at(float row_max) const {
    return max == negative_infinity ? sum : sum * __expf(base - row_max);  // row_max >= max
  }
};

// The row's softmax: p_j = exp(x_j - shift) / sum. A fully masked row (no finite key) is dead: all outputs 0; a
// NaN key (a NaN sum) makes the row's valid outputs NaN.
struct row_softmax {
  float shift = 0.0f;
  float inverse_sum = 0.0f;
  bool live = false;
  bool nan = false;

  template <class Variant>
  __device__ __forceinline__ static row_softmax from(float row_max, float row_sum) {
    row_softmax out;
    out.nan = row_sum != row_sum;
    if (out.nan || row_max == negative_infinity) return out;
    out.shift = row_max;
    if constexpr (Variant::off_by_one) {
      out.shift = fmaxf(row_max, 0.0f);
      row_sum = row_sum * __expf(row_max - out.shift) + __expf(-out.shift);
    }
    out.inverse_sum = 1.0f / row_sum;
    out.live = true;
    return out;
  }
};

// Reduces a thread's exponentials to the row's softmax: max, then the rescaled sums (two cheap reductions rather
// than one of (max, sum) pairs, whose merges put an exp on the critical path).
template <class Variant, class Exponentials>
__device__ __forceinline__ row_softmax reduce_softmax(const row_group& group, const Exponentials& ex, float* max_slots,
                                                      float* sum_slots) {
  const float row_max = group.reduce(ex.max, max_op{}, max_slots);
  const float row_sum = group.reduce(ex.sum_at(row_max), plus_op{}, sum_slots);
  return row_softmax::from<Variant>(row_max, row_sum);
}

// p for the packet at (k, j): from the cached exponentials (times a per-thread factor), or recomputed.
template <class Shape, class T>
struct probabilities {
  const row_exponentials<Shape, T>& ex;
  const row_softmax& softmax;
  float factor;  // cached: exp(base - shift) / sum; 0 for a dead row
  __device__ probabilities(const row_exponentials<Shape, T>& ex_, const row_softmax& softmax_)
      : ex(ex_),
        softmax(softmax_),
        factor(softmax_.live && ex_.max != negative_infinity ? __expf(ex_.base - softmax_.shift) * softmax_.inverse_sum
                                                             : 0.0f) {}

  __device__ __forceinline__ void operator()(int k, int j, float (&p)[Shape::packet]) const {
    constexpr int N = Shape::packet;
    if constexpr (Shape::cached > 0) {
#pragma unroll
      for (int i = 0; i < N; ++i) p[i] = ex.e[k][i] * factor;
    } else {
      float x[N];
      to_float(load_packet<N>(ex.row, j, ex.length, from_float<T>(negative_infinity)), x);
#pragma unroll
      for (int i = 0; i < N; ++i) p[i] = softmax.live ? __expf(x[i] - softmax.shift) * softmax.inverse_sum : 0.0f;
    }
  }
};

// The variant's affine map in fp32 for a row of valid length L.
struct row_affine {
  float scale, shift;
  template <class Variant>
  __device__ __forceinline__ static row_affine from(const Variant& variant, int length) {
    const clip_affine a = variant.affine_for(length);
    return {static_cast<float>(a.scale), static_cast<float>(a.shift)};
  }
  // clip(v, 0, 1) (NaN rows are written separately: __saturatef maps NaN to 0).
  __device__ __forceinline__ float clipped(float p) const { return __saturatef(fmaf(scale, p, shift)); }
  // The gradient reaching p through the (clipped) affine map is g = (zeta - gamma)·h with h = [0 <= v <= 1]·dy
  // (g = dy without a clip). The scale is applied once to the row's dot and inside dx, not to each term of the dot.
  template <class Variant>
  __device__ __forceinline__ float gated(float p, float dy) const {
    if constexpr (Variant::clips) {
      const float v = fmaf(scale, p, shift);
      return (v >= 0.0f && v <= 1.0f) ? dy : 0.0f;
    } else {
      return dy;
    }
  }
  // sum_k p_k g_k from sum_k p_k h_k.
  template <class Variant>
  __device__ __forceinline__ float dot(float gated_dot) const {
    return Variant::clips ? scale * gated_dot : gated_dot;
  }
  // dx_j = p_j (g_j - dot).
  template <class Variant>
  __device__ __forceinline__ float gradient(float p, float gated, float dot) const {
    return Variant::clips ? p * fmaf(scale, gated, -dot) : p * (gated - dot);
  }
};

template <class Lengths>
__device__ __forceinline__ int clamped_length(const Lengths& lengths, index_t row, index_t rows, int cols) {
  if (row >= rows) return 0;
  const index_t length = lengths.row_length(row, cols);
  return static_cast<int>(length < 0 ? 0 : (length > cols ? cols : length));
}

template <class T>
__device__ __forceinline__ T* row_pointer(T* data, index_t stride, index_t row, index_t rows) {
  return row < rows ? data + row * stride : data;
}

// ---------------------------------------------------------------------------------------------------------------

// Writes the packet at j of a NaN row: NaN at valid keys, 0 at masked ones.
template <int N, class T>
__device__ __forceinline__ void store_nan_packet(T* row, int j, int length, int cols) {
  float v[N];
#pragma unroll
  for (int i = 0; i < N; ++i) v[i] = j + i < length ? __int_as_float(0x7fc00000) : 0.0f;
  store_packet<N>(row, j, cols, v);
}

// Asks L2 to fetch the rows `ahead` rows past this block's, which a later block will read (blocks start about in
// order), up to each row's length: DRAM keeps streaming while the resident blocks sit in their reductions. One bulk
// prefetch a row and input (sm_90's cp.async.bulk.prefetch: nothing held); aligned shapes only (16-byte rows).
// `second` (may be null) is a second input of the same shape.
template <class Shape, class Lengths, class T>
__device__ __forceinline__ void prefetch_rows_ahead(const row_group& group, index_t ahead, const Lengths& lengths,
                                                    index_t rows, int cols, const T* first, index_t first_stride,
                                                    const T* second = nullptr, index_t second_stride = 0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (Shape::packet > 1) {
    const int rows_per_block = static_cast<int>(blockDim.x) / group.threads;
    if (ahead <= 0 || static_cast<int>(threadIdx.x) >= rows_per_block) return;
    const index_t row = static_cast<index_t>(blockIdx.x) * rows_per_block + threadIdx.x + ahead;
    const unsigned bytes = static_cast<unsigned>(clamped_length(lengths, row, rows, cols)) * sizeof(T) / 16 * 16;
    if (bytes == 0) return;
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(first + row * first_stride), "r"(bytes) : "memory");
    if (second != nullptr)
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(second + row * second_stride), "r"(bytes)
                   : "memory");
  }
#endif
}

// y = variant(softmax(x)); p (if not null) = the unclipped softmax.
template <class Shape, class Variant, class Lengths, class T>
__global__ void __launch_bounds__(max_threads_per_block)
    softmax_forward_kernel(const Variant variant, const Lengths lengths, index_t rows, int cols, int threads_per_row,
                           const T* x, index_t x_stride, T* y, index_t y_stride, T* p, index_t p_stride,
                           index_t ahead) {
  constexpr int N = Shape::packet;
  __shared__ float max_slots[max_warps_per_block], sum_slots[max_warps_per_block];
  const row_group group(threads_per_row);
  prefetch_rows_ahead<Shape>(group, ahead, lengths, rows, cols, x, x_stride);
  const row_walk<N, Shape::cached> walk(group);
  const int length = clamped_length(lengths, group.row, rows, cols);
  // Before the loads and barriers: NCS's per-row affine is a double division, whose latency the loads then cover
  // (after the reductions it stalled every row: NCS forward ran at 83-91% of a copy on the H200, CS at 98%).
  const row_affine affine = row_affine::from(variant, length);
  const row_exponentials<Shape, T> ex(row_pointer(x, x_stride, group.row, rows), length, walk);
  const row_softmax softmax = reduce_softmax<Variant>(group, ex, max_slots, sum_slots);
  if (group.row >= rows) return;  // after the last barrier
  T* y_row = y + group.row * y_stride;
  T* p_row = p != nullptr ? p + group.row * p_stride : nullptr;
  if (softmax.nan) {
    walk(cols, [&](int, int j) {
      store_nan_packet<N>(y_row, j, length, cols);
      if (p_row != nullptr) store_nan_packet<N>(p_row, j, length, cols);
    });
    return;
  }
  const probabilities<Shape, T> probability(ex, softmax);
  // y, then p in a second walk: one packet array live at a time (ptxas, bf16: 63-73 registers, against 89-90
  // with both stores in one walk).
  walk(cols, [&](int k, int j) {
    float v[N];
    probability(k, j, v);  // 0 at masked keys and in a dead row
    if constexpr (Variant::clips) {
      const int valid = softmax.live ? length - j : 0;  // clip(gamma) may be > 0: mask explicitly
#pragma unroll
      for (int i = 0; i < N; ++i) v[i] = i < valid ? affine.clipped(v[i]) : 0.0f;
    }
    store_packet<N>(y_row, j, cols, v);
  });
  if (p_row != nullptr) {
    walk(cols, [&](int k, int j) {
      float v[N];
      probability(k, j, v);
      store_packet<N>(p_row, j, cols, v);
    });
  }
}

// dx = p (g - sum_k p_k g_k) from the saved unclipped softmax p and dy.
template <class Shape, class Variant, class Lengths, class T>
__global__ void __launch_bounds__(max_threads_per_block)
    softmax_backward_kernel(const Variant variant, const Lengths lengths, index_t rows, int cols, int threads_per_row,
                            const T* p, index_t p_stride, const T* dy, index_t dy_stride, T* dx, index_t dx_stride,
                            index_t ahead) {
  constexpr int N = Shape::packet;
  __shared__ float sum_slots[max_warps_per_block];
  const row_group group(threads_per_row);
  prefetch_rows_ahead<Shape>(group, ahead, lengths, rows, cols, p, p_stride, dy, dy_stride);
  const row_walk<N, Shape::cached> walk(group);
  const int length = clamped_length(lengths, group.row, rows, cols);
  const row_source<T, N, Shape::cached> ps(row_pointer(p, p_stride, group.row, rows), length, from_float<T>(0.0f),
                                           walk);
  const row_source<T, N, Shape::cached> dys(row_pointer(dy, dy_stride, group.row, rows), length, from_float<T>(0.0f),
                                            walk);
  const row_affine affine = row_affine::from(variant, length);

  float dot = 0.0f;
  walk(length, [&](int k, int j) {
    float pv[N], dyv[N];
    ps.at(k, j, pv);
    dys.at(k, j, dyv);
#pragma unroll
    for (int i = 0; i < N; ++i) dot = fmaf(pv[i], affine.gated<Variant>(pv[i], dyv[i]), dot);
  });
  dot = affine.dot<Variant>(group.reduce(dot, plus_op{}, sum_slots));
  if (group.row >= rows) return;
  T* dx_row = dx + group.row * dx_stride;
  walk(cols, [&](int k, int j) {
    float pv[N], dyv[N], out[N];
    ps.at(k, j, pv);  // 0 at masked keys
    dys.at(k, j, dyv);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = affine.gradient<Variant>(pv[i], affine.gated<Variant>(pv[i], dyv[i]), dot);
    if (j + N > length) {  // masked keys are exactly 0 even where dot is NaN
#pragma unroll
      for (int i = 0; i < N; ++i) out[i] = j + i < length ? out[i] : 0.0f;
    }
    store_packet<N>(dx_row, j, cols, out);
  });
}

// dx of one row from its exponentials and dy (both held by the threads of `group`); `dx_row` null for a row past
// the end (its threads still take part in the reductions).
template <class Shape, class Variant, class T, class Source>
__device__ __forceinline__ void backward_from_scores_row(const row_group& group,
                                                         const row_walk<Shape::packet, Shape::cached>& walk,
                                                         const row_affine& affine, int length, int cols,
                                                         row_exponentials<Shape, T>& ex, const Source& dys, T* dx_row,
                                                         float* max_slots, float* sum_slots, float* dot_slots) {
  constexpr int N = Shape::packet;
  const row_softmax softmax = reduce_softmax<Variant>(group, ex, max_slots, sum_slots);
  const probabilities<Shape, T> probability(ex, softmax);

  // Cached rows: this walk leaves p in place of the exponentials (0 past the length, as they were), so that the
  // second reads it without a multiply.
  float dot = 0.0f;
  walk(length, [&](int k, int j) {
    float pv[N], dyv[N];
    probability(k, j, pv);
    dys.at(k, j, dyv);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      dot = fmaf(pv[i], affine.gated<Variant>(pv[i], dyv[i]), dot);
      if constexpr (Shape::cached > 0) ex.e[k][i] = pv[i];
    }
  });
  dot = affine.dot<Variant>(group.reduce(dot, plus_op{}, dot_slots));
  if (dx_row == nullptr) return;
  if (softmax.nan) {
    walk(cols, [&](int, int j) { store_nan_packet<N>(dx_row, j, length, cols); });
    return;
  }
  walk(cols, [&](int k, int j) {
    float pv[N], dyv[N], out[N];
    if constexpr (Shape::cached > 0) {
#pragma unroll
      for (int i = 0; i < N; ++i) pv[i] = ex.e[k][i];  // 0 at masked keys and in a dead row
    } else {
      probability(k, j, pv);
    }
    dys.at(k, j, dyv);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = affine.gradient<Variant>(pv[i], affine.gated<Variant>(pv[i], dyv[i]), dot);
    if (!(softmax.live && j + N <= length)) {  // masked keys and dead rows are exactly 0, whatever dy holds
#pragma unroll
      for (int i = 0; i < N; ++i) out[i] = softmax.live && j + i < length ? out[i] : 0.0f;
    }
    store_packet<N>(dx_row, j, cols, out);
  });
}

// dx from the scores x (p recomputed) and dy.
template <class Shape, class Variant, class Lengths, class T>
__global__ void __launch_bounds__(max_threads_per_block)
    softmax_backward_from_scores_kernel(const Variant variant, const Lengths lengths, index_t rows, int cols,
                                        int threads_per_row, const T* x, index_t x_stride, const T* dy,
                                        index_t dy_stride, T* dx, index_t dx_stride, index_t ahead) {
  constexpr int N = Shape::packet;
  __shared__ float max_slots[max_warps_per_block], sum_slots[max_warps_per_block], dot_slots[max_warps_per_block];
  const row_group group(threads_per_row);
  prefetch_rows_ahead<Shape>(group, ahead, lengths, rows, cols, x, x_stride, dy, dy_stride);
  const row_walk<N, Shape::cached> walk(group);
  const int length = clamped_length(lengths, group.row, rows, cols);
  row_exponentials<Shape, T> ex(row_pointer(x, x_stride, group.row, rows), length, walk);
  const row_source<T, N, Shape::cached> dys(row_pointer(dy, dy_stride, group.row, rows), length, from_float<T>(0.0f),
                                            walk);
  backward_from_scores_row<Shape, Variant>(group, walk, row_affine::from(variant, length), length, cols, ex, dys,
                                           group.row < rows ? dx + group.row * dx_stride : nullptr, max_slots,
                                           sum_slots, dot_slots);
}

// Dynamic shared memory of the staged kernel below for blocks of `threads`: its slots.
template <class Shape>
constexpr std::size_t staged_shared_bytes(int threads) {
  return 2 * Shape::cached * sizeof(uint4) * static_cast<std::size_t>(threads);  // 2 inputs × Cached packets a thread
}

// softmax_backward_from_scores_kernel for long rows of 16-bit types, a block a row: a grid of one wave walks the
// rows (block b: rows b, b + gridDim.x, ...), and as soon as a thread has read its packets of a row it copies those
// of the block's next row into its slots in shared memory (cp.async), so the next row streams in from DRAM while
// this one sits in its three block reductions (with a block a row and 2 blocks an SM, nothing else covered them:
// 86-88% of a copy). No barrier guards the slots: each thread reads only the slots it filled. Dynamic shared
// memory: staged_shared_bytes<Shape>(blockDim.x).
template <class Shape, class Variant, class Lengths, class T>
__global__ void __launch_bounds__(max_threads_per_block, 2)
    softmax_backward_from_scores_staged_kernel(const Variant variant, const Lengths lengths, index_t rows, int cols,
                                               const T* x, index_t x_stride, const T* dy, index_t dy_stride, T* dx,
                                               index_t dx_stride) {
  constexpr int N = Shape::packet, C = Shape::cached;
  static_assert(C > 0 && N * sizeof(T) == 16, "the staged kernel copies whole 16-byte packets of cached rows");
  extern __shared__ uint4 staged[];  // slot (input i, packet k) of thread t at (i·C + k)·blockDim.x + t
  __shared__ float max_slots[max_warps_per_block], sum_slots[max_warps_per_block], dot_slots[max_warps_per_block];
  const row_group group(static_cast<int>(blockDim.x));  // its `row` is unused: the loop below names the rows
  const row_walk<N, C> walk(group);
  const auto slot = [&](int input, int k) -> uint4& { return staged[(input * C + k) * blockDim.x + threadIdx.x]; };
  const auto stage = [&](index_t row) {
    const int length = clamped_length(lengths, row, rows, cols);  // 0 past the end: nothing copied
#pragma unroll
    for (int k = 0; k < C; ++k) {
      const int j = walk.first + k * walk.step;
      if (j < length) {
        const std::size_t missing = sizeof(T) * static_cast<std::size_t>(N - min(N, length - j));  // zero-filled
        __pipeline_memcpy_async(&slot(0, k), x + row * x_stride + j, 16, missing);
        __pipeline_memcpy_async(&slot(1, k), dy + row * dy_stride + j, 16, missing);
      }
    }
    __pipeline_commit();
  };
  // This thread's packets of the row from its slots: zero-filled past the row's length (the keys' -inf is set in
  // fp32 by row_exponentials: element-wise selects on 16-bit packets cost registers).
  const auto take = [&](int input, int length) {
    row_packets<T, N, C> out;
#pragma unroll
    for (int k = 0; k < C; ++k) {
      const uint4 bits = walk.first + k * walk.step < length ? slot(input, k) : make_uint4(0, 0, 0, 0);
      memcpy(&out.v[k], &bits, sizeof bits);
    }
    return out;
  };
  stage(blockIdx.x);
  // NCS's affine (a double division) only when the length changes from the block's previous row: padded rows of one
  // length share it, causal rows do not.
  int affine_length = -1;
  row_affine affine{};
#pragma unroll 1
  for (index_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int length = clamped_length(lengths, row, rows, cols);
    if (length != affine_length) {
      affine = row_affine::from(variant, length);  // before the wait, which covers it
      affine_length = length;
    }
    __pipeline_wait_prior(0);
    row_exponentials<Shape, T> ex(take(0, length), length, walk);
    const row_source<T, N, C> dys(take(1, length), length);
    stage(row + gridDim.x);  // after this thread's reads of its slots
    backward_from_scores_row<Shape, Variant>(group, walk, affine, length, cols, ex, dys, dx + row * dx_stride,
                                             max_slots, sum_slots, dot_slots);
  }
}

}  // namespace qsafe::detail::cuda
