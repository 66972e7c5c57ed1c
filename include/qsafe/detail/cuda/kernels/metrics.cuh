#pragma once
// Quantization error metrics on the device (docs/quantization.md, "Quantization error metrics"), as ops of the
// channel-sums pass (kernels/channel_sums.cuh): Σx², Σy², Σxy, Σ(x − y)² in double, the difference taken in double
// and each term added with an fma, as the host reference (detail/scalar/metrics.hpp) does; only the order of the
// additions differs from qsafe::cpu.

#include <cuda_runtime.h>

#include <cstdint>

#include "qsafe/detail/cuda/element.cuh"
#include "qsafe/detail/cuda/kernels/quant.cuh"
#include "qsafe/detail/scalar/quant.hpp"

namespace qsafe::detail::cuda {

__device__ __forceinline__ void add_error_terms(float x, float y, double (&s)[4]) {
  const double a = static_cast<double>(x), b = static_cast<double>(y), d = a - b;
  s[0] = fma(a, a, s[0]);
  s[1] = fma(b, b, s[1]);
  s[2] = fma(a, b, s[2]);
  s[3] = fma(d, d, s[3]);
}

// x against a given y.
struct error_op {
  static constexpr int sums = 4;  // x², y², xy, (x − y)²
  static constexpr bool reads_second = true;
  static constexpr bool writes_output = false;
  __device__ __forceinline__ float operator()(const lane_params<float>&, float x, float y, double (&s)[4],
                                              std::uint64_t) const {
    add_error_terms(x, y, s);
    return 0.0f;
  }
};

// x against fake_quantize(x) (one read of x): the host's fp32 fake-quant operation for operation, with the options'
// rounding (round_code of kernels/quant.cuh), rounded to the element type T as the CUDA fake_quantize stores it.
template <class T, class Rounding>
struct fused_error_op {
  Rounding rounding;
  static constexpr int sums = 4;
  static constexpr bool reads_second = false;
  static constexpr bool writes_output = false;
  __device__ __forceinline__ float operator()(const lane_params<float>& p, float x, float, double (&s)[4],
                                              std::uint64_t index) const {
    // x·inv_s rounded on its own (__fmul_rn): never contracted with the stochastic rounding's v − floor(v).
    const float code = p.zero_point + round_code(rounding, __fmul_rn(x, p.inv_scale), index);
    const float y = to_float(from_float<T>((clamp_code(p, code) - p.zero_point) * p.scale));
    add_error_terms(x, y, s);
    return 0.0f;
  }
};

}  // namespace qsafe::detail::cuda
