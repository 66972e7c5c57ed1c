// CUDA statistics pass against qsafe::cpu on the very values the GPU reads (float, half, bfloat16): every data
// kind of the host tests, awkward shapes (strides and misaligned starts whose padding is poisoned with 12345, so a
// read outside the view shows in min / max), sizes over many blocks; determinism; errors.

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <utility>

#include "qsafe/cuda/stats.cuh"
#include "support.cuh"
#include "support/distributions.hpp"

using namespace qsafe;
using namespace qsafe::test;
using namespace qsafe::test::gpu;
using Catch::Matchers::Contains;

namespace {

// Fills the view with `kind` data rounded to T (the offset kind at 1e3 for half, whose range ends at 65504).
template <class T>
void fill_kind(rng& random, test_matrix<T>& x, data_kind kind) {
  const index_t n = x.shape.rows * x.shape.cols;
  std::vector<double> v = make_data<double>(random, kind, n);
  if (kind == data_kind::offset && std::is_same_v<T, __half>) {
    for (double& d : v) d -= 1e6 - 1e3;
  }
  for (index_t r = 0; r < x.shape.rows; ++r)
    for (index_t c = 0; c < x.shape.cols; ++c)
      x(r, c) = round_to<T>(static_cast<float>(v[static_cast<std::size_t>(r * x.shape.cols + c)]));
  x.upload();
}

// The GPU sums the powers of each tile's deviations from its midrange in fp32 (32 terms for float, 64 for 16-bit
// types: at worst 32·2^-24 = 1.9e-6 / 64·2^-24 = 3.8e-6 relative per sum, typically ~sqrt(terms)·2^-24), then
// works in double; turning a tile's sums about its midrange into central sums can amplify that up to ~8x in a
// skewed tile (equal values and one apart). 2e-5 relative, as the host tests allow their simd backend 1e-5: a
// proven bound for float tiles, for 16-bit ones a tested one (the worst case is not); the CPU reference (double) is
// ~1e-13. The mean relative to the spread (its error is that of sum(d)/n, d the deviations); m3 relative to
// sqrt(m2·m4), which bounds sum |d|^3 (Cauchy-Schwarz), since m3 can be 0.
void check_close(const moments& m, const moments& want) {
  constexpr double tol = 2e-5;
  const double n = static_cast<double>(want.count), sd = std::sqrt(want.m2 / n);
  CHECK(m.count == want.count);
  CHECK(m.min == want.min);
  CHECK(m.max == want.max);
  CHECK(m.inf_norm() == want.inf_norm());
  CHECK(std::fabs(m.mean - want.mean) <= tol * (sd + (want.max - want.min)) + 4e-16 * std::fabs(want.mean));
  CHECK(std::fabs(m.m2 - want.m2) <= tol * want.m2);
  CHECK(std::fabs(m.m3 - want.m3) <= tol * std::sqrt(want.m2 * want.m4));
  CHECK(std::fabs(m.m4 - want.m4) <= tol * want.m4);
  if (want.m2 > 0) {
    CHECK(std::fabs(m.kurtosis() - want.kurtosis()) <= 4 * tol * want.kurtosis());
  } else {
    CHECK(std::isnan(m.kurtosis()));
  }
}

}  // namespace

TEMPLATE_TEST_CASE("CUDA tensor moments match the CPU reference on every distribution and shape",
                   "[cuda][stats][moments]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  cuda_workspace workspace;
  int checked = 0;
  for (const data_kind kind : all_data_kinds) {
    for (const index_t cols : {1L, 3L, 17L, 1000L, 4099L, 9000L, random.integer(2, 70000)}) {
      const gpu_shape s = random_gpu_shape<T>(random, cols);
      INFO(name(kind) << ", rows " << s.rows << ", cols " << cols << ", stride " << s.stride << ", misalign "
                      << s.misalign);
      test_matrix<T> x(s);
      fill_kind(random, x, kind);
      const moments m = tensor_moments(some_policy(random, workspace), x.cview());
      check_close(m, tensor_moments(cpu, std::as_const(x).host_view()));
      ++checked;
    }
  }
  CHECK(checked == 35);
}

