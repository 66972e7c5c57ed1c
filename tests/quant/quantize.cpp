// Quantizers against the long-double definition (REFERENCE §2), bit for bit, and their properties: the error
// bound, idempotence, codes in range, zero exactly representable, the STE mask, ties, ±inf and NaN, per channel.

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

namespace {

// Random quantizer: bits in [2, 16], either mode, a random range (sometimes degenerate, sometimes one-sided).
template <class T>
quant_params random_params(rng& random, int& bits, quant_mode& mode) {
  bits = static_cast<int>(random.integer(2, 16));
  mode = random.coin() ? quant_mode::asymmetric : quant_mode::symmetric;
  const double a = random.normal(0.0, 3.0), b = random.normal(0.0, 3.0);
  value_range r{std::min(a, b), std::max(a, b)};
  const long pick = random.integer(0, 5);
  if (pick == 0) r = {0.0, 0.0};
  if (pick == 1) r.lo = std::fabs(r.lo) * 0.1;  // no negative value: symmetric uses unsigned codes
  if (pick == 2) r.hi = -std::fabs(r.hi) * 0.1;
  if (r.lo > r.hi) std::swap(r.lo, r.hi);
  return make_qparams<T>(r, bits, mode);
}

}  // namespace

TEMPLATE_TEST_CASE("fake_quantize and its STE backward equal the long-double definition bit for bit",
                   "[quant][fake_quantize]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (int trial = 0; trial < 200; ++trial) {
    int bits = 0;
    quant_mode mode{};
    const quant_params p = random_params<T>(random, bits, mode);
    const index_t rows = random.integer(1, 4), cols = random.integer(1, 70);
    const std::vector<T> x = random_inputs<T>(random, p, static_cast<std::size_t>(rows * cols));
    std::vector<T> y(x.size()), dy(x.size()), dx(x.size());
    for (auto& g : dy) g = static_cast<T>(random.normal());
    INFO("trial " << trial << ", bits " << bits << ", scale " << p.scale << ", zero point " << p.zero_point
                  << ", codes [" << p.quant_min << ", " << p.quant_max << "], " << rows << " x " << cols);
    fake_quantize(TestType::policy, matrix_view<const T>(x.data(), rows, cols), p,
                  matrix_view<T>(y.data(), rows, cols));
    fake_quantize_backward(TestType::policy, matrix_view<const T>(x.data(), rows, cols), p,
                           matrix_view<const T>(dy.data(), rows, cols), matrix_view<T>(dx.data(), rows, cols));
    const reference_quantizer<T> ref(p);
    for (std::size_t i = 0; i < x.size(); ++i) {
      INFO("x = " << x[i]);
      // Exact: every step is exact but x·inv_s and (q − z)·s, each rounded once in T in both implementations.
      REQUIRE(same(y[i], ref.fake(x[i])));
      REQUIRE(dx[i] == (ref.passes(x[i]) ? dy[i] : T(0)));
    }
  }
}

TEMPLATE_TEST_CASE("quantize gives the codes and dequantize inverts them onto fake_quantize", "[quant][quantize]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (int trial = 0; trial < 100; ++trial) {
    int bits = 0;
    quant_mode mode{};
    const quant_params p = random_params<T>(random, bits, mode);
    const index_t n = random.integer(1, 100);
    std::vector<T> x = random_inputs<T>(random, p, static_cast<std::size_t>(n));
    x[0] = std::numeric_limits<T>::quiet_NaN();
    std::vector<std::int32_t> q(x.size());
    std::vector<T> back(x.size()), fq(x.size());
    INFO("trial " << trial << ", bits " << bits << ", codes [" << p.quant_min << ", " << p.quant_max << "]");
    quantize(TestType::policy, matrix_view<const T>(x.data(), 1, n), p, matrix_view<std::int32_t>(q.data(), 1, n));
    dequantize(TestType::policy, matrix_view<const std::int32_t>(q.data(), 1, n), p, matrix_view<T>(back.data(), 1, n));
    fake_quantize(TestType::policy, matrix_view<const T>(x.data(), 1, n), p, matrix_view<T>(fq.data(), 1, n));
    const reference_quantizer<T> ref(p);
    REQUIRE(q[0] == p.zero_point);  // NaN maps to the code of 0
    REQUIRE(back[0] == T(0));
    for (std::size_t i = 1; i < x.size(); ++i) {
      INFO("x = " << x[i]);
      REQUIRE(q[i] >= p.quant_min);
      REQUIRE(q[i] <= p.quant_max);
      REQUIRE(static_cast<real>(q[i]) == ref.code(x[i]));
      REQUIRE(back[i] == fq[i]);
    }
  }
}

