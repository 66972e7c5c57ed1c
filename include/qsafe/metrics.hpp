#pragma once
/// \file
/// Quantization error metrics on the host (docs/quantization.md, "Quantization error metrics"): SQNR in dB,
/// normalized L2 error and cosine similarity between a tensor `x` and an approximation `y` — its quantized version,
/// or any tensor of the same shape — per tensor or per channel, in one pass, as mergeable `quant_error` sums.
///
/// \code
///   const qsafe::quant_error e = qsafe::tensor_quant_error(qsafe::simd, x, params);  // x vs fake_quantize(x)
///   double db = e.sqnr_db(), rel = e.relative_l2(), cos = e.cosine_similarity();
///   qsafe::quant_error all = e;
///   all.merge(other_batch);  // sums add: batches, threads, processes
/// \endcode
///
/// Contract:
/// - Element types float and double; sums in double. `cpu` accumulates each term in double (the difference
///   `x − y` taken in double); `simd` sums the element type's lanes over at most 16 batches before double (~20 eps_T
///   relative to the sum of |terms|). Rows are summed separately and combined in row order (along the column axis:
///   blocks of 64 rows), so results do not depend on the thread count.
/// - The fused form `tensor_quant_error(policy, x, params, options)` compares `x` with `fake_quantize(x, params,
///   options)`, computed row by row in a buffer, never stored whole.
/// - Edge cases: no error (`Σ(x − y)² = 0`, e.g. identical tensors, all zeros) gives SQNR `+inf` and relative
///   error 0; a zero signal with an error gives SQNR `−inf` and relative error `+inf`; the cosine is NaN when
///   either tensor is all zeros (no direction), else clamped to [−1, 1]. Sums that overflow double give inf.
/// - Errors: empty tensors, shape mismatches, NaN or ±inf in `x` or `y` (with their count), an output span of the
///   wrong size, bad quantizer parameters: `std::invalid_argument` naming the argument, before anything is written.
/// - On CUDA device pointers: qsafe/cuda/metrics.cuh (`cuda_t{stream, &workspace}`, the same functions and sums).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "qsafe/detail/check.hpp"
#include "qsafe/detail/parallel.hpp"
#include "qsafe/detail/scalar/metrics.hpp"
#include "qsafe/detail/simd/metrics.hpp"
#include "qsafe/execution.hpp"
#include "qsafe/matrix_view.hpp"
#include "qsafe/quant.hpp"

namespace qsafe {

/// Sums of a reference `x` and an approximation `y` over `count` elements; merge adds them.
struct quant_error {
  std::int64_t count = 0;
  double sum_x2 = 0.0;  ///< Σ x², the signal energy
  double sum_y2 = 0.0;  ///< Σ y²
  double sum_xy = 0.0;  ///< Σ x·y
  double sum_e2 = 0.0;  ///< Σ (x − y)², the error energy (summed from the differences: no cancellation)

  quant_error& merge(const quant_error& b) {
    count += b.count;
    sum_x2 += b.sum_x2;
    sum_y2 += b.sum_y2;
    sum_xy += b.sum_xy;
    sum_e2 += b.sum_e2;
    return *this;
  }

