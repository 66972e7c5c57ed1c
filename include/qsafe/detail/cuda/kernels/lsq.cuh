#pragma once
// LSQ / LSQ+ backward on the device (docs/quantization.md, "Learnable fake-quant"), as an op of the channel-sums
// pass (kernels/channel_sums.cuh): dx = dy inside the STE mask, else 0, and the three sums the parameter gradients
// need, in double: inside Σ(round(v) − v)·dy (v = x·inv_s), below Σdy, above Σdy. The fp32 steps are those of the
// host reference (detail/scalar/lsq.hpp) for float, none contracted (__fmul_rn), so dx is bit-identical to
// qsafe::cpu's; each term (round(v) − v)·dy is exact in double (two 24-bit significands), so only the order of the
// double additions differs from cpu. NaN x: dx 0, nothing added.

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "qsafe/detail/cuda/kernels/quant.cuh"
#include "qsafe/detail/scalar/quant.hpp"

namespace qsafe::detail::cuda {

// The forward's rounding (round_code of kernels/quant.cuh; stochastic: the same draws) and the STE mask that decides
// inside / below / above (the tags of detail/scalar/quant.hpp).
template <class Rounding, class Mask>
struct lsq_backward_op {
  Rounding rounding;
  static constexpr int sums = 3;  // inside, below, above
  static constexpr bool reads_second = true;
  static constexpr bool writes_output = true;

  // x and dy in, dx out.
  __device__ __forceinline__ float operator()(const lane_params<float>& p, float x, float dy, double (&s)[3],
                                              std::uint64_t index) const {
    const float v = __fmul_rn(x, p.inv_scale), r = round_code(rounding, v, index);
    int side;  // −1 below, +1 above, 0 inside, 2 NaN (as scalar::lsq_side)
    if constexpr (std::is_same_v<Mask, mask_range_tag>) {
      const float lo = __fmul_rn(p.quant_min - p.zero_point, p.scale),
                  hi = __fmul_rn(p.quant_max - p.zero_point, p.scale);
      side = x < lo ? -1 : (x > hi ? 1 : (x == x ? 0 : 2));
    } else {
      const float code = p.zero_point + r;
      side = code < p.quant_min ? -1 : (code > p.quant_max ? 1 : (code == code ? 0 : 2));
    }
    if (side == 0) {
      s[0] += static_cast<double>(__fsub_rn(r, v)) * static_cast<double>(dy);
      return dy;
    }
    if (side == -1) s[1] += static_cast<double>(dy);
    if (side == 1) s[2] += static_cast<double>(dy);
    return 0.0f;
  }
};

}  // namespace qsafe::detail::cuda
