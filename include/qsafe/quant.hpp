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
///   passes no gradient at NaN. The same in every rounding mode and STE mask.
/// - Options (`fake_quant_options`, last argument, defaulting to the behaviour above): rounding half to even, half
///   away from zero or stochastic (seeded, counter-based: reproducible for any backend and thread count), and the
///   backward's STE mask (rounded code, float range, unclipped). `make_qparams` takes `qparams_options`: narrow
///   range, and putting 0 on the grid by widening the range instead of rounding the zero point.
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

/// Rounding of `x·inv_s` to an integer code (docs/quantization.md, "Fake-quant options").
/// - `half_to_even`: `nearbyint` in the default floating-point environment (PyTorch's fake-quantize; the default).
/// - `half_away_from_zero`: `std::round` (C's `round`, NumPy's `np.round` is half to even; TFLite's reference uses
///   this one).
/// - `stochastic`: `floor(v) + [u < v − floor(v)]`, `u` in [0, 1) from a counter-based hash of
///   (`seed`, element index), so `E[code] = v` up to the resolution of `u` (2^−24 for float, 2^−32 for double).
///   The element index is `index_offset + r·cols + c` of the view (row-major, whatever the row stride): the result
///   does not depend on the backend, the ISA or the thread count, and a tensor processed in slices with the
///   slices' offsets equals the tensor processed whole.
enum class rounding_mode { half_to_even, half_away_from_zero, stochastic };

/// Where the straight-through backward passes the gradient (`dx = dy` there, 0 elsewhere; NaN `x`: always 0).
/// - `rounded_code` (default, PyTorch's): `quant_min <= z + round(x·inv_s) <= quant_max`, the code before the clamp.
/// - `float_range`: `(quant_min − z)·s <= x <= (quant_max − z)·s` (in the element type): the gradient of
///   `clamp(x, lo, hi)`, as in PACT / LSQ; it blocks the half step past each end that `rounded_code` passes.
/// - `unclipped`: everywhere (the identity), for losses that handle clipping themselves.
enum class ste_mask { rounded_code, float_range, unclipped };

/// Options of fake_quantize, fake_quantize_backward and quantize. The defaults are the behaviour of the calls
/// without options (PyTorch's). The backward must be given the same options as the forward: with stochastic
/// rounding the `rounded_code` mask uses the same random draws (same seed, offset and view shape).
struct fake_quant_options {
  rounding_mode rounding = rounding_mode::half_to_even;
  std::uint64_t seed = 0;          ///< stochastic rounding's stream
  std::uint64_t index_offset = 0;  ///< index of element (0, 0) in the stream
  ste_mask mask = ste_mask::rounded_code;
};

/// How an asymmetric range puts 0 exactly on the grid (symmetric ranges have `z = 0` already).
/// - `round_zero_point` (default, PyTorch's): `s = (hi − lo)/n`, `z = round(−lo/s)`: the grid is the range shifted by
///   up to `s/2`, so one end moves *inward* by up to `s/2`.
/// - `widen_range`: keep one end, move the other *outward* just enough that 0 falls on the grid: with
///   `s0 = (hi − lo)/n` and `s(z) = max(−lo/z, hi/(n − z))` (the smallest scale with `z` steps below 0), try
///   `z = floor(−lo/s0)` (keeps lo, hi moves out) and `z = ceil(−lo/s0)` (keeps hi), take the smaller scale. The grid's
///   ends then contain `[lo, hi]` exactly in `T` (nothing observed is clipped) and `s <= s0·n/(n − 2)` (8 bits: +0.8%
///   at most).
enum class zero_alignment { round_zero_point, widen_range };

