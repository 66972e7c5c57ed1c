// Fake-quant options (docs/quantization.md, "Fake-quant options"): every rounding mode and STE mask against a
// long-double definition bit for bit, ties, stochastic rounding's mean and reproducibility, bad input per mode,
// narrow range and widening the range to put 0 on the grid.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "qsafe/quant.hpp"
#include "quant/quant_reference.hpp"
#include "support/backends.hpp"

using namespace qsafe;
using namespace qsafe::test;
using Catch::Matchers::Contains;

namespace {

constexpr rounding_mode all_roundings[] = {rounding_mode::half_to_even, rounding_mode::half_away_from_zero,
                                           rounding_mode::stochastic};
constexpr ste_mask all_masks[] = {ste_mask::rounded_code, ste_mask::float_range, ste_mask::unclipped};

const char* name(rounding_mode r) {
  return r == rounding_mode::half_to_even ? "half to even"
                                          : (r == rounding_mode::half_away_from_zero ? "half away" : "stochastic");
}
const char* name(ste_mask m) {
  return m == ste_mask::rounded_code ? "rounded code" : (m == ste_mask::float_range ? "float range" : "unclipped");
}

// The documented stream, written out again from its definition (SplitMix64 keys, two keyed fmix32 rounds).
std::uint64_t splitmix(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
std::uint32_t murmur_finalizer(std::uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  return h ^ (h >> 16);
}
// u in [0, 1) as an exact long double: 24 bits for float, 32 for double.
template <class T>
real reference_uniform(std::uint64_t seed, std::uint64_t index) {
  const std::uint64_t key = splitmix(seed ^ splitmix(index >> 32));
  const std::uint32_t h =
      murmur_finalizer(murmur_finalizer(static_cast<std::uint32_t>(index) ^ static_cast<std::uint32_t>(key)) +
                       static_cast<std::uint32_t>(key >> 32));
  return sizeof(T) == 4 ? std::ldexp(static_cast<real>(h >> 8), -24) : std::ldexp(static_cast<real>(h), -32);
}

// Rounds the product x·inv_s (rounded in T, as the contract says) per mode; element `index` of the stream.
template <class T>
real reference_round(rounding_mode mode, T product, std::uint64_t seed, std::uint64_t index) {
  if (std::isnan(product) || std::isinf(product)) return product;
  const real v = product, f = std::floor(v);
  switch (mode) {
    case rounding_mode::half_to_even:
      return round_half_even(v);
    case rounding_mode::half_away_from_zero:
      return v - f == 0.5L ? (v > 0 ? f + 1 : f) : round_half_even(v);  // ties away from zero, others nearest
    case rounding_mode::stochastic:
      return f + (reference_uniform<T>(seed, index) < v - f ? 1 : 0);
  }
  return 0;
}

template <class T>
struct reference_options_quantizer : reference_quantizer<T> {
  fake_quant_options o;
  reference_options_quantizer(const quant_params& p, const fake_quant_options& options)
      : reference_quantizer<T>(p), o(options) {}
  real unclamped(T x, std::uint64_t index) const {
    const T product = x * this->inv_scale;
    const real r = reference_round(o.rounding, product, o.seed, o.index_offset + index);
    return std::isnan(r) || std::isinf(r) ? r : this->zero + r;
  }
  real code(T x, std::uint64_t index) const {
    const real v = unclamped(x, index);
    return std::isnan(v) ? v : std::min(std::max(v, this->qmin), this->qmax);
  }
  T fake(T x, std::uint64_t index) const {
    const real q = code(x, index);
    return std::isnan(q) ? static_cast<T>(q) : static_cast<T>(q - this->zero) * this->scale;
  }
  bool passes(T x, std::uint64_t index) const {
    if (std::isnan(x)) return false;
    switch (o.mask) {
      case ste_mask::rounded_code: {
        const real v = unclamped(x, index);
        return v >= this->qmin && v <= this->qmax;
      }
      case ste_mask::float_range:  // the ends (q − z)·s rounded once in T, as the fake-quantized end codes
        return x >= static_cast<T>(this->qmin - this->zero) * this->scale &&
               x <= static_cast<T>(this->qmax - this->zero) * this->scale;
      case ste_mask::unclipped:
        return true;
    }
    return false;
  }
};

template <class T>
quant_params random_qparams(rng& random) {
  const int bits = static_cast<int>(random.integer(2, 16));
  const quant_mode mode = random.coin() ? quant_mode::asymmetric : quant_mode::symmetric;
  const double a = random.normal(0.0, 3.0), b = random.normal(0.0, 3.0);
  qparams_options o;
  o.narrow_range = random.coin();
  o.alignment = random.coin() ? zero_alignment::widen_range : zero_alignment::round_zero_point;
  return make_qparams<T>({std::min(a, b), std::max(a, b)}, bits, mode, o);
}

fake_quant_options random_options(rng& random) {
  fake_quant_options o;
  o.rounding = all_roundings[random.integer(0, 2)];
  o.mask = all_masks[random.integer(0, 2)];
  o.seed = static_cast<std::uint64_t>(random.integer(0, std::numeric_limits<long>::max()));
  // Sometimes just below 2^32 so that a row crosses the boundary of the index's high word.
  o.index_offset = random.coin() ? 0 : (std::uint64_t{1} << 32) - static_cast<std::uint64_t>(random.integer(1, 40));
  return o;
}

}  // namespace

TEMPLATE_TEST_CASE("every rounding mode and STE mask equals the long-double definition bit for bit", "[quant][options]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (int trial = 0; trial < 300; ++trial) {
    const quant_params p = random_qparams<T>(random);
    const fake_quant_options o = random_options(random);
    const index_t rows = random.integer(1, 4), cols = random.integer(1, 70), stride = cols + random.integer(0, 3);
    const std::vector<T> x =
        random_inputs<T>(random, p, static_cast<std::size_t>(rows * stride), input_values::with_non_finite);
    std::vector<T> y(x.size()), dy(x.size()), dx(x.size());
    std::vector<std::int32_t> q(x.size());
    for (auto& g : dy) g = static_cast<T>(random.normal());
    INFO("trial " << trial << ", " << name(o.rounding) << ", mask " << name(o.mask) << ", seed " << o.seed
                  << ", offset " << o.index_offset << ", scale " << p.scale << ", zero point " << p.zero_point
                  << ", codes [" << p.quant_min << ", " << p.quant_max << "], " << rows << " x " << cols);
    const matrix_view<const T> xv(x.data(), rows, cols, stride);
    fake_quantize(TestType::policy, xv, p, matrix_view<T>(y.data(), rows, cols, stride), o);
    fake_quantize_backward(TestType::policy, xv, p, matrix_view<const T>(dy.data(), rows, cols, stride),
                           matrix_view<T>(dx.data(), rows, cols, stride), o);
    quantize(TestType::policy, xv, p, matrix_view<std::int32_t>(q.data(), rows, cols, stride), o);
    const reference_options_quantizer<T> ref(p, o);
    for (index_t r = 0; r < rows; ++r) {
      for (index_t c = 0; c < cols; ++c) {
        const auto i = static_cast<std::size_t>(r * stride + c);
        const auto index = static_cast<std::uint64_t>(r * cols + c);  // the view's row-major index, not the stride's
        INFO("x = " << x[i] << " at (" << r << ", " << c << ")");
        // Exact: every step but x·inv_s and (q − z)·s is exact, and those are rounded once in T in both.
        REQUIRE(same(y[i], ref.fake(x[i], index)));
        REQUIRE(dx[i] == (ref.passes(x[i], index) ? dy[i] : T(0)));
        REQUIRE(static_cast<real>(q[i]) == (std::isnan(x[i]) ? real(p.zero_point) : ref.code(x[i], index)));
      }
    }
  }
}