TEMPLATE_TEST_CASE("CUDA tensor moments of millions of values over many blocks match the CPU and are deterministic",
                   "[cuda][stats][moments][large]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  // One long contiguous row (the flattened walk, 1056 blocks) and a strided matrix (rows over blockIdx.y).
  for (const gpu_shape s : {gpu_shape{1, 3000017, 3000017, 0}, gpu_shape{613, 4111, 4120, 0}}) {
    const data_kind kind = random.coin() ? data_kind::heavy_tailed : data_kind::normal;
    INFO(name(kind) << ", rows " << s.rows << ", cols " << s.cols << ", stride " << s.stride);
    test_matrix<T> x(s);
    fill_kind(random, x, kind);
    const moments m = tensor_moments(cuda_t{}, x.cview());
    check_close(m, tensor_moments(cpu, std::as_const(x).host_view()));
    // Again, through a workspace that an unrelated call sized first: the same bits.
    cuda_workspace workspace;
    (void)tensor_moments(cuda_t{nullptr, &workspace}, matrix_view<const T>(x.cview().data, 1, 5));
    const moments again = tensor_moments(cuda_t{nullptr, &workspace}, x.cview());
    CHECK((again.mean == m.mean && again.m2 == m.m2 && again.m3 == m.m3 && again.m4 == m.m4));
  }
}

TEST_CASE("CUDA tensor moments of values near the float limits are finite and match the CPU",
          "[cuda][stats][moments][edge]") {
  QSAFE_TEST_RNG(random);
  // Spreads near FLT_MAX (squares overflow float: the scaling must hold them) and near the smallest normals.
  for (const double scale : {3.0e38, 1.0e-37}) {
    test_matrix<float> x(gpu_shape{3, 1000, 1000, 0});
    for (index_t r = 0; r < 3; ++r)
      for (index_t c = 0; c < 1000; ++c) x(r, c) = static_cast<float>(scale * random.uniform(-1.0, 1.0));
    x(1, 7) = static_cast<float>(scale);
    x.upload();
    INFO("scale " << scale);
    const moments m = tensor_moments(cuda_t{}, x.cview());
    REQUIRE(std::isfinite(m.m4));
    check_close(m, tensor_moments(cpu, std::as_const(x).host_view()));
  }
}

TEMPLATE_TEST_CASE("CUDA tensor moments of spreads around the unscaled window [2^-30, 2^30) match the CPU",
                   "[cuda][stats][moments][edge]", float, __nv_bfloat16) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  // Tiles whose spread is inside the window sum the deviations as they are; outside it, scaled by 2^-e. Spreads
  // straddling either end put tiles of both kinds in one tensor, centred and off-centre.
  for (const int e : {-32, -31, -30, -29, 28, 29, 30, 31}) {
    for (const double offset : {0.0, 3.0}) {
      const double spread = std::ldexp(1.0, e);
      test_matrix<T> x(gpu_shape{3, 4099, 4099, 0});
      for (index_t r = 0; r < 3; ++r)
        for (index_t c = 0; c < 4099; ++c)
          x(r, c) = round_to<T>(static_cast<float>(spread * (offset + random.uniform(-1.0, 1.0))));
      x.upload();
      INFO("spread 2^" << e << ", offset " << offset << " spreads");
      check_close(tensor_moments(cuda_t{}, x.cview()), tensor_moments(cpu, std::as_const(x).host_view()));
    }
  }
}

TEST_CASE("CUDA tensor moments run on the given stream", "[cuda][stats][stream]") {
  QSAFE_TEST_RNG(random);
  cudaStream_t stream;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  test_matrix<float> x(gpu_shape{7, 3001, 3004, 0});
  fill_kind(random, x, data_kind::normal);
  const moments m = tensor_moments(cuda_t{stream}, x.cview());
  check(cudaStreamDestroy(stream), "cudaStreamDestroy");
  check_close(m, tensor_moments(cpu, std::as_const(x).host_view()));
}

TEMPLATE_TEST_CASE("CUDA tensor moments reject NaN and infinities with their count, and empty tensors",
                   "[cuda][stats][errors]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  test_matrix<T> x(gpu_shape{5, 1001, 1003, 1});
  fill_kind(random, x, data_kind::normal);
  const index_t bad = random.integer(1, 4);
  for (index_t i = 0; i < bad; ++i) {
    x(random.integer(0, 4), random.integer(0, 1000)) =
        i % 2 ? std::numeric_limits<float>::quiet_NaN() : -std::numeric_limits<float>::infinity();
  }
  x.upload();
  const index_t want =
      static_cast<index_t>(std::count_if(x.host.begin(), x.host.end(), [](float v) { return !std::isfinite(v); }));
  CHECK_THROWS_WITH(tensor_moments(cuda_t{}, x.cview()),
                    Contains("'x'") && Contains("contains " + std::to_string(want) + " NaN or infinite"));
  CHECK_THROWS_WITH(tensor_moments(cuda_t{}, matrix_view<const T>(x.cview().data, 0, 5)),
                    Contains("tensor_moments") && Contains("empty"));
}
