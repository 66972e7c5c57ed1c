#pragma once
/// \file
/// Learnable fake-quant (LSQ, Esser et al. 2020; LSQ+, Bhalgat et al. 2020) on the host: the fake-quantizer of
/// qsafe/quant.hpp with a learnable scale and zero point, and its backward giving dx, d scale and d zero point
/// (docs/quantization.md, "Learnable fake-quant").
///
/// \code
///   qsafe::learnable_qparams p{0.05, 128.0, 0, 255};         // scale, zero point (a float), codes
///   qsafe::lsq_fake_quantize(qsafe::simd, x, p, y);
///   const qsafe::lsq_gradients g = qsafe::lsq_fake_quantize_backward(qsafe::simd, x, p, dy, dx,
///                                                                    {.gradient_scale = true});
///   p.scale -= lr * g.scale;  p.zero_point -= lr * g.zero_point;
/// \endcode
///
/// Contract:
/// - Forward: `z_r = clamp(round(zero_point), quant_min, quant_max)`, then exactly `fake_quantize` with
///   `quant_params{s, z_r, quant_min, quant_max}` (`s` the scale rounded to the element type) and
///   `options.quant`'s rounding. The zero point is rounded half to even, or half away from zero when the codes are
///   (stochastic rounding of the codes: the zero point half to even), *the same in the forward and the backward*
///   (PyTorch's `_fake_quantize_learnable_*` rounds it half to even in the forward and `(z + 0.5)` truncated in the
///   backward).
/// - Backward (straight-through estimator: `round(t)` has derivative 1), with `v = x·inv_s`, the element *inside*
///   where `options.quant.mask` passes (rounded code, the default; or float range), else *below* / *above*:
///   inside `dx = dy`, `∂x̂/∂s = round(v) − v`, `∂x̂/∂z = 0`; below / above `dx = 0`,
///   `∂x̂/∂s = quant_min − z_r` / `quant_max − z_r`, `∂x̂/∂z = −s`. `d_scale` and `d_zero_point` sum `dy·∂x̂` over
///   the quantizer's elements and are multiplied by `g = 1/√(N·Q_max)` when `gradient_scale` is set (LSQ's
///   gradient scale; `N` the quantizer's element count, `Q_max = max(quant_max, 1)`), else by 1. The zero point's
///   clamp passes the gradient (as PyTorch's). The unclipped mask is rejected: LSQ needs the clipped elements.
///   Stochastic rounding uses the forward's draws (pass the same options, view shape and offset).
/// - LSQ+'s offset `β` is `−z·s` here (PyTorch's parametrization, which keeps 0 exactly on the grid).
/// - `cpu` and `simd` give bit-identical `y` and `dx`; the sums are in double on `cpu`, in the element type over at
///   most 16 batches then double on `simd` (within ~20 eps_T·Σ|terms| of `cpu`). Results do not depend on the
///   thread count (rows, or blocks of 64 rows along the column axis, are summed in a fixed order).
/// - NaN x: y NaN, dx 0, no contribution to the sums. ±inf x: clipped.
/// - Errors: as fake_quantize, plus a non-finite or non-positive scale, a non-finite zero point, the unclipped mask,
///   a gradient list of the wrong size: `std::invalid_argument` naming the argument, before anything is written.
/// - On CUDA device pointers: qsafe/cuda/lsq.cuh (`cuda_t{stream, &workspace}`, the same functions).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qsafe/detail/scalar/lsq.hpp"
#include "qsafe/detail/simd/lsq.hpp"
#include "qsafe/quant.hpp"

