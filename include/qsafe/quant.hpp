#pragma once
/// \file
/// Uniform affine quantization on the host (REFERENCE §2, docs/quantization.md): quantization parameters from
/// a range, quantize to integer codes, dequantize, fake-quantize (quantize-dequantize in the input's float
/// type) and its straight-through backward; per tensor, or per channel along rows or columns.
///
/// \code
///   const qsafe::quant_params p = qsafe::make_qparams<float>({lo, hi}, 8, qsafe::quant_mode::asymmetric);
///   qsafe::fake_quantize(qsafe::simd, x, p, y);
///   qsafe::fake_quantize_backward(qsafe::simd, x, p, dy, dx);   // dx = dy inside the code range, else 0
/// \endcode
///
/// Contract shared by every function here:
/// - Element types float and double. Arithmetic is in the element type, exactly as PyTorch's fake-quantize kernel:
///   `v = z + nearbyint(x·inv_s)` with `inv_s = 1/s` computed once in the element type, round half to even
///   (the default floating-point environment), clamp to `[quant_min, quant_max]` in the element type *before*
///   any integer conversion (±inf and huge `x/s` clamp to the end codes), `x̂ = (q − z)·s`.
/// - `cpu` and `simd` give bit-identical results (the same operations, each correctly rounded), for any thread
///   count. Error bound: `x̂` is `(q − z)·s` rounded once; inside the range `|x − x̂| <= s/2` up to that
///   rounding.
/// - NaN: fake_quantize keeps NaN; quantize maps NaN to the zero point (an integer has no NaN); the backward
///   passes no gradient at NaN.
/// - Per channel: `channel_axis::column` gives column `j` the parameters `params[j]` (params.size() == cols);
///   `channel_axis::row` gives row `r` the parameters `params[r % params.size()]` (params.size() divides
///   rows). An N-d row-major tensor with channel axis `a` is viewed as rows = d0·…·da, cols = d(a+1)·…, axis
///   row (or, when `a` is the last axis, rows = d0·…·d(a−1), cols = da, axis column).
/// - Aliasing: an output may alias an input exactly (same data and stride); `dx` may alias `x` or `dy`.
/// - Errors: bad shapes, strides, null pointers, parameters (scale not finite and > 0, zero point outside the codes,
///   code range wider than 16 bits or not fitting the code type), bit widths outside [2, 16], unknown channel
///   axis throw `std::invalid_argument` naming the argument, before any output is written.

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "qsafe/detail/check.hpp"
#include "qsafe/detail/parallel.hpp"
#include "qsafe/detail/scalar/quant.hpp"
#include "qsafe/detail/simd/quant.hpp"
#include "qsafe/execution.hpp"
#include "qsafe/matrix_view.hpp"

namespace qsafe {

/// Asymmetric: unsigned codes `[0, 2^b − 1]`, the range widened to contain 0. Symmetric: signed codes
/// `[−2^(b−1), 2^(b−1) − 1]` with `z = 0`, or unsigned codes `[0, 2^b − 1]` with `z = 0` when the range has
/// no negative value (the papers' code does this for weights).
enum class quant_mode { asymmetric, symmetric };

/// Which index of a row-major matrix is the channel (see the contract above).
enum class channel_axis { row, column };

/// A closed range `[lo, hi]` of real values.
struct value_range {
  double lo = 0.0;
  double hi = 0.0;
};

/// Parameters of one uniform affine quantizer: `q = clip(round(x/s) + z, quant_min, quant_max)`, `x̂ = (q −
/// z)·s`. `scale` holds the element type's value exactly (computed in that type by `make_qparams<T>`).
struct quant_params {
  double scale = 1.0;
  std::int32_t zero_point = 0;
  std::int32_t quant_min = 0;
  std::int32_t quant_max = 255;