TEMPLATE_TEST_CASE("per channel with options equals the long-double definition channel by channel",
                   "[quant][options][per_channel]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (int trial = 0; trial < 100; ++trial) {
    const bool along_columns = random.coin();
    const index_t channels = random.integer(1, 40);
    const index_t rows = along_columns ? random.integer(1, 6) : channels * random.integer(1, 3);
    const index_t cols = along_columns ? channels : random.integer(1, 40), stride = cols + random.integer(0, 2);
    std::vector<quant_params> params;
    for (index_t c = 0; c < channels; ++c) params.push_back(random_qparams<T>(random));
    const fake_quant_options o = random_options(random);
    std::vector<T> x(static_cast<std::size_t>(rows * stride)), y(x.size()), dy(x.size()), dx(x.size());
    std::vector<std::int32_t> q(x.size());
    for (index_t r = 0; r < rows; ++r) {
      for (index_t c = 0; c < cols; ++c) {
        const quant_params& p = params[static_cast<std::size_t>(along_columns ? c : r % channels)];
        x[static_cast<std::size_t>(r * stride + c)] = random_inputs<T>(random, p, 1, input_values::with_non_finite)[0];
      }
    }
    for (auto& g : dy) g = static_cast<T>(random.normal());
    const channel_axis axis = along_columns ? channel_axis::column : channel_axis::row;
    const std::span<const quant_params> ps(params);
    const matrix_view<const T> xv(x.data(), rows, cols, stride);
    INFO("trial " << trial << ", " << name(o.rounding) << ", mask " << name(o.mask) << ", offset " << o.index_offset
                  << ", " << rows << " x " << cols << " along " << (along_columns ? "columns" : "rows"));
    fake_quantize(TestType::policy, xv, ps, axis, matrix_view<T>(y.data(), rows, cols, stride), o);
    fake_quantize_backward(TestType::policy, xv, ps, axis, matrix_view<const T>(dy.data(), rows, cols, stride),
                           matrix_view<T>(dx.data(), rows, cols, stride), o);
    quantize(TestType::policy, xv, ps, axis, matrix_view<std::int32_t>(q.data(), rows, cols, stride), o);
    for (index_t r = 0; r < rows; ++r) {
      for (index_t c = 0; c < cols; ++c) {
        const quant_params& p = params[static_cast<std::size_t>(along_columns ? c : r % channels)];
        const reference_options_quantizer<T> ref(p, o);
        const auto i = static_cast<std::size_t>(r * stride + c);
        const auto index = static_cast<std::uint64_t>(r * cols + c);
        INFO("x = " << x[i] << " at (" << r << ", " << c << ")");
        REQUIRE(same(y[i], ref.fake(x[i], index)));
        REQUIRE(dx[i] == (ref.passes(x[i], index) ? dy[i] : T(0)));
        REQUIRE(static_cast<real>(q[i]) == (std::isnan(x[i]) ? real(p.zero_point) : ref.code(x[i], index)));
      }
    }
  }
}

