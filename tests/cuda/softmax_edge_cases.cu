// The numeric edge cases of REFERENCE §1 on the GPU (fully masked rows, all -inf, NaN, huge scores, L = 1),
// in-place operation, determinism, and argument / CUDA error reporting.

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>

#include "qsafe/cuda/softmax.cuh"
#include "support.cuh"

using namespace qsafe;
using namespace qsafe::test;
using namespace qsafe::test::gpu;
using Catch::Matchers::Contains;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();

// Special rows, cols = 37 (an odd length: the packet tail runs too). Row lengths from a padded mode.
template <class T>
void fill_special_rows(test_matrix<T>& x, std::vector<std::int32_t>& lengths) {
  const float huge = round_to<T>(std::is_same_v<T, __half> ? 60000.0f : 1e30f);
  const index_t cols = x.shape.cols;
  for (index_t c = 0; c < cols; ++c) {
    const float ramp = round_to<T>(0.25f * static_cast<float>(c % 11) - 1.0f);
    x(0, c) = -inf;                                                      // all -inf: fully masked
    x(1, c) = c == 17 ? std::numeric_limits<float>::quiet_NaN() : ramp;  // a NaN key: the row is NaN
    x(2, c) = c % 3 == 0 ? huge : (c % 3 == 1 ? -huge : 0.0f);           // huge scores: no overflow
    x(3, c) = ramp;                                                      // L = 0 (padded)
    x(4, c) = ramp;                                                      // L = 1
    x(5, c) = c % 2 ? -inf : ramp;                                       // -inf keys among valid ones
  }
  lengths = {static_cast<std::int32_t>(cols), static_cast<std::int32_t>(cols), static_cast<std::int32_t>(cols), 0, 1,
             static_cast<std::int32_t>(cols)};
  x.upload();
}

}  // namespace

TEMPLATE_TEST_CASE("CUDA edge cases give the CPU reference's zeros, NaNs and values", "[cuda][softmax][edge]",
                   QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  for (const index_t misalign : {0, 1}) {  // vectorized and single-element kernels
    const gpu_shape s{6, 37, 40, misalign};
    test_matrix<T> x(s), y(s), p(s), dy(s), dx_p(s), dx_x(s);
    std::vector<std::int32_t> lengths;
    fill_special_rows(x, lengths);
    for (index_t r = 0; r < s.rows; ++r)
      for (index_t c = 0; c < s.cols; ++c) dy(r, c) = round_to<T>(1.0f + 0.125f * static_cast<float>(c % 5));
    dy.upload();
    device_buffer<std::int32_t> device_lengths(lengths.size());
    device_lengths.upload(lengths);
    const padded_rows host_mode{lengths},
        device_mode{std::span<const std::int32_t>(device_lengths.data, lengths.size())};

    for_each_variant([&](const auto& variant) {
      INFO("misalign " << misalign << ", zeta " << params_for(variant, 2).zeta << ", gamma "
                       << params_for(variant, 2).gamma);
      softmax_forward(cuda_t{}, variant, device_mode, x.cview(), y.view(), p.view());
      softmax_backward(cuda_t{}, variant, device_mode, p.cview(), dy.cview(), dx_p.view());
      softmax_backward_from_scores(cuda_t{}, variant, device_mode, x.cview(), dy.cview(), dx_x.view());
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
      REQUIRE(y.download());
      REQUIRE(p.download());
      REQUIRE(dx_p.download());
      REQUIRE(dx_x.download());

      std::vector<float> want_y(y.host.size()), want_p(y.host.size()), want_dx_p(y.host.size()),
          want_dx_x(y.host.size());
      const matrix_view<float> wy(want_y.data(), s.rows, s.cols, s.stride), wp(want_p.data(), s.rows, s.cols, s.stride),
          wdp(want_dx_p.data(), s.rows, s.cols, s.stride), wdx(want_dx_x.data(), s.rows, s.cols, s.stride);
      softmax_forward(cpu, variant, host_mode, x.host_view(), wy, wp);
      softmax_backward(cpu, variant, host_mode, p.host_view(), dy.host_view(), wdp);
      softmax_backward_from_scores(cpu, variant, host_mode, x.host_view(), dy.host_view(), wdx);

      // These rows' values are 0, 1, clip values or a two-key softmax: within a few eps_T (relative, floor 1e-6).
      const auto same = [&](float got, float want) {
        if (std::isnan(want)) return std::isnan(got);
        return std::fabs(got - want) <= 8 * element_traits<T>::eps * std::max(1.0f, std::fabs(want)) + 1e-6;
      };
      for (index_t r = 0; r < s.rows; ++r) {
        for (index_t c = 0; c < s.cols; ++c) {
          INFO("row " << r << ", col " << c << ": y " << y(r, c) << " want " << wy(r, c) << ", dx from p " << dx_p(r, c)
                      << " want " << wdp(r, c) << ", dx from x " << dx_x(r, c) << " want " << wdx(r, c));
          CHECK(same(y(r, c), wy(r, c)));
          CHECK(same(p(r, c), wp(r, c)));
          CHECK(same(dx_p(r, c), wdp(r, c)));
          CHECK(same(dx_x(r, c), wdx(r, c)));
        }
      }
      // The documented results, stated directly: fully masked rows are zeros, never NaN; a NaN row is NaN.
      for (index_t c = 0; c < s.cols; ++c) {
        CHECK(y(0, c) == 0.0f);
        CHECK(dx_x(0, c) == 0.0f);
        CHECK(y(3, c) == 0.0f);
        CHECK(dx_p(3, c) == 0.0f);
        CHECK(std::isnan(y(1, c)));
        CHECK(!std::isnan(y(2, c)));
      }
    });
  }
}

