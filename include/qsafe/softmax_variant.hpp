#pragma once
/// \file
/// The softmax family's two policies (REFERENCE §1, docs/softmax.md):
///
/// - the **variant** says what happens to the softmax `p` of a row of valid length `L`:
///   `v = scale(L)·p + shift(L)`, then (if the variant clips) `y = clip(v, 0, 1)`, gradient passed where
///   `0 <= v <= 1` (both ends inclusive, as `torch.clamp`);
/// - the **row-length mode** says how many leading keys of row `r` are valid; keys `j >= L_r` are masked (output and
///   gradient exactly 0).
/// Both are small structs; a user may write their own that model the concepts below.

#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <span>
#include <string>

#include "qsafe/detail/check.hpp"
#include "qsafe/detail/config.hpp"
#include "qsafe/matrix_view.hpp"

namespace qsafe {

/// The affine map a variant applies to `p` before the clip: `v = scale·p + shift`.
struct clip_affine {
  double scale = 1.0;
  double shift = 0.0;
};

// ---------------------------------------------------------------------------------------------------------------
// Variants

/// Plain softmax: `y = p`.
struct vanilla_softmax {
  static constexpr bool clips = false;
  static constexpr bool off_by_one = false;
  QSAFE_HOST_DEVICE constexpr clip_affine affine_for(index_t /*row_length*/) const { return {}; }
  void validate(std::string_view /*function*/) const {}
};

/// Clipped softmax (Bondarenko et al.): `y = clip((zeta - gamma)·p + gamma, 0, 1)` with the same `gamma` for every
/// row. Requires `zeta >= 1` and `gamma <= 0`, both finite.
struct clipped_softmax {
  double zeta = 1.0;
  double gamma = 0.0;

  static constexpr bool clips = true;
  static constexpr bool off_by_one = false;

  /// The papers' parameterization: `zeta = 1`, `gamma = -alpha / T` with `T` the *pretraining* sequence length
  /// (alpha = 3.2, T = 128 for BERT; alpha = 12, T = 512 for OPT).
  static clipped_softmax from_alpha(double alpha, index_t pretraining_length) {
    if (!(alpha >= 0.0) || !std::isfinite(alpha)) {
      detail::fail("clipped_softmax::from_alpha", "alpha", "must be finite and >= 0, got " + std::to_string(alpha));
    }
    if (pretraining_length <= 0) {
      detail::fail("clipped_softmax::from_alpha", "pretraining_length",
                   "must be positive, got " + std::to_string(pretraining_length));
    }
    return {1.0, -alpha / static_cast<double>(pretraining_length)};
  }

  QSAFE_HOST_DEVICE constexpr clip_affine affine_for(index_t /*row_length*/) const { return {zeta - gamma, gamma}; }

  void validate(std::string_view function) const {
    if (!(zeta >= 1.0) || !std::isfinite(zeta)) {
      detail::fail(function, "variant.zeta", "must be finite and >= 1, got " + std::to_string(zeta));
    }
    if (!(gamma <= 0.0) || !std::isfinite(gamma)) {
      detail::fail(function, "variant.gamma", "must be finite and <= 0, got " + std::to_string(gamma));
    }
  }
};

/// Normalized clipped softmax (Liao & Monz): clipped softmax whose `gamma = (beta - zeta) / (L - 1)` is derived
/// per row from the row's valid length `L`, so that the unclipped row sum is `beta` for every `L >= 2`. `L = 1`
/// gives `y = clip(zeta, 0, 1)` (gamma is irrelevant there and taken as 0: no division by zero). Requires
/// `zeta >= 1`, `beta` finite; `beta > zeta` (a positive gamma) is accepted, as the paper's code does.
struct normalized_clipped_softmax {
  double zeta = 1.0;
  double beta = 1.0;

  static constexpr bool clips = true;
  static constexpr bool off_by_one = false;

  /// BERT's setting in the paper: `zeta = 1`, `beta = 1 - alpha (T - 1) / T` (alpha = 3.2, T = 128 gives -2.175).
  static normalized_clipped_softmax from_alpha(double alpha, index_t pretraining_length) {
    const double g = clipped_softmax::from_alpha(alpha, pretraining_length).gamma;
    return {1.0, 1.0 + g * static_cast<double>(pretraining_length - 1)};
  }

  QSAFE_HOST_DEVICE constexpr double gamma_for(index_t row_length) const {
    return row_length >= 2 ? (beta - zeta) / static_cast<double>(row_length - 1) : 0.0;
  }
  QSAFE_HOST_DEVICE constexpr clip_affine affine_for(index_t row_length) const {
    const double g = gamma_for(row_length);
    return {zeta - g, g};
  }

