#pragma once
// Learnable fake-quant (LSQ / LSQ+) backward, reference kernel: one row at a time. Each element is inside (the STE
// mask passes), below or above the code range; the kernel writes dx and hands the sums the scale and zero-point
// gradients need to a sink, in double:
//   inside: Σ (round(v) − v)·dy   (v = x·inv_s, the forward's rounding of the same element)
//   below:  Σ dy,  above: Σ dy     (the clipped elements; their code is quant_min or quant_max)
// The public function turns them into d_scale = inside + (quant_min − z)·below + (quant_max − z)·above and
// d_zero_point = −s·(below + above). NaN x contributes nothing.

#include <cmath>

#include "qsafe/detail/scalar/quant.hpp"
#include "qsafe/matrix_view.hpp"

namespace qsafe::detail {

// The three sums of a row or a channel.
struct lsq_sums {
  double inside = 0.0, below = 0.0, above = 0.0;
  lsq_sums& operator+=(const lsq_sums& o) {
    inside += o.inside;
    below += o.below;
    above += o.above;
    return *this;
  }
};

// Per-column running sums (per channel along columns), one entry per column.
struct lsq_column_sums {
  double *inside, *below, *above;
};

}  // namespace qsafe::detail

namespace qsafe::detail::scalar {

// −1 below the code range, +1 above, 0 inside; 2 for NaN (no gradient anywhere). `v` is the unclamped code.
template <class T>
int lsq_side(mask_code_tag, const lane_params<T>& p, T v, T) {
  return v < p.quant_min ? -1 : (v > p.quant_max ? 1 : (v == v ? 0 : 2));
}
template <class T>
int lsq_side(mask_range_tag, const lane_params<T>& p, T, T x) {
  const T lo = (p.quant_min - p.zero_point) * p.scale, hi = (p.quant_max - p.zero_point) * p.scale;
  return x < lo ? -1 : (x > hi ? 1 : (x == x ? 0 : 2));
}

// sink(j, side, value): value = (round(v) − v)·dy inside, dy below or above.
template <class Params, class Rounding, class Mask, class T, class Sink>
void lsq_backward_row(const Params& params, const Rounding& rounding, const Mask& mask, index_t n, const T* x,
                      const T* dy, T* dx, Sink&& sink) {
  for (index_t j = 0; j < n; ++j) {
    const lane_params<T> p = params.at(j);
    const T v = x[j] * p.inv_scale, r = round_to_integer(rounding, v, j);
    const int side = lsq_side(mask, p, p.zero_point + r, x[j]);
    dx[j] = side == 0 ? dy[j] : T(0);
    if (side == 0) sink(j, side, static_cast<double>(r - v) * static_cast<double>(dy[j]));
    if (side == -1 || side == 1) sink(j, side, static_cast<double>(dy[j]));
  }
}

}  // namespace qsafe::detail::scalar

#include "qsafe/execution.hpp"

namespace qsafe::detail {

template <class Params, class Rounding, class Mask, class T>
lsq_sums lsq_backward_row(cpu_t, const Params& params, const Rounding& rounding, const Mask& mask, index_t n,
                          const T* x, const T* dy, T* dx) {
  lsq_sums s;
  scalar::lsq_backward_row(params, rounding, mask, n, x, dy, dx, [&](index_t, int side, double value) {
    (side == 0 ? s.inside : (side < 0 ? s.below : s.above)) += value;
  });
  return s;
}

template <class Params, class Rounding, class Mask, class T>
void lsq_backward_columns(cpu_t, const Params& params, const Rounding& rounding, const Mask& mask, index_t n,
                          const T* x, const T* dy, T* dx, const lsq_column_sums& sums) {
  scalar::lsq_backward_row(params, rounding, mask, n, x, dy, dx, [&](index_t j, int side, double value) {
    (side == 0 ? sums.inside : (side < 0 ? sums.below : sums.above))[j] += value;
  });
}

}  // namespace qsafe::detail
