#pragma once
// Fake-quantization on xsimd batches: the same operations as the reference kernels in detail/scalar/quant.hpp
// (x·inv_s, nearbyint, + z, clamp, (q − z)·s), so results are bit-identical to them. Tails go through the
// same vector code.

#include <cmath>
#include <xsimd/xsimd.hpp>

#include "qsafe/detail/scalar/quant.hpp"
#include "qsafe/detail/simd/batch_io.hpp"

namespace qsafe::detail::simd {

template <class T>
struct lane_batches {
  batch<T> scale, inv_scale, zero_point, quant_min, quant_max;
};

// Broadcast once for a whole row.
template <class T>
struct uniform_lanes {
  lane_batches<T> b;
  explicit uniform_lanes(const uniform_params<T>& u)
      : b{batch<T>(u.p.scale), batch<T>(u.p.inv_scale), batch<T>(u.p.zero_point), batch<T>(u.p.quant_min),
          batch<T>(u.p.quant_max)} {}
  template <bool Tail>
  const lane_batches<T>& get(index_t, index_t) const {
    return b;
  }
};

// Loaded per batch of columns; the tail pads with a harmless channel (scale 1, codes [0, 1]).
template <class T>
struct column_lanes {
  column_params<T> c;
  explicit column_lanes(const column_params<T>& columns) : c(columns) {}
  template <bool Tail>
  lane_batches<T> get(index_t j, index_t n) const {
    return {load<Tail>(c.scale + j, n, T(1)), load<Tail>(c.inv_scale + j, n, T(1)),
            load<Tail>(c.zero_point + j, n, T(0)), load<Tail>(c.quant_min + j, n, T(0)),
            load<Tail>(c.quant_max + j, n, T(1))};
  }
};

template <class T>
uniform_lanes<T> lanes_for(const uniform_params<T>& u) {
  return uniform_lanes<T>(u);
}
template <class T>
column_lanes<T> lanes_for(const column_params<T>& c) {
  return column_lanes<T>(c);
}

template <class T>
batch<T> unclamped_code(const lane_batches<T>& p, const batch<T>& x) {
  return p.zero_point + xsimd::nearbyint(x * p.inv_scale);
}

// clamp that lets NaN through (comparisons with NaN are false).
template <class T>
batch<T> clamp_code(const lane_batches<T>& p, const batch<T>& v) {
  return xsimd::select(v < p.quant_min, p.quant_min, xsimd::select(v > p.quant_max, p.quant_max, v));
}

template <class Params, class T>
void fake_quantize_row(const Params& params, index_t n, const T* x, T* y) {
  const auto lanes = lanes_for(params);
  for_each_batch<T>(n, [&](index_t j, index_t m, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const auto& p = lanes.template get<is_tail>(j, m);
    const batch<T> q = clamp_code(p, unclamped_code(p, load<is_tail>(x + j, m, T(0))));
    store<is_tail>(y + j, m, (q - p.zero_point) * p.scale);
  });
}

template <class Params, class T>
void fake_quantize_backward_row(const Params& params, index_t n, const T* x, const T* dy, T* dx) {
  const auto lanes = lanes_for(params);
  for_each_batch<T>(n, [&](index_t j, index_t m, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const auto& p = lanes.template get<is_tail>(j, m);
    const batch<T> v = unclamped_code(p, load<is_tail>(x + j, m, T(0)));
    const batch<T> g = load<is_tail>(dy + j, m, T(0));
    store<is_tail>(dx + j, m, xsimd::select((v >= p.quant_min) && (v <= p.quant_max), g, batch<T>(T(0))));
  });
}

// Codes computed in vector registers, converted to the integer type through a small buffer (NaN: zero point).
template <class Params, class T, class Code>
void quantize_row(const Params& params, index_t n, const T* x, Code* q) {
  const auto lanes = lanes_for(params);
  alignas(64) T codes[batch<T>::size];
  for_each_batch<T>(n, [&](index_t j, index_t m, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const auto& p = lanes.template get<is_tail>(j, m);
    const batch<T> v = clamp_code(p, unclamped_code(p, load<is_tail>(x + j, m, T(0))));
    xsimd::select(xsimd::isnan(v), p.zero_point, v).store_aligned(codes);
    for (index_t i = 0; i < m; ++i) q[j + i] = static_cast<Code>(codes[i]);
  });
}

}  // namespace qsafe::detail::simd

#include "qsafe/execution.hpp"

namespace qsafe::detail {

template <class Params, class T>
void fake_quantize_row(simd_t, const Params& params, index_t n, const T* x, T* y) {
  simd::fake_quantize_row(params, n, x, y);
}
template <class Params, class T>
void fake_quantize_backward_row(simd_t, const Params& params, index_t n, const T* x, const T* dy, T* dx) {
  simd::fake_quantize_backward_row(params, n, x, dy, dx);
}
template <class Params, class T, class Code>
void quantize_row(simd_t, const Params& params, index_t n, const T* x, Code* q) {
  simd::quantize_row(params, n, x, q);
}
// An integer-to-float map the compiler vectorizes by itself: the reference loop is the fast path.
template <class Params, class Code, class T>
void dequantize_row(simd_t, const Params& params, index_t n, const Code* q, T* y) {
  scalar::dequantize_row(params, n, q, y);
}

}  // namespace qsafe::detail