TEMPLATE_TEST_CASE("quantized values are within s/2 inside the range and fake_quantize is idempotent",
                   "[quant][properties]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (int trial = 0; trial < 100; ++trial) {
    int bits = 0;
    quant_mode mode{};
    const quant_params p = random_params<T>(random, bits, mode);
    const std::vector<T> x = random_inputs<T>(random, p, 257);
    std::vector<T> y(x.size()), yy(x.size());
    const auto n = static_cast<index_t>(x.size());
    fake_quantize(TestType::policy, matrix_view<const T>(x.data(), 1, n), p, matrix_view<T>(y.data(), 1, n));
    fake_quantize(TestType::policy, matrix_view<const T>(y.data(), 1, n), p, matrix_view<T>(yy.data(), 1, n));
    const real s = static_cast<real>(static_cast<T>(p.scale)), eps = std::numeric_limits<T>::epsilon();
    const real lo = (p.quant_min - p.zero_point) * s, hi = (p.quant_max - p.zero_point) * s;
    INFO("trial " << trial << ", bits " << bits << ", scale " << p.scale);
    for (std::size_t i = 0; i < x.size(); ++i) {
      INFO("x = " << x[i] << ", y = " << y[i]);
      REQUIRE(yy[i] == y[i]);
      if (x[i] >= lo && x[i] <= hi) {
        // s/2 from the rounding, plus the roundings of x·inv_s (relative eps on |x/s|, i.e. eps·|x| after
        // scaling back) and of (q − z)·s (eps·|y|).
        REQUIRE(std::fabs(static_cast<real>(x[i]) - y[i]) <= s / 2 + eps * (std::fabs(x[i]) + std::fabs(y[i])));
      }
    }
  }
}

TEMPLATE_TEST_CASE("zero is exactly representable and qparams follow PyTorch's formulas", "[quant][qparams]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (int trial = 0; trial < 300; ++trial) {
    const int bits = static_cast<int>(random.integer(2, 16));
    const double a = random.normal(0.0, 4.0), b = random.coin(0.2) ? a : random.normal(0.0, 4.0);
    const value_range r{std::min(a, b), std::max(a, b)};
    INFO("bits " << bits << ", range [" << r.lo << ", " << r.hi << "]");
    const quant_params asym = make_qparams<T>(r, bits, quant_mode::asymmetric);
    const T lo = std::min(static_cast<T>(r.lo), T(0)), hi = std::max(static_cast<T>(r.hi), T(0));
    const T levels = static_cast<T>((1 << bits) - 1);
    const T s = std::max((hi - lo) / levels, static_cast<T>(FLT_EPSILON));
    CHECK(asym.scale == static_cast<double>(s));
    CHECK(asym.quant_min == 0);
    CHECK(asym.quant_max == (1 << bits) - 1);
    CHECK(static_cast<real>(asym.zero_point) ==
          std::clamp(-round_half_even(static_cast<real>(lo / s)), real(0), static_cast<real>(levels)));
    T zero = 0, out = 1;
    fake_quantize(TestType::policy, matrix_view<const T>(&zero, 1, 1), asym, matrix_view<T>(&out, 1, 1));
    CHECK(out == T(0));

    const quant_params sym = make_qparams<T>(r, bits, quant_mode::symmetric);
    CHECK(sym.zero_point == 0);
    if (r.lo >= 0) {
      CHECK(sym.quant_min == 0);
      CHECK(sym.quant_max == (1 << bits) - 1);
      CHECK(sym.scale == static_cast<double>(std::max(static_cast<T>(r.hi) / levels, static_cast<T>(FLT_EPSILON))));
    } else {
      CHECK(sym.quant_min == -(1 << (bits - 1)));
      CHECK(sym.quant_max == (1 << (bits - 1)) - 1);
      const T m = std::max(std::fabs(static_cast<T>(r.lo)), std::fabs(static_cast<T>(r.hi)));
      CHECK(sym.scale == static_cast<double>(std::max(m / static_cast<T>(sym.quant_max), static_cast<T>(FLT_EPSILON))));
    }
  }
  // Degenerate ranges give FLT_EPSILON, never 0 or NaN.
  CHECK(make_qparams<T>({0.0, 0.0}, 8, quant_mode::asymmetric).scale ==
        static_cast<double>(static_cast<T>(FLT_EPSILON)));
  CHECK(make_qparams<T>({0.0, 0.0}, 8, quant_mode::symmetric).scale ==
        static_cast<double>(static_cast<T>(FLT_EPSILON)));
  CHECK(make_qparams<T>({0.0, 0.0}, 8, quant_mode::asymmetric).zero_point == 0);
}