TEMPLATE_TEST_CASE("exact ties: half to even, half away from zero, and stochastic rounds up half the time",
                   "[quant][options][ties]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  // s = 0.5, z = 8: x·inv_s = 2x exactly, so x = (k + 0.5)·s is an exact tie of k + 0.5.
  const quant_params p{0.5, 8, 0, 31};
  const std::vector<T> x{T(0.25), T(0.75), T(1.25), T(-0.25), T(-0.75), T(-1.25), T(3.75)};
  const std::vector<T> even{0, 2, 2, 0, -2, -2, 8};  // 0.5, 1.5, 2.5, −0.5, −1.5, −2.5, 7.5 → codes − z
  const std::vector<T> away{1, 2, 3, -1, -2, -3, 8};
  const auto n = static_cast<index_t>(x.size());
  std::vector<T> y(x.size());
  fake_quant_options o;
  fake_quantize(TestType::policy, matrix_view<const T>(x.data(), 1, n), p, matrix_view<T>(y.data(), 1, n), o);
  for (std::size_t i = 0; i < x.size(); ++i) CHECK(y[i] == even[i] * T(0.5));
  CHECK(std::signbit(y[3]) == false);  // −0.5 → code z + (−0) = z, x̂ = +0
  o.rounding = rounding_mode::half_away_from_zero;
  fake_quantize(TestType::policy, matrix_view<const T>(x.data(), 1, n), p, matrix_view<T>(y.data(), 1, n), o);
  for (std::size_t i = 0; i < x.size(); ++i) CHECK(y[i] == away[i] * T(0.5));

  // Stochastic at a tie: each element rounds up with probability 1/2 (to 2^−24), independently. Over m = 2^16
  // elements the fraction rounded up has standard deviation 0.5/256 ≈ 0.002; allow 6 of them (a fair generator
  // fails with probability 2e-9).
  o.rounding = rounding_mode::stochastic;
  QSAFE_TEST_RNG(random);
  for (const std::uint64_t seed : {std::uint64_t{20261125}, static_cast<std::uint64_t>(random.integer(0, 1L << 62))}) {
    INFO("seed " << seed);
    o.seed = seed;
    const index_t m = index_t{1} << 16;
    std::vector<T> ties(static_cast<std::size_t>(m), T(1.25)), out(ties.size());
    fake_quantize(TestType::policy, matrix_view<const T>(ties.data(), 256, 256), p,
                  matrix_view<T>(out.data(), 256, 256), o);
    double up = 0;
    for (const T v : out) {
      REQUIRE((v == T(1) || v == T(1.5)));  // codes 2 or 3 only
      up += v == T(1.5) ? 1 : 0;
    }
    CHECK(std::fabs(up / static_cast<double>(m) - 0.5) <= 6 * 0.5 / 256);
  }
}

