#pragma once
// Uniform affine fake-quantization, reference kernels: one row at a time in the element type T, exactly the
// operations of PyTorch's fake-quantize kernel (REFERENCE §2): v = z + nearbyint(x·inv_s), clamp to the code
// range in T (before any integer conversion, so ±inf and huge x/s clamp), x̂ = (q − z)·s. Every step but
// x·inv_s and (q − z)·s is exact, so the xsimd kernels, which do the same operations, give bit-identical results.

#include <cmath>
#include <cstdint>

#include "qsafe/detail/config.hpp"
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

// Rounding of the scaled value v = x·inv_s to an integer, one tag per mode; the kernels are templates on it.
struct round_half_even_tag {};
struct round_half_away_tag {};
// Stochastic rounding: floor(v) + [u < v − floor(v)] with u in [0, 1) a counter-based hash of (seed, element
// index); `first` is the index of the row's element 0 (options.index_offset + r·cols).
struct round_stochastic_tag {
  std::uint64_t seed, first;
};

// Which elements the straight-through backward lets the gradient through (see qsafe::ste_mask).
struct mask_code_tag {};   // quant_min <= unclamped code <= quant_max
struct mask_range_tag {};  // (quant_min − z)·s <= x <= (quant_max − z)·s
struct mask_none_tag {};   // everywhere but NaN

// The counter-based generator behind stochastic rounding: integer arithmetic only, so every backend, thread
// count and ISA gives the same bits. The 64-bit element index i is split into hi = i >> 32 and lo = i mod 2^32;
// (seed, hi) gives two 32-bit keys by SplitMix64, and the hash of lo is two rounds of MurmurHash3's 32-bit
// finalizer keyed by them. A float gets its top 24 bits as u = h·2^−32 (exact in float), a double all 32. The CUDA
// kernels call these same functions (QSAFE_HOST_DEVICE), so the draws agree across host and device.
QSAFE_HOST_DEVICE inline std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
QSAFE_HOST_DEVICE inline std::uint32_t fmix32(std::uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  return h ^ (h >> 16);
}
struct stochastic_key {
  std::uint32_t a, b;
};
QSAFE_HOST_DEVICE inline stochastic_key make_stochastic_key(std::uint64_t seed, std::uint32_t hi) {
  const std::uint64_t k = splitmix64(seed ^ splitmix64(hi));
  return {static_cast<std::uint32_t>(k), static_cast<std::uint32_t>(k >> 32)};
}
QSAFE_HOST_DEVICE inline std::uint32_t counter_hash(stochastic_key key, std::uint32_t lo) {
  return fmix32(fmix32(lo ^ key.a) + key.b);
}
// Through signed conversions (exact, and vectorizable on ISAs without an unsigned one).
template <class T>
QSAFE_HOST_DEVICE T unit_uniform(std::uint32_t h) {
  if constexpr (sizeof(T) == sizeof(float)) {
    return static_cast<T>(static_cast<std::int32_t>(h >> 8)) * static_cast<T>(0x1p-24);
  } else {
    return (static_cast<T>(static_cast<std::int32_t>(h ^ 0x80000000u)) + static_cast<T>(0x1p31)) *
           static_cast<T>(0x1p-32);
  }
}
// u in [0, 1) for element `index` of the stream `seed`.
template <class T>
QSAFE_HOST_DEVICE T stochastic_uniform(std::uint64_t seed, std::uint64_t index) {
  return unit_uniform<T>(counter_hash(make_stochastic_key(seed, static_cast<std::uint32_t>(index >> 32)),
                                      static_cast<std::uint32_t>(index)));
}

}  // namespace qsafe::detail

namespace qsafe::detail::scalar {

template <class T>
T round_to_integer(round_half_even_tag, T v, index_t) {
  return std::nearbyint(v);
}
template <class T>
T round_to_integer(round_half_away_tag, T v, index_t) {
  return std::round(v);
}
// v − floor(v) is exact, so P(round up) = ceil(frac·2^24)/2^24 (float) for the 24-bit u: unbiased to 2^−24.
// ±inf: frac is NaN, the comparison false, the result ±inf (clamped later); NaN stays NaN.
template <class T>
T round_to_integer(const round_stochastic_tag& r, T v, index_t j) {
  const T f = std::floor(v);
  return f + (stochastic_uniform<T>(r.seed, r.first + static_cast<std::uint64_t>(j)) < v - f ? T(1) : T(0));
}

// The unclamped code z + round(x·inv_s) with the given rounding of element j; NaN stays NaN.
template <class T, class Rounding>
T unclamped_code(const lane_params<T>& p, const Rounding& rounding, T x, index_t j) {
  return p.zero_point + round_to_integer(rounding, x * p.inv_scale, j);
}

template <class T>
bool passes_gradient(mask_code_tag, const lane_params<T>& p, T v, T) {
  return v >= p.quant_min && v <= p.quant_max;
}
template <class T>
bool passes_gradient(mask_range_tag, const lane_params<T>& p, T, T x) {
  return x >= (p.quant_min - p.zero_point) * p.scale && x <= (p.quant_max - p.zero_point) * p.scale;
}
template <class T>
bool passes_gradient(mask_none_tag, const lane_params<T>&, T, T x) {
  return !std::isnan(x);
}

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

// The same three kernels with a rounding mode and an STE mask (the functions above are the defaults: half to even,
// mask on the code).
template <class Params, class Rounding, class T>
void fake_quantize_row(const Params& params, const Rounding& rounding, index_t n, const T* x, T* y) {
  for (index_t j = 0; j < n; ++j) {
    const lane_params<T> p = params.at(j);
    y[j] = (clamp_code(p, unclamped_code(p, rounding, x[j], j)) - p.zero_point) * p.scale;
  }
}

template <class Params, class Rounding, class Mask, class T>
void fake_quantize_backward_row(const Params& params, const Rounding& rounding, const Mask& mask, index_t n, const T* x,
                                const T* dy, T* dx) {
  for (index_t j = 0; j < n; ++j) {
    const lane_params<T> p = params.at(j);
    dx[j] = passes_gradient(mask, p, unclamped_code(p, rounding, x[j], j), x[j]) ? dy[j] : T(0);
  }
}

template <class Params, class Rounding, class T, class Code>
void quantize_row(const Params& params, const Rounding& rounding, index_t n, const T* x, Code* q) {
  for (index_t j = 0; j < n; ++j) {
    const lane_params<T> p = params.at(j);
    const T v = clamp_code(p, unclamped_code(p, rounding, x[j], j));
    q[j] = static_cast<Code>(std::isnan(v) ? p.zero_point : v);
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
template <class Params, class Rounding, class T>
void fake_quantize_row(cpu_t, const Params& params, const Rounding& rounding, index_t n, const T* x, T* y,
                       bool /*streaming*/) {
  scalar::fake_quantize_row(params, rounding, n, x, y);
}
template <class Params, class Rounding, class Mask, class T>
void fake_quantize_backward_row(cpu_t, const Params& params, const Rounding& rounding, const Mask& mask, index_t n,
                                const T* x, const T* dy, T* dx, bool /*streaming*/) {
  scalar::fake_quantize_backward_row(params, rounding, mask, n, x, dy, dx);
}
template <class Params, class Rounding, class T, class Code>
void quantize_row(cpu_t, const Params& params, const Rounding& rounding, index_t n, const T* x, Code* q) {
  scalar::quantize_row(params, rounding, n, x, q);
}

}  // namespace qsafe::detail