  /// Signal-to-quantization-noise ratio `10·log10(Σx² / Σ(x − y)²)` in dB; `+inf` when there is no error.
  double sqnr_db() const {
    if (sum_e2 == 0.0) return std::numeric_limits<double>::infinity();
    return 10.0 * std::log10(sum_x2 / sum_e2);
  }
  /// Normalized L2 error `‖x − y‖ / ‖x‖`; 0 when there is no error, `+inf` for a zero signal with an error.
  double relative_l2() const {
    if (sum_e2 == 0.0) return 0.0;
    return std::sqrt(sum_e2 / sum_x2);
  }
  /// Cosine similarity `Σxy / (‖x‖·‖y‖)` clamped to [−1, 1]; NaN when either tensor is all zeros.
  double cosine_similarity() const {
    if (sum_x2 == 0.0 || sum_y2 == 0.0) return std::numeric_limits<double>::quiet_NaN();
    return std::clamp(sum_xy / (std::sqrt(sum_x2) * std::sqrt(sum_y2)), -1.0, 1.0);
  }
  /// Mean squared error `Σ(x − y)² / count`.
  double mse() const { return sum_e2 / static_cast<double>(count); }
};

namespace detail {

inline quant_error to_quant_error(const error_sums& s, index_t count) {
  return {static_cast<std::int64_t>(count), s.x2, s.y2, s.xy, s.e2};
}

// Checked after the pass (a sum that is not finite is rare): names the first argument holding NaN or ±inf.
template <class T>
void check_finite_inputs(std::string_view function, std::span<const quant_error> results, const matrix_view<const T>& x,
                         const matrix_view<const T>* y) {
  const bool finite = std::all_of(results.begin(), results.end(), [](const quant_error& e) {
    return std::isfinite(e.sum_x2) && std::isfinite(e.sum_y2) && std::isfinite(e.sum_xy) && std::isfinite(e.sum_e2);
  });
  if (finite) return;
  if (const index_t bad = count_non_finite(x); bad > 0) {
    fail(function, "x", "contains " + std::to_string(bad) + " NaN or infinite values; the metrics need finite data");
  }
  if (y != nullptr) {
    if (const index_t bad = count_non_finite(*y); bad > 0) {
      fail(function, "y", "contains " + std::to_string(bad) + " NaN or infinite values; the metrics need finite data");
    }
  }
}

template <class T>
void check_error_inputs(std::string_view function, const matrix_view<const T>& x) {
  check_view(function, "x", x);
  if (x.empty()) fail(function, "x", "is empty (" + std::to_string(x.rows) + " x " + std::to_string(x.cols) + ")");
}

// Rows per block along the column axis.
inline constexpr index_t error_column_block = 64;

// The per-row error sums of x against row_y(r, buffer) (a pointer to row r of y), combined per channel.
template <class Policy, class T, class RowY>
void channel_errors(const Policy& policy, const matrix_view<const T>& x, channel_axis axis, std::span<quant_error> out,
                    RowY&& row_y) {
  const int threads = thread_count(policy);
  const std::size_t channels = out.size();
  std::vector<quant_error> totals(channels);
  if (axis == channel_axis::column) {
    const index_t blocks = (x.rows + error_column_block - 1) / error_column_block;
    std::vector<double> sums(static_cast<std::size_t>(blocks) * 4 * channels, 0.0);
    for_each_row(threads, blocks, [&](index_t b) {
      double* base = sums.data() + static_cast<std::size_t>(b) * 4 * channels;
      const error_column_sums block{base, base + channels, base + 2 * channels, base + 3 * channels};
      std::vector<T> buffer;
      for (index_t r = b * error_column_block; r < std::min(x.rows, (b + 1) * error_column_block); ++r) {
        scalar::error_columns(x.cols, x.row(r), row_y(r, buffer), block);
      }
    });
    const index_t rows_per_block = error_column_block;
    for (index_t b = 0; b < blocks; ++b) {
      const double* base = sums.data() + static_cast<std::size_t>(b) * 4 * channels;
      const index_t rows = std::min(x.rows - b * rows_per_block, rows_per_block);
      for (std::size_t c = 0; c < channels; ++c) {
        totals[c].merge(quant_error{static_cast<std::int64_t>(rows), base[c], base[channels + c],
                                    base[2 * channels + c], base[3 * channels + c]});
      }
    }
  } else {
    std::vector<quant_error> rows(static_cast<std::size_t>(x.rows));
    for_each_row(threads, x.rows, [&](index_t r) {
      std::vector<T> buffer;
      rows[static_cast<std::size_t>(r)] = to_quant_error(error_row(policy, x.cols, x.row(r), row_y(r, buffer)), x.cols);
    });
    for (index_t r = 0; r < x.rows; ++r) {
      totals[static_cast<std::size_t>(r % static_cast<index_t>(channels))].merge(rows[static_cast<std::size_t>(r)]);
    }
  }
  std::copy(totals.begin(), totals.end(), out.begin());
}

template <class T>
void check_error_channels(std::string_view function, const matrix_view<const T>& x, channel_axis axis,
                          std::size_t channels) {
  if (axis != channel_axis::row && axis != channel_axis::column) {
    fail(function, "axis", "is not a channel_axis value (" + std::to_string(static_cast<int>(axis)) + ")");
  }
  const auto n = static_cast<index_t>(channels);
  if (axis == channel_axis::column && n != x.cols) {
    fail(function, "out", "has " + std::to_string(n) + " entries but 'x' has " + std::to_string(x.cols) + " columns");
  }
  if (axis == channel_axis::row && (n == 0 || x.rows % n != 0)) {
    fail(function, "out",
         "has " + std::to_string(n) + " entries, which must be positive and divide the rows of 'x' (" +
             std::to_string(x.rows) + ")");
  }
}

// fake_quantize of row r into `buffer` (per-row parameters: uniform, or per column).
template <class Policy, class Params, class T>
const T* fake_quantized_row(const Policy& policy, const Params& params, const fake_quant_options& options,
                            const matrix_view<const T>& x, index_t r, std::vector<T>& buffer) {
  buffer.resize(static_cast<std::size_t>(x.cols));
  with_rounding(options, first_index(options, r, x.cols), [&](const auto& rounding) {
    fake_quantize_row(policy, params, rounding, x.cols, x.row(r), buffer.data(), false);
  });
  return buffer.data();
}

}  // namespace detail

/// Error sums of `x` against `y` (same shape), per tensor.
template <host_policy Policy, host_element T>
quant_error tensor_quant_error(const Policy& policy, matrix_view<const T> x,
                               matrix_view<const std::type_identity_t<T>> y) {
  detail::check_error_inputs("tensor_quant_error", x);
  detail::check_same_shape("tensor_quant_error", "y", y, "x", x);
  quant_error total;
  detail::channel_errors(policy, x, channel_axis::row, std::span<quant_error>(&total, 1),
                         [&](index_t r, std::vector<T>&) { return y.row(r); });
  detail::check_finite_inputs("tensor_quant_error", std::span<const quant_error>(&total, 1), x, &y);
  return total;
}

/// Error sums of `x` against `y` per channel: `out[c]` for channel c (`axis` as in quant.hpp: column c, or the rows
/// r with r % out.size() == c).
template <host_policy Policy, host_element T>
void channel_quant_error(const Policy& policy, matrix_view<const T> x, matrix_view<const std::type_identity_t<T>> y,
                         channel_axis axis, std::span<quant_error> out) {
  detail::check_error_inputs("channel_quant_error", x);
  detail::check_same_shape("channel_quant_error", "y", y, "x", x);
  detail::check_error_channels("channel_quant_error", x, axis, out.size());
  std::vector<quant_error> result(out.size());
  detail::channel_errors(policy, x, axis, std::span<quant_error>(result),
                         [&](index_t r, std::vector<T>&) { return y.row(r); });
  detail::check_finite_inputs("channel_quant_error", std::span<const quant_error>(result), x, &y);
  std::copy(result.begin(), result.end(), out.begin());
}

/// Error sums of `x` against `fake_quantize(x, params, options)`, per tensor, without storing the quantized tensor.
template <host_policy Policy, host_element T>
quant_error tensor_quant_error(const Policy& policy, matrix_view<const T> x, const quant_params& params,
                               const fake_quant_options& options = {}) {
  detail::check_error_inputs("tensor_quant_error", x);
  detail::check_params("tensor_quant_error", "params", params);
  detail::check_options("tensor_quant_error", options);
  const detail::uniform_params<T> p{detail::to_lanes<T>(params)};
  quant_error total;
  detail::channel_errors(
      policy, x, channel_axis::row, std::span<quant_error>(&total, 1),
      [&](index_t r, std::vector<T>& buffer) { return detail::fake_quantized_row(policy, p, options, x, r, buffer); });
  detail::check_finite_inputs<T>("tensor_quant_error", std::span<const quant_error>(&total, 1), x, nullptr);
  return total;
}

/// Error sums of `x` against its per-channel fake-quantized version: `out[c]` for channel c (`params.size() ==
/// out.size()`).
template <host_policy Policy, host_element T>
void channel_quant_error(const Policy& policy, matrix_view<const T> x, std::span<const quant_params> params,
                         channel_axis axis, std::span<quant_error> out, const fake_quant_options& options = {}) {
  detail::check_error_inputs("channel_quant_error", x);
  detail::check_channels("channel_quant_error", params, axis, x.rows, x.cols);
  detail::check_options("channel_quant_error", options);
  if (out.size() != params.size()) {
    detail::fail("channel_quant_error", "out",
                 "has " + std::to_string(out.size()) + " entries but 'params' has " + std::to_string(params.size()));
  }
  std::vector<quant_error> result(out.size());
  if (axis == channel_axis::column) {
    const detail::column_param_storage<T> storage(params);
    const detail::column_params<T> columns = storage.view();
    detail::channel_errors(policy, x, axis, std::span<quant_error>(result), [&](index_t r, std::vector<T>& buffer) {
      return detail::fake_quantized_row(policy, columns, options, x, r, buffer);
    });
  } else {
    std::vector<detail::uniform_params<T>> per_channel;
    for (const quant_params& p : params) per_channel.push_back({detail::to_lanes<T>(p)});
    detail::channel_errors(policy, x, axis, std::span<quant_error>(result), [&](index_t r, std::vector<T>& buffer) {
      return detail::fake_quantized_row(policy, per_channel[static_cast<std::size_t>(r) % per_channel.size()], options,
                                        x, r, buffer);
    });
  }
  detail::check_finite_inputs<T>("channel_quant_error", std::span<const quant_error>(result), x, nullptr);
  std::copy(result.begin(), result.end(), out.begin());
}

}  // namespace qsafe