TEMPLATE_TEST_CASE("ties round half to even and the STE mask is inclusive at both code ends", "[quant][ties]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  // s = 0.5: x·inv_s = 2x exactly, so x = k/2 + 1/4 is an exact tie.
  const quant_params p{0.5, 3, 0, 15};
  const std::vector<T> x{T(0.25), T(0.75), T(1.25), T(1.75), T(-0.25), T(-0.75), T(-1.25), T(-1.75),
                         T(6.0),  T(6.25), T(6.5),  T(-1.5), T(-1.75), T(-2.0),  T(6.75),  T(-1.25)};
  // codes: 3 + round(2x): 0.5→0, 1.5→2, 2.5→2, 3.5→4, −0.5→−0, −1.5→−2, −2.5→−2, −3.5→−4, 12, 12.5→12, 13, −3,
  // −3.5→−4, −4, 13.5→14, −2.5→−2
  const std::vector<T> expected_code{3, 5, 5, 7, 3, 1, 1, -1, 15, 15, 16, 0, -1, -1, 17, 1};
  std::vector<T> y(x.size()), dy(x.size(), T(1)), dx(x.size());
  const auto n = static_cast<index_t>(x.size());
  fake_quantize(TestType::policy, matrix_view<const T>(x.data(), 1, n), p, matrix_view<T>(y.data(), 1, n));
  fake_quantize_backward(TestType::policy, matrix_view<const T>(x.data(), 1, n), p,
                         matrix_view<const T>(dy.data(), 1, n), matrix_view<T>(dx.data(), 1, n));
  for (std::size_t i = 0; i < x.size(); ++i) {
    INFO("x = " << x[i] << ", expected code " << expected_code[i]);
    const T code = std::clamp(expected_code[i], T(0), T(15));
    CHECK(y[i] == (code - T(3)) * T(0.5));
    CHECK(dx[i] == ((expected_code[i] >= 0 && expected_code[i] <= 15) ? T(1) : T(0)));
  }
}

TEMPLATE_TEST_CASE("infinities and huge values clamp to the end codes, NaN stays NaN with no gradient", "[quant][edge]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  const quant_params p = make_qparams<T>({-1.0, 2.0}, 8, quant_mode::asymmetric);
  constexpr T inf = std::numeric_limits<T>::infinity(), big = std::numeric_limits<T>::max();
  const std::vector<T> x{inf, -inf, big, -big, T(1e30), T(-1e30), std::numeric_limits<T>::quiet_NaN()};
  std::vector<T> y(x.size()), dy(x.size(), T(1)), dx(x.size());
  std::vector<std::uint8_t> q(x.size());
  const auto n = static_cast<index_t>(x.size());
  fake_quantize(TestType::policy, matrix_view<const T>(x.data(), 1, n), p, matrix_view<T>(y.data(), 1, n));
  fake_quantize_backward(TestType::policy, matrix_view<const T>(x.data(), 1, n), p,
                         matrix_view<const T>(dy.data(), 1, n), matrix_view<T>(dx.data(), 1, n));
  quantize(TestType::policy, matrix_view<const T>(x.data(), 1, n), p, matrix_view<std::uint8_t>(q.data(), 1, n));
  const T s = static_cast<T>(p.scale), z = static_cast<T>(p.zero_point);
  for (std::size_t i = 0; i + 1 < x.size(); ++i) {
    INFO("x = " << x[i]);
    const bool positive = x[i] > 0;
    CHECK(y[i] == (positive ? (T(255) - z) * s : (T(0) - z) * s));
    CHECK(q[i] == (positive ? 255 : 0));
    CHECK(dx[i] == T(0));
  }
  CHECK(std::isnan(y.back()));
  CHECK(dx.back() == T(0));
  CHECK(q.back() == p.zero_point);
}