TEMPLATE_TEST_CASE("stochastic rounding is unbiased: the mean error is within 6 standard errors of 0",
                   "[quant][options][stochastic]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  const quant_params p = make_qparams<T>({-3.0, 5.0}, 4, quant_mode::asymmetric);  // coarse: s = 8/15
  for (const std::uint64_t seed : {std::uint64_t{7}, static_cast<std::uint64_t>(random.integer(0, 1L << 62))}) {
    INFO("seed " << seed);
    fake_quant_options o;
    o.rounding = rounding_mode::stochastic;
    o.seed = seed;
    // (a) One value with fraction f repeated m times: the fraction rounded up estimates f with standard error
    // sqrt(f(1 − f)/m) <= 0.5/sqrt(m); the resolution bias of u is below 2^−24. 6 standard errors: a fair
    // generator fails with probability 2e-9.
    const index_t m = index_t{1} << 18;
    for (const double f : {0.01, 0.25, 0.5, 0.7, 0.999}) {
      const T x = static_cast<T>((2.0 + f) * p.scale);
      const T v = x * (T(1) / static_cast<T>(p.scale));  // the product the kernel rounds
      const real frac = static_cast<real>(v) - std::floor(static_cast<real>(v));
      std::vector<T> in(static_cast<std::size_t>(m), x), out(in.size());
      fake_quantize(TestType::policy, matrix_view<const T>(in.data(), 512, 512), p,
                    matrix_view<T>(out.data(), 512, 512), o);
      const T down =
          (std::floor(v) + static_cast<T>(p.zero_point) - static_cast<T>(p.zero_point)) * static_cast<T>(p.scale);
      double up = 0;
      for (const T y : out) up += y > down ? 1 : 0;
      const double se = std::sqrt(static_cast<double>(frac * (1 - frac)) / static_cast<double>(m));
      INFO("f = " << f << ", fraction " << frac << ", rounded up " << up / static_cast<double>(m));
      CHECK(std::fabs(up / static_cast<double>(m) - static_cast<double>(frac)) <= 6 * se + 1e-7);
    }
    // (b) Random data inside the range: mean(x̂ − x) has standard error <= (s/2)/sqrt(n) (each error lies in
    // (−s, s) with variance s²f(1 − f) <= s²/4); half-to-even on the same data is checked to be a different map.
    const index_t n = index_t{1} << 18;
    std::vector<T> in(static_cast<std::size_t>(n)), out(in.size()), nearest(in.size());
    for (auto& v : in) v = static_cast<T>(random.uniform(-2.9, 4.9));
    fake_quantize(TestType::policy, matrix_view<const T>(in.data(), 64, 4096), p, matrix_view<T>(out.data(), 64, 4096),
                  o);
    fake_quantize(TestType::policy, matrix_view<const T>(in.data(), 64, 4096), p,
                  matrix_view<T>(nearest.data(), 64, 4096));
    long double sum = 0, differ = 0;
    for (std::size_t i = 0; i < in.size(); ++i) {
      sum += static_cast<real>(out[i]) - in[i];
      differ += out[i] != nearest[i] ? 1 : 0;
    }
    const double mean = static_cast<double>(sum / static_cast<real>(n));
    CHECK(std::fabs(mean) <= 6 * (p.scale / 2) / std::sqrt(static_cast<double>(n)));
    CHECK(differ > static_cast<real>(n) / 10);  // about a quarter of the values round the other way
  }
}

