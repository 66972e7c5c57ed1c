#pragma once
// Uniform affine fake-quantization, reference kernels: one row at a time in the element type T, exactly the
// operations of PyTorch's fake-quantize kernel (REFERENCE §2): v = z + nearbyint(x·inv_s), clamp to the code
// range in T (before any integer conversion, so ±inf and huge x/s clamp), x̂ = (q − z)·s. Every step but
// x·inv_s and (q − z)·s is exact, so the xsimd kernels, which do the same operations, give bit-identical results.

#include <cmath>
#include <cstdint>

#include "qsafe/matrix_view.hpp"

namespace qsafe::detail {

// One channel's parameters in the element type: the scale, its reciprocal (computed once, as PyTorch does),
// and the zero point and code bounds (integers, exact in T).
template <class T>
struct lane_params {
  T scale, inv_scale, zero_point, quant_min, quant_max;
};

// Parameters shared by a whole row (per tensor, or per channel along rows).
template <class T>
struct uniform_params {
  lane_params<T> p;
  lane_params<T> at(index_t) const { return p; }
};

// Parameters per column (per channel along columns): structure of arrays, one entry per column.
template <class T>
struct column_params {
  const T *scale, *inv_scale, *zero_point, *quant_min, *quant_max;
  lane_params<T> at(index_t j) const { return {scale[j], inv_scale[j], zero_point[j], quant_min[j], quant_max[j]}; }
};

}  // namespace qsafe::detail

namespace qsafe::detail::scalar {

// The unclamped code z + nearbyint(x·inv_s); NaN stays NaN.
template <class T>
T unclamped_code(const lane_params<T>& p, T x) {
  return p.zero_point + std::nearbyint(x * p.inv_scale);
}

// clamp to [quant_min, quant_max] that lets NaN through.
template <class T>
T clamp_code(const lane_params<T>& p, T v) {
  return v < p.quant_min ? p.quant_min : (v > p.quant_max ? p.quant_max : v);
}

template <class Params, class T>
void fake_quantize_row(const Params& params, index_t n, const T* x, T* y) {
  for (index_t j = 0; j < n; ++j) {
    const lane_params<T> p = params.at(j);
    y[j] = (clamp_code(p, unclamped_code(p, x[j])) - p.zero_point) * p.scale;
  }
}

// Straight-through estimator: dx = dy where the unclamped code lies in [quant_min, quant_max] (inclusive),
// else 0 (NaN x: 0).
template <class Params, class T>
void fake_quantize_backward_row(const Params& params, index_t n, const T* x, const T* dy, T* dx) {
  for (index_t j = 0; j < n; ++j) {
    const lane_params<T> p = params.at(j);
    const T v = unclamped_code(p, x[j]);
    dx[j] = (v >= p.quant_min && v <= p.quant_max) ? dy[j] : T(0);
  }
}

// Integer codes; NaN maps to the zero point (the code of 0), since an integer has no NaN.
template <class Params, class T, class Code>
void quantize_row(const Params& params, index_t n, const T* x, Code* q) {
  for (index_t j = 0; j < n; ++j) {
    const lane_params<T> p = params.at(j);
    const T v = clamp_code(p, unclamped_code(p, x[j]));
    q[j] = static_cast<Code>(std::isnan(v) ? p.zero_point : v);
  }
}

template <class Params, class Code, class T>
void dequantize_row(const Params& params, index_t n, const Code* q, T* y) {
  for (index_t j = 0; j < n; ++j) {
    const lane_params<T> p = params.at(j);
    y[j] = (static_cast<T>(q[j]) - p.zero_point) * p.scale;
  }
}

}  // namespace qsafe::detail::scalar

#include "qsafe/execution.hpp"

namespace qsafe::detail {

// `streaming` (a store hint for large outputs) does not change results; the reference ignores it.
template <class Params, class T>
void fake_quantize_row(cpu_t, const Params& params, index_t n, const T* x, T* y, bool /*streaming*/) {
  scalar::fake_quantize_row(params, n, x, y);
}
template <class Params, class T>
void fake_quantize_backward_row(cpu_t, const Params& params, index_t n, const T* x, const T* dy, T* dx,
                                bool /*streaming*/) {
  scalar::fake_quantize_backward_row(params, n, x, dy, dx);
}
inline bool streaming_output(cpu_t, std::size_t) {
  return false;
}
template <class Params, class T, class Code>
void quantize_row(cpu_t, const Params& params, index_t n, const T* x, Code* q) {
  scalar::quantize_row(params, n, x, q);
}
template <class Params, class Code, class T>
void dequantize_row(cpu_t, const Params& params, index_t n, const Code* q, T* y) {
  scalar::dequantize_row(params, n, q, y);
}

}  // namespace qsafe::detail