TEMPLATE_TEST_CASE("CUDA ops run in place and are deterministic", "[cuda][softmax][alias]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  for (const index_t cols : {100, 3000, 20000}) {
    const gpu_shape s = random_gpu_shape<T>(random, cols);
    INFO("cols " << cols << ", rows " << s.rows << ", stride " << s.stride << ", misalign " << s.misalign);
    test_matrix<T> x(s), y(s), y_again(s), in_place(s), dy(s), dx(s), dx_in_place(s);
    fill_scores(random, x, true);
    fill_normal(random, dy);
    const normalized_clipped_softmax variant{1.0, 0.9};
    const causal_rows mode{};
    in_place.host = x.host;
    in_place.upload();
    dx_in_place.host = dy.host;
    dx_in_place.upload();
    softmax_forward(cuda_t{}, variant, mode, x.cview(), y.view());
    softmax_forward(cuda_t{}, variant, mode, x.cview(), y_again.view());
    softmax_forward(cuda_t{}, variant, mode, in_place.cview(), in_place.view());
    softmax_backward_from_scores(cuda_t{}, variant, mode, x.cview(), dy.cview(), dx.view());
    softmax_backward(cuda_t{}, variant, mode, y.cview(), dx_in_place.cview(), dx_in_place.view());  // dx = dy
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    REQUIRE(y.download());
    REQUIRE(y_again.download());
    REQUIRE(in_place.download());
    REQUIRE(dx_in_place.download());
    test_matrix<T> dx_separate(s);
    softmax_backward(cuda_t{}, variant, mode, y.cview(), dy.cview(), dx_separate.view());
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    REQUIRE(dx_separate.download());
    CHECK(std::memcmp(y.host.data(), y_again.host.data(), y.host.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(y.host.data(), in_place.host.data(), y.host.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(dx_separate.host.data(), dx_in_place.host.data(), dx.host.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("CUDA argument errors name the argument and launch nothing", "[cuda][softmax][errors]") {
  const gpu_shape s{3, 4, 4, 0};
  test_matrix<float> x(s), y(s);
  const matrix_view<float> wrong_shape(y.view().data, 4, 3);
  CHECK_THROWS_WITH(softmax_forward(cuda_t{}, vanilla_softmax{}, full_rows{}, x.cview(), wrong_shape),
                    Contains("softmax_forward") && Contains("'y'") && Contains("shape"));
  CHECK_THROWS_WITH(softmax_forward(cuda_t{}, clipped_softmax{1.0, 0.5}, full_rows{}, x.cview(), y.view()),
                    Contains("variant.gamma"));
  const std::vector<std::int32_t> host_lengths{1, 2, 3};
  CHECK_THROWS_WITH(softmax_forward(cuda_t{}, vanilla_softmax{}, padded_rows{host_lengths}, x.cview(), y.view()),
                    Contains("lengths.lengths") && Contains("host memory"));
  device_buffer<std::int32_t> two(2);
  CHECK_THROWS_WITH(softmax_forward(cuda_t{}, vanilla_softmax{},
                                    padded_rows{std::span<const std::int32_t>(two.data, 2)}, x.cview(), y.view()),
                    Contains("lengths.lengths") && Contains("2 entries"));
  CHECK_THROWS_WITH(
      softmax_backward_from_scores(cuda_t{}, vanilla_softmax{}, full_rows{}, x.cview(), y.cview(), y.view()),
      Contains("'dx'") && Contains("alias"));
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  CHECK(y.download());
  for (const float v : y.host) CHECK(v == test_matrix<float>::poison());  // nothing ran
  // An empty matrix launches nothing and is fine, null or not.
  CHECK_NOTHROW(softmax_forward(cuda_t{}, vanilla_softmax{}, full_rows{}, matrix_view<const float>(nullptr, 0, 4),
                                matrix_view<float>(nullptr, 0, 4)));
}

TEST_CASE("CUDA errors are reported with the op and the failing call", "[cuda][errors]") {
  try {
    detail::cuda::check(cudaErrorInvalidValue, "softmax_forward", "the kernel launch");
    FAIL("no exception");
  } catch (const cuda_error& e) {
    CHECK(e.code() == cudaErrorInvalidValue);
    CHECK_THAT(e.what(), Contains("qsafe::softmax_forward") && Contains("the kernel launch") &&
                             Contains("cudaErrorInvalidValue"));
  }
  // A call that really fails (an impossible allocation) is reported the same way.
  float* nothing = nullptr;
  CHECK_THROWS_AS(detail::cuda::check(cudaMalloc(&nothing, std::size_t{1} << 62), "test", "cudaMalloc"), cuda_error);
  cudaGetLastError();  // clear the allocation failure
}