TEST_CASE("stochastic rounding is reproducible across backends, threads, strides and slices", "[quant][options]") {
  QSAFE_TEST_RNG(random);
  const index_t rows = 37, cols = 1001, stride = 1003;
  std::vector<float> x(static_cast<std::size_t>(rows * stride)), a(x.size()), b(x.size()), c(x.size()), d(x.size());
  for (auto& v : x) v = static_cast<float>(random.normal(0.0, 4.0));
  const quant_params p = make_qparams<float>({-3.0, 5.0}, 4, quant_mode::asymmetric);
  fake_quant_options o;
  o.rounding = rounding_mode::stochastic;
  o.seed = static_cast<std::uint64_t>(random.integer(0, 1L << 62));
  const matrix_view<const float> xv(x.data(), rows, cols, stride);
  fake_quantize(simd, xv, p, matrix_view<float>(a.data(), rows, cols, stride), o);
  fake_quantize(simd_t{2}, xv, p, matrix_view<float>(b.data(), rows, cols, stride), o);
  fake_quantize(cpu, xv, p, matrix_view<float>(c.data(), rows, cols, stride), o);
  CHECK((a == b));  // no expansion: printing the vectors on failure is slow
  CHECK((a == c));
  // Two slices of rows with their offsets equal the whole tensor.
  const index_t split = 11;
  fake_quantize(simd, matrix_view<const float>(x.data(), split, cols, stride), p,
                matrix_view<float>(d.data(), split, cols, stride), o);
  fake_quant_options rest = o;
  rest.index_offset = static_cast<std::uint64_t>(split * cols);
  fake_quantize(cpu, matrix_view<const float>(x.data() + split * stride, rows - split, cols, stride), p,
                matrix_view<float>(d.data() + split * stride, rows - split, cols, stride), rest);
  CHECK((a == d));
  // Per channel along rows with one parameter set per row equals per tensor row by row with the row's offset.
  std::vector<quant_params> per_row;
  for (index_t r = 0; r < rows; ++r)
    per_row.push_back(make_qparams<float>({-random.uniform(0, 4), random.uniform(0, 4)}, 5, quant_mode::asymmetric));
  fake_quantize(simd_t{2}, xv, std::span<const quant_params>(per_row), channel_axis::row,
                matrix_view<float>(b.data(), rows, cols, stride), o);
  for (index_t r = 0; r < rows; ++r) {
    fake_quant_options row = o;
    row.index_offset = static_cast<std::uint64_t>(r * cols);
    fake_quantize(cpu, matrix_view<const float>(x.data() + r * stride, 1, cols), per_row[static_cast<std::size_t>(r)],
                  matrix_view<float>(c.data() + r * stride, 1, cols), row);
  }
  CHECK((b == c));
  // A different seed is a different draw.
  fake_quant_options other = o;
  other.seed = o.seed + 1;
  fake_quantize(simd, xv, p, matrix_view<float>(b.data(), rows, cols, stride), other);
  CHECK_FALSE((a == b));
}

