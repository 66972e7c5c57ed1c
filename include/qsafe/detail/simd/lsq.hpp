#pragma once
// Learnable fake-quant backward on xsimd batches: dx exactly as the reference (the same operations, the same
// rounding draws); the three sums of detail/scalar/lsq.hpp accumulated in the element type's lanes over at most 16
// batches, then in double (as the statistics kernels do): each sum is within ~20 eps_T of Σ|term| of the reference.
// Per channel along columns, each batch's terms go straight into the per-column double sums.

#include <xsimd/xsimd.hpp>

#include "qsafe/detail/scalar/lsq.hpp"
#include "qsafe/detail/simd/quant.hpp"

namespace qsafe::detail::simd {

template <class T>
struct lsq_sides {
  xsimd::batch_bool<T> inside, below, above;
};

template <class T>
lsq_sides<T> lsq_side(mask_code_tag, const lane_batches<T>& p, const batch<T>& v, const batch<T>&) {
  const auto below = v<p.quant_min, above = v> p.quant_max;
  return {(v >= p.quant_min) && (v <= p.quant_max), below, above};
}
template <class T>
lsq_sides<T> lsq_side(mask_range_tag, const lane_batches<T>& p, const batch<T>&, const batch<T>& x) {
  const batch<T> lo = (p.quant_min - p.zero_point) * p.scale, hi = (p.quant_max - p.zero_point) * p.scale;
  return {(x >= lo) && (x <= hi), x<lo, x> hi};
}

// body(j, m, tail, sides, inside_term, dy) for each batch, after storing dx.
template <class Params, class Rounding, class Mask, class T, class Body>
[[gnu::always_inline]] inline void lsq_backward_batches(const Params& params, const Rounding& rounding,
                                                        const Mask& mask, index_t n, const T* x, const T* dy, T* dx,
                                                        Body&& body) {
  const auto lanes = lanes_for(params);
  row_rounding<Rounding> round(rounding);
  for_each_batch<T>(n, [&](index_t j, index_t m, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const auto& p = lanes.template get<is_tail>(j, m);
    const batch<T> xv = load<is_tail>(x + j, m, T(0)), g = load<is_tail>(dy + j, m, T(0));
    const batch<T> v = xv * p.inv_scale, r = round(v, j);
    const lsq_sides<T> side = lsq_side(mask, p, p.zero_point + r, xv);
    const batch<T> zero(T(0));
    store<is_tail>(dx + j, m, xsimd::select(side.inside, g, zero));
    body(j, m, side, xsimd::select(side.inside, (r - v) * g, zero), xsimd::select(side.below, g, zero),
         xsimd::select(side.above, g, zero));
  });
}

template <class Params, class Rounding, class Mask, class T>
lsq_sums lsq_backward_row(const Params& params, const Rounding& rounding, const Mask& mask, index_t n, const T* x,
                          const T* dy, T* dx) {
  lsq_sums s;
  batch<T> inside(T(0)), below(T(0)), above(T(0));
  int pending = 0;
  const auto flush = [&] {
    s.inside += static_cast<double>(xsimd::hadd(inside));
    s.below += static_cast<double>(xsimd::hadd(below));
    s.above += static_cast<double>(xsimd::hadd(above));
    inside = below = above = batch<T>(T(0));
    pending = 0;
  };
  lsq_backward_batches(params, rounding, mask, n, x, dy, dx,
                       [&](index_t, index_t, const auto&, const batch<T>& in, const batch<T>& lo, const batch<T>& hi) {
                         inside += in, below += lo, above += hi;
                         if (++pending == 16) flush();
                       });
  flush();
  return s;
}

template <class Params, class Rounding, class Mask, class T>
void lsq_backward_columns(const Params& params, const Rounding& rounding, const Mask& mask, index_t n, const T* x,
                          const T* dy, T* dx, const lsq_column_sums& sums) {
  alignas(64) T in[batch<T>::size], lo[batch<T>::size], hi[batch<T>::size];
  lsq_backward_batches(params, rounding, mask, n, x, dy, dx,
                       [&](index_t j, index_t m, const auto&, const batch<T>& a, const batch<T>& b, const batch<T>& c) {
                         a.store_aligned(in), b.store_aligned(lo), c.store_aligned(hi);
                         for (index_t i = 0; i < m; ++i) {
                           sums.inside[j + i] += static_cast<double>(in[i]);
                           sums.below[j + i] += static_cast<double>(lo[i]);
                           sums.above[j + i] += static_cast<double>(hi[i]);
                         }
                       });
}

}  // namespace qsafe::detail::simd

#include "qsafe/execution.hpp"

namespace qsafe::detail {

template <class Params, class Rounding, class Mask, class T>
lsq_sums lsq_backward_row(simd_t, const Params& params, const Rounding& rounding, const Mask& mask, index_t n,
                          const T* x, const T* dy, T* dx) {
  return simd::lsq_backward_row(params, rounding, mask, n, x, dy, dx);
}

template <class Params, class Rounding, class Mask, class T>
void lsq_backward_columns(simd_t, const Params& params, const Rounding& rounding, const Mask& mask, index_t n,
                          const T* x, const T* dy, T* dx, const lsq_column_sums& sums) {
  simd::lsq_backward_columns(params, rounding, mask, n, x, dy, dx, sums);
}

}  // namespace qsafe::detail