namespace qsafe {

/// A quantizer with a learnable scale and zero point (the zero point a real number, rounded in use).
struct learnable_qparams {
  double scale = 1.0;
  double zero_point = 0.0;
  std::int32_t quant_min = 0;
  std::int32_t quant_max = 255;
};

/// Options of the learnable fake-quant; `quant.mask` must be `rounded_code` (default) or `float_range`.
struct lsq_options {
  fake_quant_options quant = {};
  bool gradient_scale = false;  ///< multiply d_scale and d_zero_point by 1/√(N·Q_max)
};

/// Gradients of the loss with respect to one quantizer's scale and zero point.
struct lsq_gradients {
  double scale = 0.0;
  double zero_point = 0.0;
};

/// `z_r`: the zero point rounded as the contract says and clamped to the codes.
inline std::int32_t rounded_zero_point(const learnable_qparams& p, const fake_quant_options& options = {}) {
  const double z =
      options.rounding == rounding_mode::half_away_from_zero ? std::round(p.zero_point) : std::nearbyint(p.zero_point);
  return static_cast<std::int32_t>(std::clamp(z, static_cast<double>(p.quant_min), static_cast<double>(p.quant_max)));
}

/// The fixed quantizer the forward applies (scale rounded to `T`, zero point rounded).
template <host_element T>
quant_params to_quant_params(const learnable_qparams& p, const fake_quant_options& options = {}) {
  return {static_cast<double>(static_cast<T>(p.scale)), rounded_zero_point(p, options), p.quant_min, p.quant_max};
}

/// LSQ's gradient scale `1/√(N·Q_max)` with `Q_max = max(quant_max, 1)`; 1 for N = 0 (the sums are 0 then).
inline double lsq_gradient_scale(index_t count, std::int32_t quant_max) {
  if (count <= 0) return 1.0;
  return 1.0 / std::sqrt(static_cast<double>(count) * static_cast<double>(std::max(quant_max, 1)));
}

namespace detail {

template <class T>
void check_learnable(std::string_view function, std::string_view argument, const learnable_qparams& p) {
  if (!std::isfinite(p.zero_point)) {
    fail(function, argument, "has zero_point " + std::to_string(p.zero_point) + "; it must be finite");
  }
  const T scale = static_cast<T>(p.scale);
  if (!(scale > T(0)) || !std::isfinite(scale)) {
    fail(function, argument,
         "has scale " + std::to_string(p.scale) + "; it must be finite and > 0 in the element type");
  }
  check_params(function, argument, quant_params{p.scale, p.quant_min, p.quant_min, p.quant_max});
}

inline void check_lsq_options(std::string_view function, const lsq_options& options) {
  check_options(function, options.quant);
  if (options.quant.mask == ste_mask::unclipped) {
    fail(function, "options", "has mask unclipped; LSQ's scale and zero-point gradients need the clipped elements");
  }
}

template <class F>
void with_lsq_rounding_and_mask(const fake_quant_options& options, std::uint64_t first, F&& f) {
  with_rounding(options, first, [&](const auto& rounding) {
    if (options.mask == ste_mask::float_range) {
      f(rounding, mask_range_tag{});
    } else {
      f(rounding, mask_code_tag{});
    }
  });
}

inline lsq_gradients finish_lsq(const lsq_sums& s, const quant_params& q, double g) {
  const double z = q.zero_point;
  return {g * (s.inside + (q.quant_min - z) * s.below + (q.quant_max - z) * s.above),
          g * (-q.scale * (s.below + s.above))};
}

template <class T>
void check_lsq_views(std::string_view function, const matrix_view<const T>& x, const matrix_view<const T>& dy,
                     const matrix_view<T>& dx) {
  check_view(function, "x", x);
  check_same_shape(function, "dy", dy, "x", x);
  check_same_shape(function, "dx", dx, "x", x);
}

// Each channel's parameters checked and fixed as qparams in `P` (the arithmetic's type), with the options checked:
// the per-channel forward's checks, for every backend.
template <class P>
std::vector<quant_params> checked_fixed_params(std::string_view function, std::span<const learnable_qparams> params,
                                               const lsq_options& options) {
  for (std::size_t c = 0; c < params.size(); ++c) {
    check_learnable<P>(function, "params[" + std::to_string(c) + "]", params[c]);
  }
  check_lsq_options(function, options);
  std::vector<quant_params> fixed;
  for (const learnable_qparams& p : params) fixed.push_back(to_quant_params<P>(p, options.quant));
  return fixed;
}

// The per-channel backward's checks, for every backend: the views, the parameters and options as for the forward,
// the channel layout and the gradients' size. Returns the parameters as fixed qparams in `P`.
template <class P, class T>
std::vector<quant_params> checked_channel_params(std::string_view function, const matrix_view<const T>& x,
                                                 const matrix_view<const T>& dy, const matrix_view<T>& dx,
                                                 std::span<const learnable_qparams> params, channel_axis axis,
                                                 std::span<const lsq_gradients> gradients, const lsq_options& options) {
  check_lsq_views<T>(function, x, dy, dx);
  std::vector<quant_params> fixed = checked_fixed_params<P>(function, params, options);
  check_channels(function, std::span<const quant_params>(fixed), axis, x.rows, x.cols);
  if (gradients.size() != params.size()) {
    fail(function, "gradients",
         "has " + std::to_string(gradients.size()) + " entries but 'params' has " + std::to_string(params.size()));
  }
  return fixed;
}

// Rows per block along the column axis: each block sums its rows in order into its own per-column arrays.
inline constexpr index_t lsq_column_block = 64;

}  // namespace detail

/// Forward per tensor: `fake_quantize(policy, x, to_quant_params<T>(params, options.quant), y, options.quant)`.
template <host_policy Policy, host_element T>
void lsq_fake_quantize(const Policy& policy, matrix_view<const std::type_identity_t<T>> x,
                       const learnable_qparams& params, matrix_view<T> y, const lsq_options& options = {}) {
  detail::check_learnable<T>("lsq_fake_quantize", "params", params);
  detail::check_lsq_options("lsq_fake_quantize", options);
  fake_quantize(policy, x, to_quant_params<T>(params, options.quant), y, options.quant);
}

/// Forward per channel (`axis` as in quant.hpp).
template <host_policy Policy, host_element T>
void lsq_fake_quantize(const Policy& policy, matrix_view<const std::type_identity_t<T>> x,
                       std::span<const learnable_qparams> params, channel_axis axis, matrix_view<T> y,
                       const lsq_options& options = {}) {
  const std::vector<quant_params> fixed = detail::checked_fixed_params<T>("lsq_fake_quantize", params, options);
  fake_quantize(policy, x, std::span<const quant_params>(fixed), axis, y, options.quant);
}

/// Backward per tensor: writes dx, returns d scale and d zero point.
template <host_policy Policy, host_element T>
lsq_gradients lsq_fake_quantize_backward(const Policy& policy, matrix_view<const std::type_identity_t<T>> x,
                                         const learnable_qparams& params, matrix_view<const std::type_identity_t<T>> dy,
                                         matrix_view<T> dx, const lsq_options& options = {}) {
  detail::check_lsq_views<T>("lsq_fake_quantize_backward", x, dy, dx);
  detail::check_learnable<T>("lsq_fake_quantize_backward", "params", params);
  detail::check_lsq_options("lsq_fake_quantize_backward", options);
  const quant_params q = to_quant_params<T>(params, options.quant);
  const detail::uniform_params<T> p{detail::to_lanes<T>(q)};
  std::vector<detail::lsq_sums> rows(static_cast<std::size_t>(x.rows));
  detail::for_each_row(detail::thread_count(policy), x.rows, [&](index_t r) {
    detail::with_lsq_rounding_and_mask(
        options.quant, detail::first_index(options.quant, r, x.cols), [&](const auto& rounding, const auto& mask) {
          rows[static_cast<std::size_t>(r)] =
              detail::lsq_backward_row(policy, p, rounding, mask, x.cols, x.row(r), dy.row(r), dx.row(r));
        });
  });
  detail::lsq_sums total;
  for (const detail::lsq_sums& s : rows) total += s;
  return detail::finish_lsq(total, q, options.gradient_scale ? lsq_gradient_scale(x.size(), q.quant_max) : 1.0);
}

/// Backward per channel: writes dx and `gradients[c]` for each channel c (`gradients.size() == params.size()`).
template <host_policy Policy, host_element T>
void lsq_fake_quantize_backward(const Policy& policy, matrix_view<const std::type_identity_t<T>> x,
                                std::span<const learnable_qparams> params, channel_axis axis,
                                matrix_view<const std::type_identity_t<T>> dy, matrix_view<T> dx,
                                std::span<lsq_gradients> gradients, const lsq_options& options = {}) {
  const std::vector<quant_params> fixed =
      detail::checked_channel_params<T, T>("lsq_fake_quantize_backward", x, dy, dx, params, axis, gradients, options);
  const std::size_t channels = params.size();
  std::vector<detail::lsq_sums> totals(channels);
  const int threads = detail::thread_count(policy);
  if (axis == channel_axis::column) {
    const detail::column_param_storage<T> storage{std::span<const quant_params>(fixed)};
    const detail::column_params<T> columns = storage.view();
    const index_t blocks = (x.rows + detail::lsq_column_block - 1) / detail::lsq_column_block;
    std::vector<double> sums(static_cast<std::size_t>(blocks) * 3 * channels, 0.0);
    detail::for_each_row(threads, blocks, [&](index_t b) {
      double* base = sums.data() + static_cast<std::size_t>(b) * 3 * channels;
      const detail::lsq_column_sums block{base, base + channels, base + 2 * channels};
      for (index_t r = b * detail::lsq_column_block; r < std::min(x.rows, (b + 1) * detail::lsq_column_block); ++r) {
        detail::with_lsq_rounding_and_mask(options.quant, detail::first_index(options.quant, r, x.cols),
                                           [&](const auto& rounding, const auto& mask) {
                                             detail::lsq_backward_columns(policy, columns, rounding, mask, x.cols,
                                                                          x.row(r), dy.row(r), dx.row(r), block);
                                           });
      }
    });
    for (index_t b = 0; b < blocks; ++b) {
      const double* base = sums.data() + static_cast<std::size_t>(b) * 3 * channels;
      for (std::size_t c = 0; c < channels; ++c) {
        totals[c] += detail::lsq_sums{base[c], base[channels + c], base[2 * channels + c]};
      }
    }
  } else {
    std::vector<detail::lsq_sums> rows(static_cast<std::size_t>(x.rows));
    detail::for_each_row(threads, x.rows, [&](index_t r) {
      const auto c = static_cast<std::size_t>(r % static_cast<index_t>(channels));
      const detail::uniform_params<T> p{detail::to_lanes<T>(fixed[c])};
      detail::with_lsq_rounding_and_mask(
          options.quant, detail::first_index(options.quant, r, x.cols), [&](const auto& rounding, const auto& mask) {
            rows[static_cast<std::size_t>(r)] =
                detail::lsq_backward_row(policy, p, rounding, mask, x.cols, x.row(r), dy.row(r), dx.row(r));
          });
    });
    for (index_t r = 0; r < x.rows; ++r) {
      totals[static_cast<std::size_t>(r % static_cast<index_t>(channels))] += rows[static_cast<std::size_t>(r)];
    }
  }
  const index_t per_channel = x.size() / static_cast<index_t>(channels);
  for (std::size_t c = 0; c < channels; ++c) {
    gradients[c] = detail::finish_lsq(
        totals[c], fixed[c], options.gradient_scale ? lsq_gradient_scale(per_channel, fixed[c].quant_max) : 1.0);
  }
}

}  // namespace qsafe