TEMPLATE_TEST_CASE("per-channel quantizers equal the per-tensor quantizer applied channel by channel",
                   "[quant][per_channel]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (int trial = 0; trial < 40; ++trial) {
    const index_t channels = random.integer(1, 5), repeat = random.integer(1, 3);
    const bool along_columns = random.coin();
    const index_t rows = along_columns ? random.integer(1, 6) : channels * repeat;
    const index_t width = along_columns ? channels : random.integer(1, 40);
    const index_t stride = width + random.integer(0, 3);
    std::vector<quant_params> params;
    for (index_t c = 0; c < channels; ++c) {
      int bits = 0;
      quant_mode mode{};
      params.push_back(random_params<T>(random, bits, mode));
    }
    std::vector<T> x(static_cast<std::size_t>(rows * stride)), y(x.size(), T(7)), dy(x.size()), dx(x.size(), T(7));
    for (auto& v : x) v = static_cast<T>(random.normal(0.0, 3.0));
    for (auto& v : dy) v = static_cast<T>(random.normal());
    std::vector<std::int32_t> q(x.size());
    const matrix_view<const T> xv(x.data(), rows, width, stride);
    const channel_axis axis = along_columns ? channel_axis::column : channel_axis::row;
    INFO("trial " << trial << ", " << rows << " x " << width << ", channels " << channels << " along "
                  << (along_columns ? "columns" : "rows"));
    fake_quantize(TestType::policy, xv, std::span<const quant_params>(params), axis,
                  matrix_view<T>(y.data(), rows, width, stride));
    fake_quantize_backward(TestType::policy, xv, std::span<const quant_params>(params), axis,
                           matrix_view<const T>(dy.data(), rows, width, stride),
                           matrix_view<T>(dx.data(), rows, width, stride));
    quantize(TestType::policy, xv, std::span<const quant_params>(params), axis,
             matrix_view<std::int32_t>(q.data(), rows, width, stride));
    for (index_t r = 0; r < rows; ++r) {
      for (index_t c = 0; c < width; ++c) {
        const quant_params& p = params[static_cast<std::size_t>(along_columns ? c : r % channels)];
        T one_y = 0, one_dx = 0;
        std::int32_t one_q = 0;
        const T* xp = x.data() + r * stride + c;
        const T* dyp = dy.data() + r * stride + c;
        fake_quantize(TestType::policy, matrix_view<const T>(xp, 1, 1), p, matrix_view<T>(&one_y, 1, 1));
        fake_quantize_backward(TestType::policy, matrix_view<const T>(xp, 1, 1), p, matrix_view<const T>(dyp, 1, 1),
                               matrix_view<T>(&one_dx, 1, 1));
        quantize(TestType::policy, matrix_view<const T>(xp, 1, 1), p, matrix_view<std::int32_t>(&one_q, 1, 1));
        const auto i = static_cast<std::size_t>(r * stride + c);
        INFO("row " << r << ", column " << c);
        REQUIRE(y[i] == one_y);
        REQUIRE(dx[i] == one_dx);
        REQUIRE(q[i] == one_q);
      }
      for (index_t c = width; c < stride; ++c) REQUIRE(y[static_cast<std::size_t>(r * stride + c)] == T(7));
    }
  }
}

TEST_CASE("simd with threads gives the same bits as one thread and as the reference", "[quant][threads]") {
  QSAFE_TEST_RNG(random);
  const index_t rows = 37, cols = 1001;
  std::vector<float> x(static_cast<std::size_t>(rows * cols)), a(x.size()), b(x.size()), c(x.size());
  for (auto& v : x) v = static_cast<float>(random.normal(0.0, 4.0));
  const quant_params p = make_qparams<float>({-3.0, 5.0}, 4, quant_mode::asymmetric);
  fake_quantize(simd, matrix_view<const float>(x.data(), rows, cols), p, matrix_view<float>(a.data(), rows, cols));
  fake_quantize(simd_t{2}, matrix_view<const float>(x.data(), rows, cols), p, matrix_view<float>(b.data(), rows, cols));
  fake_quantize(cpu, matrix_view<const float>(x.data(), rows, cols), p, matrix_view<float>(c.data(), rows, cols));
  CHECK((a == b));  // no expansion: printing the vectors on failure is slow
  CHECK((a == c));
}

