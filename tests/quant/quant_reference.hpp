#pragma once
// An independent implementation of REFERENCE §2 for the quantizer tests: rounding half to even written out with
// floor (not nearbyint), the clamp and the STE mask evaluated in long double, and data generators.

#include <cmath>
#include <limits>
#include <vector>

#include "qsafe/quant.hpp"
#include "support/distributions.hpp"
#include "support/random.hpp"

namespace qsafe::test {

using real = long double;

// Round half to even, from floor: the tie case is decided explicitly.
inline real round_half_even(real v) {
  const real f = std::floor(v), d = v - f;
  if (d > 0.5L) return f + 1;
  if (d < 0.5L) return f;
  return std::fmod(f, 2.0L) == 0 ? f : f + 1;
}

template <class T>
struct reference_quantizer {
  T scale, inv_scale;
  real zero, qmin, qmax;
  explicit reference_quantizer(const quant_params& p)
      : scale(static_cast<T>(p.scale)),
        inv_scale(T(1) / static_cast<T>(p.scale)),
        zero(p.zero_point),
        qmin(p.quant_min),
        qmax(p.quant_max) {}

  // The unclamped code z + round(x·inv_s), with the product rounded in T as the contract says.
  real unclamped(T x) const {
    const T product = x * inv_scale;
    if (std::isnan(product)) return std::numeric_limits<real>::quiet_NaN();
    if (std::isinf(product)) return product;
    return zero + round_half_even(static_cast<real>(product));
  }
  real code(T x) const {
    const real v = unclamped(x);
    return std::isnan(v) ? v : std::min(std::max(v, qmin), qmax);
  }
  // (q − z)·s: q − z is an exact integer, the product rounded once in T.
  T fake(T x) const {
    const real q = code(x);
    return std::isnan(q) ? static_cast<T>(q) : static_cast<T>(q - zero) * scale;
  }
  bool passes(T x) const {
    const real v = unclamped(x);
    return v >= qmin && v <= qmax;
  }
};

// Bit-identical comparison that treats NaN as equal to NaN.
template <class T>
bool same(T a, T b) {
  return (std::isnan(a) && std::isnan(b)) || a == b;
}

}  // namespace qsafe::test
