#pragma once
/// \file
/// The softmax family on the host: vanilla, clipped (CS), normalized clipped (NCS) and off-by-one softmax over the
/// rows of a row-major matrix, forward and backward, with full, padded, causal and causal+padded row lengths.
/// Math and conventions: REFERENCE §1 and docs/softmax.md.
///
/// \code
///   qsafe::softmax_forward(qsafe::simd, qsafe::normalized_clipped_softmax{1.0, -2.175},
///                          qsafe::causal_rows{}, scores, probs);
/// \endcode
///
/// Contract shared by every function here:
/// - Element types: float and double. `cpu` accumulates in double; `simd` in the element type.
/// - Error bound (float, rows up to 10^4 keys, against an exact reference): `cpu` within 2 ulp of the rounded exact
///   value; `simd` within `|x_j - m|·eps + (8 + L / lanes)·eps` relative on `p` (the exp polynomial, the rounding
///   of `x - m`, the lane-wise sum), propagated through the affine map (tests/softmax states it).
/// - Masked keys (`j >= L_r`) are exactly 0 in `y`, `p` and `dx`. A fully masked row (`L = 0`, or every valid key
///   `-inf`) is all zeros, with zero gradient. A NaN among a row's valid keys makes that row's valid outputs NaN.
/// - Determinism: the same inputs give bit-identical results for any thread count.
/// - Aliasing: an output may alias an input exactly (same data and stride): `y` may be `x`; `dx` may be `p` or
///   `dy`; in `softmax_backward_from_scores`, `dx` may be `x` but not `dy`. Partial overlap is not allowed.
/// - Errors: bad shapes, strides, null pointers, lengths or parameters throw `std::invalid_argument` naming the
///   argument, before any output is written.

#include <type_traits>

#include "qsafe/detail/check.hpp"
#include "qsafe/detail/parallel.hpp"
#include "qsafe/detail/scalar/softmax.hpp"
#include "qsafe/detail/simd/softmax.hpp"
#include "qsafe/execution.hpp"
#include "qsafe/matrix_view.hpp"
#include "qsafe/softmax_variant.hpp"

namespace qsafe {

namespace detail {

template <class Variant, class Lengths, class T>
void check_softmax(std::string_view function, const Variant& variant, const Lengths& lengths,
                   const matrix_view<const T>& x) {
  check_view(function, "x", x);
  variant.validate(function);
  lengths.validate(function, x.rows, x.cols);
}

}  // namespace detail

/// Forward: `y = variant(softmax(x))` row by row, for the valid keys of each row (REFERENCE §1).
template <host_policy Policy, softmax_variant Variant, row_length_mode Lengths, host_element T>
void softmax_forward(const Policy& policy, const Variant& variant, const Lengths& lengths,
                     matrix_view<const std::type_identity_t<T>> x, matrix_view<T> y) {
  detail::check_softmax("softmax_forward", variant, lengths, x);
  detail::check_same_shape("softmax_forward", "y", y, "x", x);
  detail::for_each_row(detail::thread_count(policy), x.rows, [&](index_t r) {
    detail::softmax_forward_row(policy, variant, lengths.row_length(r, x.cols), x.cols, x.row(r), y.row(r),
                                static_cast<T*>(nullptr));
  });
}

/// Forward that also stores the unclipped softmax `p`, which the exact backward of a clipping variant needs
/// (a clipped `y` does not determine `p`). For vanilla and off-by-one, `p == y`.
template <host_policy Policy, softmax_variant Variant, row_length_mode Lengths, host_element T>
void softmax_forward(const Policy& policy, const Variant& variant, const Lengths& lengths,
                     matrix_view<const std::type_identity_t<T>> x, matrix_view<T> y, matrix_view<T> probabilities) {
  detail::check_softmax("softmax_forward", variant, lengths, x);
  detail::check_same_shape("softmax_forward", "y", y, "x", x);
  detail::check_same_shape("softmax_forward", "probabilities", probabilities, "x", x);
  detail::for_each_row(detail::thread_count(policy), x.rows, [&](index_t r) {
    detail::softmax_forward_row(policy, variant, lengths.row_length(r, x.cols), x.cols, x.row(r), y.row(r),
                                probabilities.row(r));
  });
}

/// Backward from the saved unclipped softmax `p` (from the forward above) and the output gradient `dy`:
/// `dx_j = p_j (g_j - sum_k p_k g_k)`, `g_j = (zeta - gamma)·[0 <= v_j <= 1]·dy_j` (REFERENCE §1, Gradients).
template <host_policy Policy, softmax_variant Variant, row_length_mode Lengths, host_element T>
void softmax_backward(const Policy& policy, const Variant& variant, const Lengths& lengths,
                      matrix_view<const std::type_identity_t<T>> probabilities,
                      matrix_view<const std::type_identity_t<T>> dy, matrix_view<T> dx) {
  detail::check_view("softmax_backward", "probabilities", probabilities);
  variant.validate("softmax_backward");
  lengths.validate("softmax_backward", probabilities.rows, probabilities.cols);
  detail::check_same_shape("softmax_backward", "dy", dy, "probabilities", probabilities);
  detail::check_same_shape("softmax_backward", "dx", dx, "probabilities", probabilities);
  detail::for_each_row(detail::thread_count(policy), dx.rows, [&](index_t r) {
    detail::softmax_backward_row(policy, variant, lengths.row_length(r, dx.cols), dx.cols, probabilities.row(r),
                                 dy.row(r), dx.row(r));
  });
}

/// Backward from the scores `x` (recomputing `p`, no saved activation needed) and `dy`.
template <host_policy Policy, softmax_variant Variant, row_length_mode Lengths, host_element T>
void softmax_backward_from_scores(const Policy& policy, const Variant& variant, const Lengths& lengths,
                                  matrix_view<const std::type_identity_t<T>> x,
                                  matrix_view<const std::type_identity_t<T>> dy, matrix_view<T> dx) {
  detail::check_softmax("softmax_backward_from_scores", variant, lengths, x);
  detail::check_same_shape("softmax_backward_from_scores", "dy", dy, "x", x);
  detail::check_same_shape("softmax_backward_from_scores", "dx", dx, "x", x);
  if (dx.data == dy.data && dx.size() > 0) {
    detail::fail("softmax_backward_from_scores", "dx", "must not alias 'dy' (it holds p while dy is read)");
  }
  detail::for_each_row(detail::thread_count(policy), dx.rows, [&](index_t r) {
    detail::softmax_backward_from_scores_row(policy, variant, lengths.row_length(r, dx.cols), dx.cols, x.row(r),
                                             dy.row(r), dx.row(r));
  });
}

}  // namespace qsafe