  void validate(std::string_view function) const {
    if (!(zeta >= 1.0) || !std::isfinite(zeta)) {
      detail::fail(function, "variant.zeta", "must be finite and >= 1, got " + std::to_string(zeta));
    }
    if (!std::isfinite(beta)) detail::fail(function, "variant.beta", "must be finite");
  }
};

/// Off-by-one softmax ("softmax1"): `y_j = exp(x_j) / (1 + sum_k exp(x_k))`, computed as
/// `exp(x_j - m') / (exp(-m') + sum_k exp(x_k - m'))` with `m' = max(m, 0)`; a row may sum to less than 1.
struct off_by_one_softmax {
  static constexpr bool clips = false;
  static constexpr bool off_by_one = true;
  QSAFE_HOST_DEVICE constexpr clip_affine affine_for(index_t /*row_length*/) const { return {}; }
  void validate(std::string_view /*function*/) const {}
};

/// A softmax variant: an affine map of `p` per row length, whether it clips, whether the denominator has a +1.
template <class V>
concept softmax_variant = requires(const V& v, index_t length, std::string_view function) {
  { v.affine_for(length) } -> std::same_as<clip_affine>;
  { V::clips } -> std::convertible_to<bool>;
  { V::off_by_one } -> std::convertible_to<bool>;
  v.validate(function);
};

// ---------------------------------------------------------------------------------------------------------------
// Row-length modes

/// Every key of every row is valid: `L_r = cols`.
struct full_rows {
  QSAFE_HOST_DEVICE constexpr index_t row_length(index_t /*row*/, index_t cols) const { return cols; }
  void validate(std::string_view, index_t /*rows*/, index_t /*cols*/) const {}
  void validate_shape(std::string_view, index_t /*rows*/, index_t /*cols*/) const {}
};

namespace detail {
// What can be checked without reading the lengths (which a device backend holds in device memory).
inline void check_length_count(std::string_view function, std::span<const std::int32_t> lengths,
                               index_t rows_per_length, index_t rows) {
  if (rows_per_length <= 0) {
    fail(function, "lengths.rows_per_length", "must be positive, got " + std::to_string(rows_per_length));
  }
  if (static_cast<index_t>(lengths.size()) * rows_per_length != rows) {
    fail(function, "lengths.lengths",
         "has " + std::to_string(lengths.size()) + " entries; with rows_per_length " + std::to_string(rows_per_length) +
             " that covers " + std::to_string(static_cast<index_t>(lengths.size()) * rows_per_length) + " rows, not " +
             std::to_string(rows));
  }
}
inline void check_lengths(std::string_view function, std::span<const std::int32_t> lengths, index_t rows_per_length,
                          index_t rows, index_t cols) {
  check_length_count(function, lengths, rows_per_length, rows);
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    if (lengths[i] < 0 || lengths[i] > cols) {
      fail(function, "lengths.lengths",
           "entry " + std::to_string(i) + " is " + std::to_string(lengths[i]) +
               ", outside [0, cols = " + std::to_string(cols) + "]");
    }
  }
}
inline void check_causal(std::string_view function, index_t queries, index_t offset, index_t rows) {
  if (queries < 0) fail(function, "lengths.queries", "must be >= 0, got " + std::to_string(queries));
  if (queries > 0 && rows % queries != 0) {
    fail(function, "lengths.queries",
         "(" + std::to_string(queries) + ") must divide the number of rows (" + std::to_string(rows) + ")");
  }
  if (offset < 0) fail(function, "lengths.offset", "must be >= 0, got " + std::to_string(offset));
}
}  // namespace detail

/// Padding: row `r` has `lengths[r / rows_per_length]` valid keys. With attention scores laid out as
/// `(batch, heads, queries) x keys`, pass one length per batch item and `rows_per_length = heads * queries`.
struct padded_rows {
  std::span<const std::int32_t> lengths;
  index_t rows_per_length = 1;

  // Host only (std::span); the CUDA backend reads the same lengths through detail/cuda/lengths.cuh.
  constexpr index_t row_length(index_t row, index_t /*cols*/) const {
    return lengths[static_cast<std::size_t>(row / rows_per_length)];
  }
  void validate(std::string_view function, index_t rows, index_t cols) const {
    detail::check_lengths(function, lengths, rows_per_length, rows, cols);
  }
  void validate_shape(std::string_view function, index_t rows, index_t /*cols*/) const {
    detail::check_length_count(function, lengths, rows_per_length, rows);
  }
};

/// Causal: the matrix stacks blocks of `queries` query rows (`queries = 0`: one block of all rows); the row at
/// query position `q = r mod queries` sees `min(q + 1 + offset, cols)` keys. `offset` is the number of keys
/// already in a KV cache before the block's first query.
struct causal_rows {
  index_t queries = 0;
  index_t offset = 0;

  QSAFE_HOST_DEVICE constexpr index_t row_length(index_t row, index_t cols) const {
    const index_t q = queries > 0 ? row % queries : row;
    const index_t length = q + 1 + offset;
    return length < cols ? length : cols;
  }
  void validate(std::string_view function, index_t rows, index_t /*cols*/) const {
    detail::check_causal(function, queries, offset, rows);
  }
  void validate_shape(std::string_view function, index_t rows, index_t cols) const { validate(function, rows, cols); }
};

/// Causal and padding together: the minimum of the two lengths.
struct causal_padded_rows {
  index_t queries = 0;
  index_t offset = 0;
  std::span<const std::int32_t> lengths;
  index_t rows_per_length = 1;

  constexpr index_t row_length(index_t row, index_t cols) const {  // host only, as padded_rows
    const index_t causal = causal_rows{queries, offset}.row_length(row, cols);
    const index_t padded = lengths[static_cast<std::size_t>(row / rows_per_length)];
    return causal < padded ? causal : padded;
  }
  void validate(std::string_view function, index_t rows, index_t cols) const {
    detail::check_causal(function, queries, offset, rows);
    detail::check_lengths(function, lengths, rows_per_length, rows, cols);
  }
  void validate_shape(std::string_view function, index_t rows, index_t /*cols*/) const {
    detail::check_causal(function, queries, offset, rows);
    detail::check_length_count(function, lengths, rows_per_length, rows);
  }
};

/// A row-length mode: gives `row_length(r, cols)` in `[0, cols]` and validates itself against a shape.
/// `validate` may read the lengths (host memory); `validate_shape` checks everything else and reads no length, so
/// that a device backend, whose lengths live in device memory, can check a mode before launching.
template <class M>
concept row_length_mode = requires(const M& m, index_t r, std::string_view function) {
  { m.row_length(r, r) } -> std::convertible_to<index_t>;
  m.validate(function, r, r);
};

}  // namespace qsafe
