#pragma once
/// \file
/// The softmax family on a CUDA device: the functions of qsafe/softmax.hpp with `qsafe::cuda_t{stream}` as the
/// policy, on device pointers. Math and conventions: REFERENCE §1 and docs/softmax.md. Include only from .cu files.
///
/// \code
///   qsafe::softmax_forward(qsafe::cuda_t{stream}, qsafe::normalized_clipped_softmax{1.0, -2.175},
///                          qsafe::causal_rows{}, scores, probs);   // scores, probs: matrix_views of device memory
/// \endcode
///
/// Contract (differences from the host backends marked *):
/// - Element types*: float, __half, __nv_bfloat16; the arithmetic is fp32 for all three (exp by the hardware's
///   ex2: within `(2 + |x_j - m|)·eps_f32` relative on p), and the result is rounded once to the element type.
/// - Row lengths*: `padded_rows` / `causal_padded_rows` must hold device memory (std::span over a device
///   pointer); they are not read on the host, so an entry outside [0, cols] is not reported: the kernel clamps it.
///   Passing host memory is reported (std::invalid_argument naming 'lengths.lengths').
/// - Masked keys are exactly 0 in y, p and dx; a fully masked row is all zeros; a NaN key makes its row NaN.
/// - Asynchronous*: the work is queued on `stream`; nothing synchronizes or allocates. Launch errors throw
///   `qsafe::cuda_error` naming the op and the call; a fault inside the kernel surfaces at the next synchronization.
/// - Determinism: fixed reduction order, bit-identical results for the same inputs and shape.
/// - Aliasing: as on the host (y may be x; dx may be p or dy; from scores, dx may be x but not dy).
/// - Performance: a row whose 16-byte packets fit in registers (8 K or 16 K elements, by op) is read once and
///   written once; longer rows are re-read from memory (2-3 reads). Every row start and stride 16-byte aligned
///   gives 16-byte accesses; otherwise a single-element fallback runs.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <climits>
#include <concepts>
#include <cstdint>
#include <string>
#include <type_traits>

#include "qsafe/cuda/execution.cuh"
#include "qsafe/detail/check.hpp"
#include "qsafe/detail/cuda/dispatch_softmax.cuh"
#include "qsafe/detail/cuda/lengths.cuh"
#include "qsafe/matrix_view.hpp"
#include "qsafe/softmax_variant.hpp"

namespace qsafe {

/// A row-length mode the CUDA backend can check without reading its lengths.
template <class M>
concept device_row_length_mode = row_length_mode<M> && requires(const M& m, index_t r, std::string_view function) {
  m.validate_shape(function, r, r);
};

namespace detail::cuda {

template <class Variant, class Lengths>
void check_policies(std::string_view function, const Variant& variant, const Lengths& lengths, index_t rows,
                    index_t cols) {
  variant.validate(function);
  lengths.validate_shape(function, rows, cols);
  if (cols > INT_MAX / 2) fail(function, "x", "has " + std::to_string(cols) + " columns; at most INT_MAX / 2");
  const std::int32_t* device_lengths = length_pointer(lengths);
  if (device_lengths != nullptr && rows > 0) {
    cudaPointerAttributes attributes{};
    check(cudaPointerGetAttributes(&attributes, device_lengths), function, "cudaPointerGetAttributes(lengths)");
    if (attributes.type == cudaMemoryTypeUnregistered) {
      fail(function, "lengths.lengths", "must point to device (or mapped) memory, got unregistered host memory");
    }
  }
}

}  // namespace detail::cuda

/// Forward: `y = variant(softmax(x))` row by row (REFERENCE §1).
template <softmax_variant Variant, device_row_length_mode Lengths, cuda_element T>
void softmax_forward(const cuda_t& policy, const Variant& variant, const Lengths& lengths,
                     matrix_view<const std::type_identity_t<T>> x, matrix_view<T> y) {
  detail::check_view("softmax_forward", "x", x);
  detail::check_same_shape("softmax_forward", "y", y, "x", x);
  detail::cuda::check_policies("softmax_forward", variant, lengths, x.rows, x.cols);
  if (x.empty()) return;
  detail::cuda::softmax_forward(policy.stream, variant, lengths, x, y, static_cast<T*>(nullptr), 0);
}

/// Forward that also stores the unclipped softmax `p` for the exact backward of a clipping variant.
template <softmax_variant Variant, device_row_length_mode Lengths, cuda_element T>
void softmax_forward(const cuda_t& policy, const Variant& variant, const Lengths& lengths,
                     matrix_view<const std::type_identity_t<T>> x, matrix_view<T> y, matrix_view<T> probabilities) {
  detail::check_view("softmax_forward", "x", x);
  detail::check_same_shape("softmax_forward", "y", y, "x", x);
  detail::check_same_shape("softmax_forward", "probabilities", probabilities, "x", x);
  detail::cuda::check_policies("softmax_forward", variant, lengths, x.rows, x.cols);
  if (x.empty()) return;
  detail::cuda::softmax_forward(policy.stream, variant, lengths, x, y, probabilities.data, probabilities.row_stride);
}

/// Backward from the saved unclipped softmax `p` and `dy`: `dx_j = p_j (g_j - sum_k p_k g_k)`,
/// `g_j = (zeta - gamma)·[0 <= v_j <= 1]·dy_j` (REFERENCE §1, Gradients).
template <softmax_variant Variant, device_row_length_mode Lengths, cuda_element T>
void softmax_backward(const cuda_t& policy, const Variant& variant, const Lengths& lengths,
                      matrix_view<const std::type_identity_t<T>> probabilities,
                      matrix_view<const std::type_identity_t<T>> dy, matrix_view<T> dx) {
  detail::check_view("softmax_backward", "probabilities", probabilities);
  detail::check_same_shape("softmax_backward", "dy", dy, "probabilities", probabilities);
  detail::check_same_shape("softmax_backward", "dx", dx, "probabilities", probabilities);
  detail::cuda::check_policies("softmax_backward", variant, lengths, probabilities.rows, probabilities.cols);
  if (probabilities.empty()) return;
  detail::cuda::softmax_backward(policy.stream, variant, lengths, probabilities, dy, dx);
}

/// Backward from the scores `x` (p recomputed, no saved activation) and `dy`.
template <softmax_variant Variant, device_row_length_mode Lengths, cuda_element T>
void softmax_backward_from_scores(const cuda_t& policy, const Variant& variant, const Lengths& lengths,
                                  matrix_view<const std::type_identity_t<T>> x,
                                  matrix_view<const std::type_identity_t<T>> dy, matrix_view<T> dx) {
  detail::check_view("softmax_backward_from_scores", "x", x);
  detail::check_same_shape("softmax_backward_from_scores", "dy", dy, "x", x);
  detail::check_same_shape("softmax_backward_from_scores", "dx", dx, "x", x);
  if (dx.data == dy.data && dx.size() > 0) {
    detail::fail("softmax_backward_from_scores", "dx", "must not alias 'dy' (as on the host backends)");
  }
  detail::cuda::check_policies("softmax_backward_from_scores", variant, lengths, x.rows, x.cols);
  if (x.empty()) return;
  detail::cuda::softmax_backward_from_scores(policy.stream, variant, lengths, x, dy, dx);
}

}  // namespace qsafe