TEMPLATE_TEST_CASE("STE masks at the boundaries: rounded code, float range, unclipped", "[quant][options][ste]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  // s = 0.5, z = 3, codes [0, 15]: the float range is [(0 − 3)·0.5, (15 − 3)·0.5] = [−1.5, 6].
  const quant_params p{0.5, 3, 0, 15};
  constexpr T inf = std::numeric_limits<T>::infinity();
  const std::vector<T> x{T(6.0), T(6.2), T(6.25), T(6.3), T(-1.5), T(-1.7), T(-1.75), T(-1.8), T(2.0), inf, -inf};
  // unclamped codes 3 + round(2x): 15, 3 + 12.4 → 15, 3 + 12.5 → 15 (even) or 16 (away), 3 + 12.6 → 16, 0,
  // 3 − 3.4 → 0, 3 − 3.5 → −1 (even and away: −4), 3 − 3.6 → −1, 7, +inf, −inf
  std::vector<bool> code_mask{true, true, true, false, true, true, false, false, true, false, false};
  const std::vector<bool> range_mask{true, false, false, false, true, false, false, false, true, false, false};
  const auto n = static_cast<index_t>(x.size());
  std::vector<T> dy(x.size(), T(2)), dx(x.size());
  for (const rounding_mode rounding : {rounding_mode::half_to_even, rounding_mode::half_away_from_zero}) {
    code_mask[2] = rounding == rounding_mode::half_to_even;  // the tie at the top end
    for (const ste_mask mask : all_masks) {
      INFO(name(rounding) << ", mask " << name(mask));
      fake_quant_options o;
      o.rounding = rounding;
      o.mask = mask;
      fake_quantize_backward(TestType::policy, matrix_view<const T>(x.data(), 1, n), p,
                             matrix_view<const T>(dy.data(), 1, n), matrix_view<T>(dx.data(), 1, n), o);
      for (std::size_t i = 0; i < x.size(); ++i) {
        INFO("x = " << x[i]);
        const bool passes =
            mask == ste_mask::unclipped ? true : (mask == ste_mask::rounded_code ? code_mask[i] : range_mask[i]);
        CHECK(dx[i] == (passes ? T(2) : T(0)));
      }
    }
  }
}

TEMPLATE_TEST_CASE("bad input in every rounding mode: infinities and huge values clamp to the end codes, NaN stays",
                   "[quant][options][edge]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  constexpr T inf = std::numeric_limits<T>::infinity(), big = std::numeric_limits<T>::max();
  const quant_params p = make_qparams<T>({-1.0, 2.0}, 8, quant_mode::asymmetric);
  const quant_params sym = make_qparams<T>({-1.0, 2.0}, 8, quant_mode::symmetric, {.narrow_range = true});
  // Huge x/s: values far past 2^31 and 2^63 (an int conversion there would be undefined), and the largest finite.
  const std::vector<T> x{inf,    -inf,    big,     -big,     T(1e30),  T(-1e30),
                         T(3e9), T(-3e9), T(1e19), T(-1e19), T(1e-40), std::numeric_limits<T>::quiet_NaN()};
  const auto n = static_cast<index_t>(x.size());
  for (const quant_params& params : {p, sym}) {
    for (const rounding_mode rounding : all_roundings) {
      for (const ste_mask mask : all_masks) {
        INFO(name(rounding) << ", mask " << name(mask) << ", codes [" << params.quant_min << ", " << params.quant_max
                            << "]");
        fake_quant_options o;
        o.rounding = rounding;
        o.mask = mask;
        o.seed = 99;
        std::vector<T> y(x.size()), dy(x.size(), T(1)), dx(x.size());
        std::vector<std::int16_t> q(x.size());
        fake_quantize(TestType::policy, matrix_view<const T>(x.data(), 1, n), params, matrix_view<T>(y.data(), 1, n),
                      o);
        fake_quantize_backward(TestType::policy, matrix_view<const T>(x.data(), 1, n), params,
                               matrix_view<const T>(dy.data(), 1, n), matrix_view<T>(dx.data(), 1, n), o);
        quantize(TestType::policy, matrix_view<const T>(x.data(), 1, n), params,
                 matrix_view<std::int16_t>(q.data(), 1, n), o);
        const T s = static_cast<T>(params.scale), z = static_cast<T>(params.zero_point);
        for (std::size_t i = 0; i + 2 < x.size(); ++i) {
          INFO("x = " << x[i]);
          const bool positive = x[i] > 0;
          const std::int32_t end = positive ? params.quant_max : params.quant_min;
          CHECK(y[i] == (static_cast<T>(end) - z) * s);
          CHECK(q[i] == end);
          CHECK(dx[i] == (mask == ste_mask::unclipped ? T(1) : T(0)));
        }
        // A subnormal x rounds to the zero point's neighbourhood (stochastic: z or z + 1, since 0 < x·inv_s < 1).
        CHECK(
            (q[10] == params.zero_point || (rounding == rounding_mode::stochastic && q[10] == params.zero_point + 1)));
        CHECK(std::isnan(y.back()));
        CHECK(q.back() == params.zero_point);
        CHECK(dx.back() == T(0));
      }
    }
  }
}