TEMPLATE_TEST_CASE("code_t is the smallest integer type and quantize fills it for each bit width", "[quant][codes]",
                   QSAFE_HOST_CONFIGS) {
  static_assert(std::is_same_v<code_t<2, false>, std::uint8_t> && std::is_same_v<code_t<8, false>, std::uint8_t>);
  static_assert(std::is_same_v<code_t<8, true>, std::int8_t> && std::is_same_v<code_t<9, true>, std::int16_t>);
  static_assert(std::is_same_v<code_t<16, false>, std::uint16_t> && std::is_same_v<code_t<16, true>, std::int16_t>);
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  std::vector<T> x(300);
  for (auto& v : x) v = static_cast<T>(random.normal(0.0, 2.0));
  const matrix_view<const T> xv(x.data(), 3, 100);
  // Symmetric 8-bit weights: signed codes in int8, the full range reached at the extremes.
  const quant_params sym = make_qparams<T>({-3.0, 3.0}, 8, quant_mode::symmetric);
  std::vector<code_t<8, true>> q8(300);
  quantize(TestType::policy, xv, sym, matrix_view<code_t<8, true>>(q8.data(), 3, 100));
  // Asymmetric 16-bit: unsigned codes in uint16.
  const quant_params asym = make_qparams<T>({-5.0, 5.0}, 16, quant_mode::asymmetric);
  std::vector<code_t<16, false>> q16(300);
  quantize(TestType::policy, xv, asym, matrix_view<code_t<16, false>>(q16.data(), 3, 100));
  const reference_quantizer<T> ref8(sym), ref16(asym);
  for (std::size_t i = 0; i < x.size(); ++i) {
    INFO("x = " << x[i]);
    REQUIRE(static_cast<real>(q8[i]) == ref8.code(x[i]));
    REQUIRE(static_cast<real>(q16[i]) == ref16.code(x[i]));
  }
  T big = 100, small = -100;
  code_t<8, true> end = 0;
  quantize(TestType::policy, matrix_view<const T>(&big, 1, 1), sym, matrix_view<code_t<8, true>>(&end, 1, 1));
  CHECK(end == 127);
  quantize(TestType::policy, matrix_view<const T>(&small, 1, 1), sym, matrix_view<code_t<8, true>>(&end, 1, 1));
  CHECK(end == -128);
}

TEST_CASE("outputs above the streaming threshold (non-temporal stores) give the same bits", "[quant][streaming]") {
  QSAFE_TEST_RNG(random);
  // One misaligned row just over the threshold: a partial head batch, streamed batches, a partial tail.
  const index_t n = static_cast<index_t>(detail::simd::streaming_store_bytes / sizeof(float)) + 5;
  std::vector<float> storage(static_cast<std::size_t>(n + 1)), dy(storage.size()), a(storage.size()), b(a.size());
  for (auto& v : storage) v = static_cast<float>(random.normal(0.0, 3.0));
  for (auto& v : dy) v = static_cast<float>(random.normal());
  const quant_params p = make_qparams<float>({-2.0, 4.0}, 6, quant_mode::asymmetric);
  const matrix_view<const float> x(storage.data() + 1, 1, n), g(dy.data() + 1, 1, n);
  fake_quantize(simd, x, p, matrix_view<float>(a.data() + 1, 1, n));
  fake_quantize(cpu, x, p, matrix_view<float>(b.data() + 1, 1, n));
  CHECK((a == b));  // no expansion: printing 8M floats on failure would take minutes
  fake_quantize_backward(simd, x, p, g, matrix_view<float>(a.data() + 1, 1, n));
  fake_quantize_backward(cpu, x, p, g, matrix_view<float>(b.data() + 1, 1, n));
  CHECK((a == b));  // no expansion: printing 8M floats on failure would take minutes
  // Per channel along columns, with threads.
  const index_t cols = 1000, rows = n / cols;
  std::vector<quant_params> params;
  for (index_t c = 0; c < cols; ++c)
    params.push_back(make_qparams<float>({-random.uniform(0, 4), random.uniform(0, 4)}, 8, quant_mode::asymmetric));
  const matrix_view<const float> xc(storage.data(), rows, cols);
  fake_quantize(simd_t{2}, xc, std::span<const quant_params>(params), channel_axis::column,
                matrix_view<float>(a.data(), rows, cols));
  fake_quantize(cpu, xc, std::span<const quant_params>(params), channel_axis::column,
                matrix_view<float>(b.data(), rows, cols));
  CHECK((a == b));  // no expansion: printing 8M floats on failure would take minutes
}
