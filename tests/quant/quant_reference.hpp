#pragma once
// An independent implementation of REFERENCE §2 for the quantizer tests: rounding half to even written out with
// floor (not nearbyint), the clamp and the STE mask evaluated in long double, and data generators.

#include <cmath>
#include <cstddef>
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

enum class input_values { finite, with_non_finite };

// Inputs for parameters p: mostly inside the code range, some outside (up to 2 codes beyond each end, and far
// outside), exact ties (k + 0.5)·s, codes k·s, ±0; with `input_values::with_non_finite` also NaN, +inf and -inf.
template <class T>
std::vector<T> random_inputs(rng& random, const quant_params& p, std::size_t n,
                             input_values values = input_values::finite) {
  const bool non_finite = values == input_values::with_non_finite;
  std::vector<T> x(n);
  const double s = p.scale;
  for (auto& v : x) {
    const long pick = random.integer(0, non_finite ? 11 : 9);
    const double code = static_cast<double>(random.integer(p.quant_min, p.quant_max)) - p.zero_point;
    if (pick == 0) {
      v = static_cast<T>((code + 0.5) * s);
    } else if (pick == 1) {
      v = static_cast<T>(code * s);
    } else if (pick == 2) {
      v = static_cast<T>(random.normal(0.0, 10.0 * s * (p.quant_max - p.quant_min)));
    } else if (pick == 3) {
      v = random.coin() ? T(0) : -T(0);
    } else if (pick == 4 && non_finite) {
      const long which = random.integer(0, 2);
      v = which == 0 ? std::numeric_limits<T>::quiet_NaN()
                     : (which == 1 ? std::numeric_limits<T>::infinity() : -std::numeric_limits<T>::infinity());
    } else {
      v = static_cast<T>(random.uniform(p.quant_min - p.zero_point - 2.0, p.quant_max - p.zero_point + 2.0) * s);
    }
  }
  return x;
}

// Bit-identical comparison that treats NaN as equal to NaN.
template <class T>
bool same(T a, T b) {
  return (std::isnan(a) && std::isnan(b)) || a == b;
}

}  // namespace qsafe::test