TEMPLATE_TEST_CASE("narrow range drops one code and keeps the scale formula's level count", "[quant][qparams]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  const qparams_options narrow{.narrow_range = true};
  const quant_params sym = make_qparams<T>({-2.0, 3.0}, 8, quant_mode::symmetric, narrow);
  CHECK(sym.quant_min == -127);
  CHECK(sym.quant_max == 127);
  CHECK(sym.scale == static_cast<double>(T(3) / T(127)));
  CHECK(sym == quant_params{make_qparams<T>({-2.0, 3.0}, 8, quant_mode::symmetric).scale, 0, -127, 127});
  const quant_params unsigned_sym = make_qparams<T>({0.5, 3.0}, 4, quant_mode::symmetric, narrow);
  CHECK(unsigned_sym.quant_min == 0);
  CHECK(unsigned_sym.quant_max == 14);
  CHECK(unsigned_sym.scale == static_cast<double>(T(3) / T(14)));
  const quant_params asym = make_qparams<T>({-1.0, 3.0}, 8, quant_mode::asymmetric, narrow);
  CHECK(asym.quant_min == 0);
  CHECK(asym.quant_max == 254);
  CHECK(asym.scale == static_cast<double>(T(4) / T(254)));
  CHECK(asym.zero_point == static_cast<std::int32_t>(std::nearbyint(T(1) / (T(4) / T(254)))));
  // The symmetric grid: +max and −max are both codes, so fake_quantize(−x) = −fake_quantize(x).
  const std::vector<T> x{T(-3), T(3), T(-2.99), T(2.99), T(-100), T(100)};
  std::vector<T> y(x.size());
  fake_quantize(TestType::policy, matrix_view<const T>(x.data(), 1, 6), sym, matrix_view<T>(y.data(), 1, 6));
  CHECK(y[0] == -y[1]);
  CHECK(y[2] == -y[3]);
  CHECK(y[4] == -y[5]);
  CHECK(y[5] == T(127) * static_cast<T>(sym.scale));
}