/// Options of make_qparams; the defaults give the parameters of the call without options.
/// `narrow_range` drops one code so that `2^b − 1` codes remain (Brevitas's convention): signed codes lose the most
/// negative one (`[−127, 127]` for 8 bits: a symmetric grid), unsigned codes the top one (`[0, 2^b − 2]`).
struct qparams_options {
  bool narrow_range = false;
  zero_alignment alignment = zero_alignment::round_zero_point;
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

// What makes `p` unusable (a scale not finite and > 0, an empty code range or one wider than 16 bits, a zero point
// outside it), or an empty string when `p` is valid: the message is built only on failure, so checking 65,536
// channels allocates nothing.
inline std::string params_defect(const quant_params& p) {
  if (!(p.scale > 0.0) || !std::isfinite(p.scale)) {
    return "has scale " + std::to_string(p.scale) + "; it must be finite and > 0";
  }
  if (p.quant_min >= p.quant_max || static_cast<std::int64_t>(p.quant_max) - p.quant_min > 65535) {
    return "has code range [" + std::to_string(p.quant_min) + ", " + std::to_string(p.quant_max) +
           "]; it must be non-empty and at most 16 bits wide";
  }
  if (p.zero_point < p.quant_min || p.zero_point > p.quant_max) {
    return "has zero_point " + std::to_string(p.zero_point) + " outside its code range [" +
           std::to_string(p.quant_min) + ", " + std::to_string(p.quant_max) + "]";
  }
  return {};
}

inline void check_params(std::string_view function, std::string_view argument, const quant_params& p) {
  if (const std::string defect = params_defect(p); !defect.empty()) fail(function, argument, defect);
}

// check_params for each entry of `list`, named `argument[i]`; the name is built only for the entry that fails.
inline void check_each_params(std::string_view function, std::string_view argument,
                              std::span<const quant_params> list) {
  for (std::size_t i = 0; i < list.size(); ++i) {
    if (const std::string defect = params_defect(list[i]); !defect.empty()) {
      fail(function, std::string(argument) + "[" + std::to_string(i) + "]", defect);
    }
  }
}

inline void check_options(std::string_view function, const fake_quant_options& options) {
  const auto rounding = static_cast<int>(options.rounding);
  if (rounding < 0 || rounding > static_cast<int>(rounding_mode::stochastic)) {
    fail(function, "options", "has rounding " + std::to_string(rounding) + ", not a rounding_mode value");
  }
  const auto mask = static_cast<int>(options.mask);
  if (mask < 0 || mask > static_cast<int>(ste_mask::unclipped)) {
    fail(function, "options", "has mask " + std::to_string(mask) + ", not an ste_mask value");
  }
}

// Calls f with the rounding tag of `options` for a row whose element 0 has stream index `first`.
template <class F>
decltype(auto) with_rounding(const fake_quant_options& options, std::uint64_t first, F&& f) {
  switch (options.rounding) {
    case rounding_mode::half_away_from_zero:
      return f(round_half_away_tag{});
    case rounding_mode::stochastic:
      return f(round_stochastic_tag{options.seed, first});
    case rounding_mode::half_to_even:
      break;
  }
  return f(round_half_even_tag{});
}

// Calls f(rounding, mask) for the backward; the rounding matters only for the mask on the rounded code.
template <class F>
void with_rounding_and_mask(const fake_quant_options& options, std::uint64_t first, F&& f) {
  switch (options.mask) {
    case ste_mask::float_range:
      return f(round_half_even_tag{}, mask_range_tag{});
    case ste_mask::unclipped:
      return f(round_half_even_tag{}, mask_none_tag{});
    case ste_mask::rounded_code:
      break;
  }
  with_rounding(options, first, [&](const auto& rounding) { f(rounding, mask_code_tag{}); });
}

// The stream index of element (r, 0) of a view with `cols` columns.
inline std::uint64_t first_index(const fake_quant_options& options, index_t r, index_t cols) {
  return options.index_offset + static_cast<std::uint64_t>(r) * static_cast<std::uint64_t>(cols);
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

// The axis and the number of channels (`params`' entries) against the matrix's shape.
inline void check_channel_count(std::string_view function, index_t channels, channel_axis axis, index_t rows,
                                index_t cols) {
  if (axis != channel_axis::row && axis != channel_axis::column) {
    fail(function, "axis", "is not a channel_axis value (" + std::to_string(static_cast<int>(axis)) + ")");
  }
  if (axis == channel_axis::column && channels != cols) {
    fail(function, "params",
         "has " + std::to_string(channels) + " entries but the channel axis (columns) has " + std::to_string(cols));
  }
  if (axis == channel_axis::row && (channels == 0 || rows % channels != 0)) {
    fail(function, "params",
         "has " + std::to_string(channels) + " entries, which must be positive and divide the rows (" +
             std::to_string(rows) + ")");
  }
}

inline void check_channels(std::string_view function, std::span<const quant_params> params, channel_axis axis,
                           index_t rows, index_t cols) {
  check_channel_count(function, static_cast<index_t>(params.size()), axis, rows, cols);
  check_each_params(function, "params", params);
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
/// `options` (see qparams_options): narrow range replaces `2^b − 1` by `2^b − 2` for unsigned codes and drops code
/// `−2^(b−1)` for signed ones; `zero_alignment::widen_range` replaces the asymmetric rounding of `z` by widening.
/// Throws `std::invalid_argument` for bits outside [2, 16], an unknown mode or alignment, a non-finite or inverted
/// range, or an asymmetric range whose width overflows `T`.
template <host_element T>
quant_params make_qparams(value_range range, int bits, quant_mode mode, const qparams_options& options = {}) {
  detail::check_bits("make_qparams", bits);
  detail::check_mode("make_qparams", mode);
  if (options.alignment != zero_alignment::round_zero_point && options.alignment != zero_alignment::widen_range) {
    detail::fail(
        "make_qparams", "options",
        "has alignment " + std::to_string(static_cast<int>(options.alignment)) + ", not a zero_alignment value");
  }
  if (!std::isfinite(range.lo) || !std::isfinite(range.hi) || !(range.lo <= range.hi)) {
    detail::fail("make_qparams", "range",
                 "[" + std::to_string(range.lo) + ", " + std::to_string(range.hi) + "] must be finite with lo <= hi");
  }
  const T eps = static_cast<T>(FLT_EPSILON);
  const T lo = static_cast<T>(range.lo), hi = static_cast<T>(range.hi);
  const int narrow = options.narrow_range ? 1 : 0;
  quant_params p;
  if (mode == quant_mode::asymmetric || lo >= T(0)) {
    p.quant_min = 0;
    p.quant_max = (1 << bits) - 1 - narrow;
  } else {
    p.quant_min = -(1 << (bits - 1)) + narrow;
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
    if (options.alignment == zero_alignment::widen_range) {
      // z steps from quant_min to 0: the smallest scale with z steps below 0 and levels − z above is
      // max(−lo/z, hi/(levels − z)); try z = floor and ceil of −lo/s, keep the smaller scale.
      constexpr T inf = std::numeric_limits<T>::infinity();
      const auto scale_for = [&](T z) {
        const T below = z >= T(1) ? -lo0 / z : (lo0 == T(0) ? T(0) : inf);
        const T above = levels - z >= T(1) ? hi0 / (levels - z) : (hi0 == T(0) ? T(0) : inf);
        return std::max(below, above);
      };
      const T steps = -lo0 / s;
      const T z_floor = std::clamp(std::floor(steps), T(0), levels),
              z_ceil = std::clamp(std::ceil(steps), T(0), levels);
      const bool keep_lo = scale_for(z_floor) <= scale_for(z_ceil);
      const T z = keep_lo ? z_floor : z_ceil;
      T scale = std::max(scale_for(z), eps);
      // Rounding of the division may leave an end an ulp inside [lo, hi]: step the scale up until both ends hold.
      for (int i = 0; i < 64 && (-z * scale > lo0 || (levels - z) * scale < hi0); ++i) {
        scale = std::nextafter(scale, inf);
      }
      p.scale = static_cast<double>(scale);
      p.zero_point = p.quant_min + static_cast<std::int32_t>(z);
      return p;
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

/// Fake-quantize per tensor: `y = (clip(z + round(x·inv_s), quant_min, quant_max) − z)·s`, `round` as
/// `options.rounding` (default half to even: `nearbyint`).
template <host_policy Policy, host_element T>
void fake_quantize(const Policy& policy, matrix_view<const std::type_identity_t<T>> x, const quant_params& params,
                   matrix_view<T> y, const fake_quant_options& options = {}) {
  detail::check_view("fake_quantize", "x", x);
  detail::check_same_shape("fake_quantize", "y", y, "x", x);
  detail::check_params("fake_quantize", "params", params);
  detail::check_options("fake_quantize", options);
  const bool streaming = detail::streaming_output(policy, static_cast<std::size_t>(y.size()) * sizeof(T));
  const detail::uniform_params<T> p{detail::to_lanes<T>(params)};
  detail::for_each_row(detail::thread_count(policy), x.rows, [&](index_t r) {
    detail::with_rounding(options, detail::first_index(options, r, x.cols), [&](const auto& rounding) {
      detail::fake_quantize_row(policy, p, rounding, x.cols, x.row(r), y.row(r), streaming);
    });
  });
}

/// Fake-quantize per channel (see the contract above for `axis`).
template <host_policy Policy, host_element T>
void fake_quantize(const Policy& policy, matrix_view<const std::type_identity_t<T>> x,
                   std::span<const quant_params> params, channel_axis axis, matrix_view<T> y,
                   const fake_quant_options& options = {}) {
  detail::check_view("fake_quantize", "x", x);
  detail::check_same_shape("fake_quantize", "y", y, "x", x);
  detail::check_channels("fake_quantize", params, axis, x.rows, x.cols);
  detail::check_options("fake_quantize", options);
  const bool streaming = detail::streaming_output(policy, static_cast<std::size_t>(y.size()) * sizeof(T));
  detail::for_each_channel_row<T>(detail::thread_count(policy), x.rows, params, axis, [&](index_t r, const auto& p) {
    detail::with_rounding(options, detail::first_index(options, r, x.cols), [&](const auto& rounding) {
      detail::fake_quantize_row(policy, p, rounding, x.cols, x.row(r), y.row(r), streaming);
    });
  });
}

/// Straight-through backward of fake_quantize: `dx = dy` where `options.mask` passes the gradient, else 0. The
/// default (PyTorch's convention): where the unclamped code `z + round(x·inv_s)` lies in `[quant_min, quant_max]`
/// (inclusive), with the forward's rounding (pass the forward's options).
template <host_policy Policy, host_element T>
void fake_quantize_backward(const Policy& policy, matrix_view<const std::type_identity_t<T>> x,
                            const quant_params& params, matrix_view<const std::type_identity_t<T>> dy,
                            matrix_view<T> dx, const fake_quant_options& options = {}) {
  detail::check_view("fake_quantize_backward", "x", x);
  detail::check_same_shape("fake_quantize_backward", "dy", dy, "x", x);
  detail::check_same_shape("fake_quantize_backward", "dx", dx, "x", x);
  detail::check_params("fake_quantize_backward", "params", params);
  detail::check_options("fake_quantize_backward", options);
  const bool streaming = detail::streaming_output(policy, static_cast<std::size_t>(dx.size()) * sizeof(T));
  const detail::uniform_params<T> p{detail::to_lanes<T>(params)};
  detail::for_each_row(detail::thread_count(policy), x.rows, [&](index_t r) {
    detail::with_rounding_and_mask(options, detail::first_index(options, r, x.cols),
                                   [&](const auto& rounding, const auto& mask) {
                                     detail::fake_quantize_backward_row(policy, p, rounding, mask, x.cols, x.row(r),
                                                                        dy.row(r), dx.row(r), streaming);
                                   });
  });
}

/// Straight-through backward per channel.
template <host_policy Policy, host_element T>
void fake_quantize_backward(const Policy& policy, matrix_view<const std::type_identity_t<T>> x,
                            std::span<const quant_params> params, channel_axis axis,
                            matrix_view<const std::type_identity_t<T>> dy, matrix_view<T> dx,
                            const fake_quant_options& options = {}) {
  detail::check_view("fake_quantize_backward", "x", x);
  detail::check_same_shape("fake_quantize_backward", "dy", dy, "x", x);
  detail::check_same_shape("fake_quantize_backward", "dx", dx, "x", x);
  detail::check_channels("fake_quantize_backward", params, axis, x.rows, x.cols);
  detail::check_options("fake_quantize_backward", options);
  const bool streaming = detail::streaming_output(policy, static_cast<std::size_t>(dx.size()) * sizeof(T));
  detail::for_each_channel_row<T>(detail::thread_count(policy), x.rows, params, axis, [&](index_t r, const auto& p) {
    detail::with_rounding_and_mask(options, detail::first_index(options, r, x.cols),
                                   [&](const auto& rounding, const auto& mask) {
                                     detail::fake_quantize_backward_row(policy, p, rounding, mask, x.cols, x.row(r),
                                                                        dy.row(r), dx.row(r), streaming);
                                   });
  });
}

/// Quantize to integer codes `q = clip(z + round(x·inv_s), quant_min, quant_max)` (`round` as `options.rounding`;
/// `options.mask` is not used); the code range must fit `Code` (e.g. `code_t<8, false>` for asymmetric 8-bit).
/// NaN gives the zero point.
template <host_policy Policy, host_element T, std::integral Code>
void quantize(const Policy& policy, matrix_view<const T> x, const quant_params& params, matrix_view<Code> q,
              const fake_quant_options& options = {}) {
  detail::check_view("quantize", "x", x);
  detail::check_same_shape("quantize", "q", q, "x", x);
  detail::check_params("quantize", "params", params);
  detail::check_code_type<Code>("quantize", "params", params);
  detail::check_options("quantize", options);
  const detail::uniform_params<T> p{detail::to_lanes<T>(params)};
  detail::for_each_row(detail::thread_count(policy), x.rows, [&](index_t r) {
    detail::with_rounding(options, detail::first_index(options, r, x.cols), [&](const auto& rounding) {
      detail::quantize_row(policy, p, rounding, x.cols, x.row(r), q.row(r));
    });
  });
}

/// Quantize per channel.
template <host_policy Policy, host_element T, std::integral Code>
void quantize(const Policy& policy, matrix_view<const T> x, std::span<const quant_params> params, channel_axis axis,
              matrix_view<Code> q, const fake_quant_options& options = {}) {
  detail::check_view("quantize", "x", x);
  detail::check_same_shape("quantize", "q", q, "x", x);
  detail::check_channels("quantize", params, axis, x.rows, x.cols);
  for (const quant_params& p : params) detail::check_code_type<Code>("quantize", "params", p);
  detail::check_options("quantize", options);
  detail::for_each_channel_row<T>(detail::thread_count(policy), x.rows, params, axis, [&](index_t r, const auto& p) {
    detail::with_rounding(options, detail::first_index(options, r, x.cols), [&](const auto& rounding) {
      detail::quantize_row(policy, p, rounding, x.cols, x.row(r), q.row(r));
    });
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