  friend bool operator==(const quant_params&, const quant_params&) = default;
};

/// The smallest integer type that holds the codes of `Bits`-bit quantization, signed or not.
template <int Bits, bool Signed>
requires(Bits >= 2 &&
         Bits <= 16) using code_t = std::conditional_t<Bits <= 8, std::conditional_t<Signed, std::int8_t, std::uint8_t>,
                                                       std::conditional_t<Signed, std::int16_t, std::uint16_t>>;

namespace detail {

inline void check_bits(std::string_view function, int bits) {
  if (bits < 2 || bits > 16) fail(function, "bits", "must be in [2, 16], got " + std::to_string(bits));
}

inline void check_mode(std::string_view function, quant_mode mode) {
  if (mode != quant_mode::asymmetric && mode != quant_mode::symmetric) {
    fail(function, "mode", "is not a quant_mode value (" + std::to_string(static_cast<int>(mode)) + ")");
  }
}

inline void check_params(std::string_view function, std::string_view argument, const quant_params& p) {
  if (!(p.scale > 0.0) || !std::isfinite(p.scale)) {
    fail(function, argument, "has scale " + std::to_string(p.scale) + "; it must be finite and > 0");
  }
  if (p.quant_min >= p.quant_max || static_cast<std::int64_t>(p.quant_max) - p.quant_min > 65535) {
    fail(function, argument,
         "has code range [" + std::to_string(p.quant_min) + ", " + std::to_string(p.quant_max) +
             "]; it must be non-empty and at most 16 bits wide");
  }
  if (p.zero_point < p.quant_min || p.zero_point > p.quant_max) {
    fail(function, argument,
         "has zero_point " + std::to_string(p.zero_point) + " outside its code range [" + std::to_string(p.quant_min) +
             ", " + std::to_string(p.quant_max) + "]");
  }
}

template <class Code>
void check_code_type(std::string_view function, std::string_view argument, const quant_params& p) {
  if (p.quant_min < std::numeric_limits<Code>::min() || p.quant_max > std::numeric_limits<Code>::max()) {
    fail(function, argument,
         "has code range [" + std::to_string(p.quant_min) + ", " + std::to_string(p.quant_max) +
             "] that does not fit the output's integer type");
  }
}

template <class T>
lane_params<T> to_lanes(const quant_params& p) {
  const T scale = static_cast<T>(p.scale);
  return {scale, T(1) / scale, static_cast<T>(p.zero_point), static_cast<T>(p.quant_min), static_cast<T>(p.quant_max)};
}

// Per-column parameters as arrays in the element type (built once per call, outside the kernels).
template <class T>
struct column_param_storage {
  std::vector<T> scale, inv_scale, zero_point, quant_min, quant_max;
  explicit column_param_storage(std::span<const quant_params> params) {
    for (const quant_params& p : params) {
      const lane_params<T> l = to_lanes<T>(p);
      scale.push_back(l.scale);
      inv_scale.push_back(l.inv_scale);
      zero_point.push_back(l.zero_point);
      quant_min.push_back(l.quant_min);
      quant_max.push_back(l.quant_max);
    }
  }
  column_params<T> view() const {
    return {scale.data(), inv_scale.data(), zero_point.data(), quant_min.data(), quant_max.data()};
  }
};

inline void check_channels(std::string_view function, std::span<const quant_params> params, channel_axis axis,
                           index_t rows, index_t cols) {
  if (axis != channel_axis::row && axis != channel_axis::column) {
    fail(function, "axis", "is not a channel_axis value (" + std::to_string(static_cast<int>(axis)) + ")");
  }
  const auto channels = static_cast<index_t>(params.size());
  if (axis == channel_axis::column && channels != cols) {
    fail(function, "params",
         "has " + std::to_string(channels) + " entries but the channel axis (columns) has " + std::to_string(cols));
  }
  if (axis == channel_axis::row && (channels == 0 || rows % channels != 0)) {
    fail(function, "params",
         "has " + std::to_string(channels) + " entries, which must be positive and divide the rows (" +
             std::to_string(rows) + ")");
  }
  for (std::size_t c = 0; c < params.size(); ++c) {
    check_params(function, "params[" + std::to_string(c) + "]", params[c]);
  }
}

// Runs row_op(row, params) with each row's parameters: uniform_params per row along the row axis,
// column_params along the column axis.
template <class T, class RowOp>
void for_each_channel_row(int threads, index_t rows, std::span<const quant_params> params, channel_axis axis,
                          RowOp&& row_op) {
  if (axis == channel_axis::column) {
    const column_param_storage<T> storage(params);
    const column_params<T> columns = storage.view();
    for_each_row(threads, rows, [&](index_t r) { row_op(r, columns); });
  } else {
    std::vector<uniform_params<T>> per_row;
    for (const quant_params& p : params) per_row.push_back({to_lanes<T>(p)});
    const auto channels = static_cast<index_t>(per_row.size());
    for_each_row(threads, rows, [&](index_t r) { row_op(r, per_row[static_cast<std::size_t>(r % channels)]); });
  }
}

}  // namespace detail

/// Quantization parameters from a range (REFERENCE §2), computed in the element type `T` as PyTorch's
/// observers do (so that the same range gives the same scale and zero point):
/// - asymmetric: `lo = min(lo, 0)`, `hi = max(hi, 0)`, `s = max((hi − lo)/(2^b − 1), FLT_EPSILON)`,
///   `z = clip(−round(lo/s), 0, 2^b − 1)` (`round` half to even, `lo/s` a division);
/// - symmetric: `s = max(max(|lo|, |hi|)/(2^(b−1) − 1), FLT_EPSILON)`, signed codes, `z = 0`; if `lo >= 0`,
///   `s = max(hi/(2^b − 1), FLT_EPSILON)` with unsigned codes.
/// A degenerate range (`lo == hi`, e.g. all zeros) gives `s = FLT_EPSILON`, never 0 or NaN.
/// Throws `std::invalid_argument` for bits outside [2, 16], an unknown mode, a non-finite or inverted range, or an
/// asymmetric range whose width overflows `T`.
template <host_element T>
quant_params make_qparams(value_range range, int bits, quant_mode mode) {
  detail::check_bits("make_qparams", bits);
  detail::check_mode("make_qparams", mode);
  if (!std::isfinite(range.lo) || !std::isfinite(range.hi) || !(range.lo <= range.hi)) {
    detail::fail("make_qparams", "range",
                 "[" + std::to_string(range.lo) + ", " + std::to_string(range.hi) + "] must be finite with lo <= hi");
  }
  const T eps = static_cast<T>(FLT_EPSILON);
  const T lo = static_cast<T>(range.lo), hi = static_cast<T>(range.hi);
  quant_params p;
  if (mode == quant_mode::asymmetric || lo >= T(0)) {
    p.quant_min = 0;
    p.quant_max = (1 << bits) - 1;
  } else {
    p.quant_min = -(1 << (bits - 1));
    p.quant_max = (1 << (bits - 1)) - 1;
  }
  const T levels = static_cast<T>(mode == quant_mode::asymmetric ? p.quant_max - p.quant_min : p.quant_max);
  if (mode == quant_mode::asymmetric) {
    const T lo0 = std::min(lo, T(0)), hi0 = std::max(hi, T(0));
    const T s = std::max((hi0 - lo0) / levels, eps);
    if (!std::isfinite(s)) {
      detail::fail("make_qparams", "range",
                   "[" + std::to_string(range.lo) + ", " + std::to_string(range.hi) +
                       "] is too wide for the element type (hi - lo overflows)");
    }
    const T z = static_cast<T>(p.quant_min) - std::nearbyint(lo0 / s);
    p.scale = static_cast<double>(s);
    p.zero_point = static_cast<std::int32_t>(std::clamp(z, static_cast<T>(p.quant_min), static_cast<T>(p.quant_max)));
  } else {
    p.scale = static_cast<double>(std::max(std::max(std::fabs(lo), std::fabs(hi)) / levels, eps));
    p.zero_point = 0;
  }
  return p;
}

/// Fake-quantize per tensor: `y = (clip(z + nearbyint(x·inv_s), quant_min, quant_max) − z)·s`.
template <host_policy Policy, host_element T>
void fake_quantize(const Policy& policy, matrix_view<const std::type_identity_t<T>> x, const quant_params& params,
                   matrix_view<T> y) {
  detail::check_view("fake_quantize", "x", x);
  detail::check_same_shape("fake_quantize", "y", y, "x", x);
  detail::check_params("fake_quantize", "params", params);
  const bool streaming = detail::streaming_output(policy, static_cast<std::size_t>(y.size()) * sizeof(T));
  const detail::uniform_params<T> p{detail::to_lanes<T>(params)};
  detail::for_each_row(detail::thread_count(policy), x.rows,
                       [&](index_t r) { detail::fake_quantize_row(policy, p, x.cols, x.row(r), y.row(r), streaming); });
}

/// Fake-quantize per channel (see the contract above for `axis`).
template <host_policy Policy, host_element T>
void fake_quantize(const Policy& policy, matrix_view<const std::type_identity_t<T>> x,
                   std::span<const quant_params> params, channel_axis axis, matrix_view<T> y) {
  detail::check_view("fake_quantize", "x", x);
  detail::check_same_shape("fake_quantize", "y", y, "x", x);
  detail::check_channels("fake_quantize", params, axis, x.rows, x.cols);
  const bool streaming = detail::streaming_output(policy, static_cast<std::size_t>(y.size()) * sizeof(T));
  detail::for_each_channel_row<T>(detail::thread_count(policy), x.rows, params, axis, [&](index_t r, const auto& p) {
    detail::fake_quantize_row(policy, p, x.cols, x.row(r), y.row(r), streaming);
  });
}

/// Straight-through backward of fake_quantize (PyTorch's convention): `dx = dy` where the unclamped code
/// `z + nearbyint(x·inv_s)` lies in `[quant_min, quant_max]` (inclusive), else 0.
template <host_policy Policy, host_element T>
void fake_quantize_backward(const Policy& policy, matrix_view<const std::type_identity_t<T>> x,
                            const quant_params& params, matrix_view<const std::type_identity_t<T>> dy,
                            matrix_view<T> dx) {
  detail::check_view("fake_quantize_backward", "x", x);
  detail::check_same_shape("fake_quantize_backward", "dy", dy, "x", x);
  detail::check_same_shape("fake_quantize_backward", "dx", dx, "x", x);
  detail::check_params("fake_quantize_backward", "params", params);
  const bool streaming = detail::streaming_output(policy, static_cast<std::size_t>(dx.size()) * sizeof(T));
  const detail::uniform_params<T> p{detail::to_lanes<T>(params)};
  detail::for_each_row(detail::thread_count(policy), x.rows, [&](index_t r) {
    detail::fake_quantize_backward_row(policy, p, x.cols, x.row(r), dy.row(r), dx.row(r), streaming);
  });
}

/// Straight-through backward per channel.
template <host_policy Policy, host_element T>
void fake_quantize_backward(const Policy& policy, matrix_view<const std::type_identity_t<T>> x,
                            std::span<const quant_params> params, channel_axis axis,
                            matrix_view<const std::type_identity_t<T>> dy, matrix_view<T> dx) {
  detail::check_view("fake_quantize_backward", "x", x);
  detail::check_same_shape("fake_quantize_backward", "dy", dy, "x", x);
  detail::check_same_shape("fake_quantize_backward", "dx", dx, "x", x);
  detail::check_channels("fake_quantize_backward", params, axis, x.rows, x.cols);
  const bool streaming = detail::streaming_output(policy, static_cast<std::size_t>(dx.size()) * sizeof(T));
  detail::for_each_channel_row<T>(detail::thread_count(policy), x.rows, params, axis, [&](index_t r, const auto& p) {
    detail::fake_quantize_backward_row(policy, p, x.cols, x.row(r), dy.row(r), dx.row(r), streaming);
  });
}

/// Quantize to integer codes `q = clip(z + nearbyint(x·inv_s), quant_min, quant_max)`; the code range must
/// fit `Code` (e.g. `code_t<8, false>` for asymmetric 8-bit). NaN gives the zero point.
template <host_policy Policy, host_element T, std::integral Code>
void quantize(const Policy& policy, matrix_view<const T> x, const quant_params& params, matrix_view<Code> q) {
  detail::check_view("quantize", "x", x);
  detail::check_same_shape("quantize", "q", q, "x", x);
  detail::check_params("quantize", "params", params);
  detail::check_code_type<Code>("quantize", "params", params);
  const detail::uniform_params<T> p{detail::to_lanes<T>(params)};
  detail::for_each_row(detail::thread_count(policy), x.rows,
                       [&](index_t r) { detail::quantize_row(policy, p, x.cols, x.row(r), q.row(r)); });
}

/// Quantize per channel.
template <host_policy Policy, host_element T, std::integral Code>
void quantize(const Policy& policy, matrix_view<const T> x, std::span<const quant_params> params, channel_axis axis,
              matrix_view<Code> q) {
  detail::check_view("quantize", "x", x);
  detail::check_same_shape("quantize", "q", q, "x", x);
  detail::check_channels("quantize", params, axis, x.rows, x.cols);
  for (const quant_params& p : params) detail::check_code_type<Code>("quantize", "params", p);
  detail::for_each_channel_row<T>(detail::thread_count(policy), x.rows, params, axis, [&](index_t r, const auto& p) {
    detail::quantize_row(policy, p, x.cols, x.row(r), q.row(r));
  });
}

/// Dequantize integer codes: `y = (q − z)·s` in the element type.
template <host_policy Policy, std::integral Code, host_element T>
void dequantize(const Policy& policy, matrix_view<const Code> q, const quant_params& params, matrix_view<T> y) {
  detail::check_view("dequantize", "q", q);
  detail::check_same_shape("dequantize", "y", y, "q", q);
  detail::check_params("dequantize", "params", params);
  const detail::uniform_params<T> p{detail::to_lanes<T>(params)};
  detail::for_each_row(detail::thread_count(policy), q.rows,
                       [&](index_t r) { detail::dequantize_row(policy, p, q.cols, q.row(r), y.row(r)); });
}

/// Dequantize per channel.
template <host_policy Policy, std::integral Code, host_element T>
void dequantize(const Policy& policy, matrix_view<const Code> q, std::span<const quant_params> params,
                channel_axis axis, matrix_view<T> y) {
  detail::check_view("dequantize", "q", q);
  detail::check_same_shape("dequantize", "y", y, "q", q);
  detail::check_channels("dequantize", params, axis, q.rows, q.cols);
  detail::for_each_channel_row<T>(detail::thread_count(policy), q.rows, params, axis, [&](index_t r, const auto& p) {
    detail::dequantize_row(policy, p, q.cols, q.row(r), y.row(r));
  });
}

}  // namespace qsafe