TEMPLATE_TEST_CASE("widening the range puts 0 on the grid without moving either end inward", "[quant][qparams]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  int default_clipped = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    const int bits = static_cast<int>(random.integer(2, 16));
    const bool narrow = random.coin(0.3);
    double a = random.normal(0.0, 4.0), b = random.normal(0.0, 4.0);
    if (random.coin(0.1)) a = 0.0;        // one end at 0
    if (random.coin(0.05)) b = a;         // degenerate
    if (random.coin(0.05)) a = b * 1e-7;  // 0 very close to one end
    const value_range range{std::min(a, b), std::max(a, b)};
    const qparams_options widen{.narrow_range = narrow, .alignment = zero_alignment::widen_range};
    const quant_params p = make_qparams<T>(range, bits, quant_mode::asymmetric, widen);
    INFO("trial " << trial << ", bits " << bits << ", narrow " << narrow << ", range [" << range.lo << ", " << range.hi
                  << "], scale " << p.scale << ", zero point " << p.zero_point);
    const T lo = std::min(static_cast<T>(range.lo), T(0)), hi = std::max(static_cast<T>(range.hi), T(0));
    const T s = static_cast<T>(p.scale), z = static_cast<T>(p.zero_point);
    const T grid_lo = (static_cast<T>(p.quant_min) - z) * s, grid_hi = (static_cast<T>(p.quant_max) - z) * s;
    REQUIRE(p.quant_min == 0);
    REQUIRE(p.quant_max == (1 << bits) - 1 - (narrow ? 1 : 0));
    REQUIRE(p.zero_point >= p.quant_min);
    REQUIRE(p.zero_point <= p.quant_max);
    // The grid's ends, as fake_quantize computes them, contain [lo, hi]: nothing observed is clipped.
    REQUIRE(grid_lo <= lo);
    REQUIRE(grid_hi >= hi);
    // 0 is on the grid.
    T zero = 0, out = 1;
    fake_quantize(TestType::policy, matrix_view<const T>(&zero, 1, 1), p, matrix_view<T>(&out, 1, 1));
    REQUIRE(out == T(0));
    // The scale is the smaller of the two one-sided widenings, computed here in long double from the same
    // z candidates: within a few ulps (the division rounded in T, then stepped up until the ends hold).
    const real n = p.quant_max - p.quant_min, s0 = std::max(static_cast<real>((hi - lo) / static_cast<T>(n)),
                                                            static_cast<real>(static_cast<T>(FLT_EPSILON)));
    auto needed = [&](real k) {
      const real below = k >= 1 ? -static_cast<real>(lo) / k : (lo == 0 ? 0 : std::numeric_limits<real>::infinity());
      const real above =
          n - k >= 1 ? static_cast<real>(hi) / (n - k) : (hi == 0 ? 0 : std::numeric_limits<real>::infinity());
      return std::max(below, above);
    };
    const real steps = -static_cast<real>(lo) / static_cast<real>(static_cast<T>(s0));
    const real best = std::max(
        std::min(needed(std::clamp(std::floor(steps), real(0), n)), needed(std::clamp(std::ceil(steps), real(0), n))),
        static_cast<real>(static_cast<T>(FLT_EPSILON)));
    const real eps = std::numeric_limits<T>::epsilon();
    REQUIRE(static_cast<real>(s) >= best * (1 - 4 * eps));
    REQUIRE(static_cast<real>(s) <= best * (1 + 4 * eps));
    // Bound of the docs: s <= s0·n/(n − 2) for n >= 3 (plus the few ulps).
    if (n >= 3) REQUIRE(static_cast<real>(s) <= s0 * n / (n - 2) * (1 + 4 * eps));
    // The default (rounding z) moves an end inward now and then; count that it happens in this sample.
    const quant_params d = make_qparams<T>(range, bits, quant_mode::asymmetric, {.narrow_range = narrow});
    const T ds = static_cast<T>(d.scale), dz = static_cast<T>(d.zero_point);
    default_clipped += ((static_cast<T>(d.quant_min) - dz) * ds > lo || (static_cast<T>(d.quant_max) - dz) * ds < hi);
  }
  CHECK(default_clipped > 100);  // about half the ranges: the shift is uniform in (−s/2, s/2)
  // Symmetric ranges already have z = 0: the option changes nothing.
  CHECK(make_qparams<T>({-1.0, 3.0}, 8, quant_mode::symmetric, {.alignment = zero_alignment::widen_range}) ==
        make_qparams<T>({-1.0, 3.0}, 8, quant_mode::symmetric));
}

TEST_CASE("option errors name the argument and write nothing", "[quant][options][errors]") {
  std::vector<float> x(12, 1.0f), y(12, 7.0f);
  const matrix_view<const float> xv(x.data(), 3, 4);
  const matrix_view<float> yv(y.data(), 3, 4);
  fake_quant_options bad_rounding;
  bad_rounding.rounding = static_cast<rounding_mode>(9);
  fake_quant_options bad_mask;
  bad_mask.mask = static_cast<ste_mask>(-1);
  CHECK_THROWS_WITH(fake_quantize(simd, xv, quant_params{}, yv, bad_rounding),
                    Contains("fake_quantize") && Contains("'options'") && Contains("rounding"));
  CHECK_THROWS_WITH(fake_quantize_backward(cpu, xv, quant_params{}, xv, yv, bad_mask),
                    Contains("'options'") && Contains("mask"));
  const std::vector<quant_params> four(4);
  CHECK_THROWS_WITH(fake_quantize(cpu, xv, std::span<const quant_params>(four), channel_axis::column, yv, bad_rounding),
                    Contains("'options'"));
  std::vector<std::uint8_t> q(12, 7);
  CHECK_THROWS_WITH(quantize(simd, xv, quant_params{}, matrix_view<std::uint8_t>(q.data(), 3, 4), bad_rounding),
                    Contains("quantize") && Contains("'options'"));
  CHECK_THROWS_WITH(
      make_qparams<float>({0, 1}, 8, quant_mode::asymmetric, {.alignment = static_cast<zero_alignment>(3)}),
      Contains("make_qparams") && Contains("'options'"));
  CHECK(std::all_of(y.begin(), y.end(), [](float v) { return v == 7.0f; }));
  CHECK(std::all_of(q.begin(), q.end(), [](std::uint8_t v) { return v == 7; }));
}
