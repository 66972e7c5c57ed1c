#pragma once
// exp on the softmax's shifted scores x - m <= 0, the hot spot of every forward. Rows holding NaN never get
// here (the forward handles them first), so no NaN handling. float: a 2^n split by the round-to-nearest
// "magic number" addition and a degree-5 polynomial on [-ln2/2, ln2/2] (Cephes' expf coefficients), 14 vector
// instructions against xsimd 8.1's 22 (measured 0.46 -> 0.25 ns/element for the exp pass, AVX2,
// docs/performance.md); max error 2 ulp on [-87.3, 0] (tests/simd/exp.cpp checks every float there), exactly
// 0 below, -inf included. double: xsimd::exp.

#include <cstdint>
#include <xsimd/xsimd.hpp>

namespace qsafe::detail::simd {

template <class T>
xsimd::batch<T> exp_nonpositive(const xsimd::batch<T>& x) {
  return xsimd::exp(x);
}

inline xsimd::batch<float> exp_nonpositive(const xsimd::batch<float>& x) {
  using batch = xsimd::batch<float>;
  using ibatch = xsimd::batch<std::int32_t>;
  const batch magic(12582912.0f);  // 1.5·2^23: adding it rounds to an integer kept in the low mantissa bits
  const batch t = xsimd::fma(x, batch(1.44269504088896341f), magic);
  const batch n = t - magic;
  batch r = xsimd::fnma(n, batch(0.693359375f), x);  // x - n·ln2 in two parts, exactly representable high part
  r = xsimd::fnma(n, batch(-2.12194440e-4f), r);
  batch p(1.9875691500e-4f);
  p = xsimd::fma(p, r, batch(1.3981999507e-3f));
  p = xsimd::fma(p, r, batch(8.3334519073e-3f));
  p = xsimd::fma(p, r, batch(4.1665795894e-2f));
  p = xsimd::fma(p, r, batch(1.6666665459e-1f));
  p = xsimd::fma(p, r, batch(5.0000001201e-1f));
  p = xsimd::fma(p, r * r, r + batch(1.0f));
  // Scale by 2^n: add n to the exponent field (n sits in t's low bits, offset by magic's).
  const ibatch scale = (xsimd::bitwise_cast<ibatch>(t) - ibatch(0x4B400000)) << 23;
  const batch result = xsimd::bitwise_cast<batch>(xsimd::bitwise_cast<ibatch>(p) + scale);
  return xsimd::select(x < batch(-87.33654f), batch(0.0f), result);
}

}  // namespace qsafe::detail::simd
