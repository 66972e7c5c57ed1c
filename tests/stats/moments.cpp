// Outlier statistics against a long-double two-pass reference on every distribution (including 1e6 + N(0, 1),
// where a naive one-pass formula loses every digit), merge-order independence, per-row results, thread-count
// independence, and the OSP kurtosis.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>
#include <vector>

#include "qsafe/stats.hpp"
#include "support/backends.hpp"
#include "support/distributions.hpp"

using namespace qsafe;
using namespace qsafe::test;

namespace {

using real = long double;

struct reference_moments {
  real n = 0, mean = 0, m2 = 0, m3 = 0, m4 = 0, lo = 0, hi = 0;
};

template <class T>
reference_moments exact_moments(const T* x, std::size_t n) {
  reference_moments r;
  r.n = static_cast<real>(n);
  r.lo = *std::min_element(x, x + n);
  r.hi = *std::max_element(x, x + n);
  for (std::size_t i = 0; i < n; ++i) r.mean += x[i];
  r.mean /= r.n;
  // One refinement step: the long-double sum of 10^5 doubles rounds; the mean of the residuals corrects it.
  real residual = 0;
  for (std::size_t i = 0; i < n; ++i) residual += x[i] - r.mean;
  r.mean += residual / r.n;
  for (std::size_t i = 0; i < n; ++i) {
    const real d = x[i] - r.mean, d2 = d * d;
    r.m2 += d2;
    r.m3 += d2 * d;
    r.m4 += d2 * d2;
  }
  return r;
}

// Relative error bound of the implementation: `cpu` accumulates in double over chunks of 4096 (a few hundred
// eps_double), `simd` float sums <= 16 terms per lane in float before double (~20 eps_float per power sum; 1e-5
// leaves room for the m2^2 in the kurtosis). The mean is compared relative to |mean| + sd, m3 relative to
// m2^1.5 / sqrt(n) (its natural size), since both can be 0.
template <class Config>
real tolerance() {
  using T = typename Config::element;
  if constexpr (std::is_same_v<typename Config::policy_type, simd_t> && std::is_same_v<T, float>) return 1e-5L;
  return 1e-10L;
}

template <class Config>
void check_against(const moments& m, const reference_moments& r) {
  const real tol = tolerance<Config>();
  const real sd = std::sqrt(r.m2 / r.n);
  CHECK(m.count == static_cast<std::int64_t>(r.n));
  CHECK(m.min == static_cast<double>(r.lo));
  CHECK(m.max == static_cast<double>(r.hi));
  CHECK(std::fabs(m.mean - r.mean) <=
        tol * (std::fabs(r.mean) * 1e-3L + sd) + 4 * std::numeric_limits<double>::epsilon() * std::fabs(r.mean));
  CHECK(std::fabs(m.m2 - r.m2) <= tol * r.m2);
  CHECK(std::fabs(m.m3 - r.m3) <= tol * (std::fabs(r.m3) + std::pow(r.m2, 1.5L) / std::sqrt(r.n)));
  CHECK(std::fabs(m.m4 - r.m4) <= tol * r.m4);
  if (r.m2 > 0) {
    const real kurtosis = r.n * r.m4 / (r.m2 * r.m2);
    CHECK(std::fabs(m.kurtosis() - kurtosis) <= 4 * tol * kurtosis);
  } else {
    CHECK(std::isnan(m.kurtosis()));  // zero variance: kurtosis undefined
  }
  CHECK(m.inf_norm() == static_cast<double>(std::max(std::fabs(r.lo), std::fabs(r.hi))));
}

}  // namespace

TEMPLATE_TEST_CASE("tensor moments match the long-double reference on every distribution", "[stats][moments]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (const data_kind kind : all_data_kinds) {
    for (const index_t n :
         {index_t(1), index_t(2), index_t(17), index_t(4096), index_t(4097), random.integer(3, 300000)}) {
      const index_t cols = n % 3 == 0 ? 3 : 1, rows = n / cols;
      const bool strided = random.coin();
      const index_t stride = strided ? cols + 2 : cols;
      std::vector<T> data = make_data<T>(random, kind, n), storage(static_cast<std::size_t>(rows * stride), T(1e30));
      for (index_t r = 0; r < rows; ++r) std::copy_n(data.begin() + r * cols, cols, storage.begin() + r * stride);
      INFO(name(kind) << ", n " << n << ", strided " << strided);
      const moments m = tensor_moments(TestType::policy, matrix_view<const T>(storage.data(), rows, cols, stride));
      check_against<TestType>(m, exact_moments(data.data(), data.size()));
    }
  }
}

TEMPLATE_TEST_CASE("row moments equal the tensor moments of each row and do not depend on threads", "[stats][rows]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  const index_t rows = random.integer(1, 40), cols = random.integer(1, 9000);
  const std::vector<T> x =
      make_data<T>(random, random.coin() ? data_kind::heavy_tailed : data_kind::offset, rows * cols);
  const matrix_view<const T> xv(x.data(), rows, cols);
  std::vector<moments> out(static_cast<std::size_t>(rows));
  row_moments(TestType::policy, xv, std::span<moments>(out));
  INFO(rows << " x " << cols);
  for (index_t r = 0; r < rows; ++r) {
    const moments one = tensor_moments(TestType::policy, matrix_view<const T>(x.data() + r * cols, 1, cols));
    const moments& m = out[static_cast<std::size_t>(r)];
    REQUIRE((m.count == one.count && m.mean == one.mean && m.m2 == one.m2 && m.m3 == one.m3 && m.m4 == one.m4));
    check_against<TestType>(m, exact_moments(x.data() + r * cols, static_cast<std::size_t>(cols)));
  }
  if constexpr (std::is_same_v<typename TestType::policy_type, simd_t>) {
    std::vector<moments> threaded(out.size());
    row_moments(simd_t{2}, xv, std::span<moments>(threaded));
    const moments whole = tensor_moments(simd, xv), whole2 = tensor_moments(simd_t{2}, xv);
    for (std::size_t r = 0; r < out.size(); ++r) REQUIRE(threaded[r].m4 == out[r].m4);
    CHECK((whole.mean == whole2.mean && whole.m2 == whole2.m2 && whole.m3 == whole2.m3 && whole.m4 == whole2.m4));
  }
}

TEMPLATE_TEST_CASE("merging batch moments in any order gives the moments of all the data", "[stats][merge]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (const data_kind kind : all_data_kinds) {
    const index_t n = random.integer(2, 100000);
    const std::vector<T> x = make_data<T>(random, kind, n);
    // Random split points, batches in a random order, merged either left to right or as a random tree.
    std::vector<index_t> cuts{0, n};
    for (int i = 0; i < 6; ++i) cuts.push_back(random.integer(1, n - 1));
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    std::vector<moments> parts;
    for (std::size_t i = 0; i + 1 < cuts.size(); ++i) {
      parts.push_back(
          tensor_moments(TestType::policy, matrix_view<const T>(x.data() + cuts[i], 1, cuts[i + 1] - cuts[i])));
    }
    std::shuffle(parts.begin(), parts.end(), random.engine);
    while (parts.size() > 1) {
      const auto i = static_cast<std::size_t>(random.integer(0, static_cast<long>(parts.size()) - 2));
      parts[i].merge(parts[i + 1]);
      parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    }
    parts[0].merge(moments{});  // the empty accumulator is the identity
    INFO(name(kind) << ", n " << n << ", " << cuts.size() - 1 << " batches");
    check_against<TestType>(parts[0], exact_moments(x.data(), x.size()));
  }
}

TEMPLATE_TEST_CASE("OSP excess kurtosis is the row average of the clipped uncentred ratio", "[stats][osp]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  const index_t rows = random.integer(1, 20), cols = random.integer(16, 2000);
  for (const data_kind kind : {data_kind::normal, data_kind::heavy_tailed}) {
    std::vector<T> x = make_data<T>(random, kind, rows * cols);
    if (random.coin()) {  // uniform rows have negative excess kurtosis: clipped to 0
      for (auto& v : x) v = static_cast<T>(random.uniform(-1.0, 1.0));
    }
    real expected = 0;
    for (index_t r = 0; r < rows; ++r) {
      const reference_moments m = exact_moments(x.data() + r * cols, static_cast<std::size_t>(cols));
      real raw4 = 0;
      for (index_t c = 0; c < cols; ++c)
        raw4 += std::pow(static_cast<real>(x[static_cast<std::size_t>(r * cols + c)]), 4);
      const real var = m.m2 / m.n;
      expected += std::max(real(0), raw4 / m.n / (var * var) - 3);
    }
    expected /= static_cast<real>(rows);
    INFO(name(kind) << ", " << rows << " x " << cols);
    const double got = osp_excess_kurtosis(TestType::policy, matrix_view<const T>(x.data(), rows, cols));
    // Expanding mean(x^4) from central moments cancels terms of size mu^4 / sigma^4 (~1 here): absolute error.
    CHECK(std::fabs(got - expected) <= 10 * tolerance<TestType>() * (1 + expected));
  }
}

TEST_CASE("a constant tensor has zero variance and an undefined kurtosis, never a crash", "[stats][edge]") {
  const std::vector<float> x(1000, 3.5f);
  const moments m = tensor_moments(simd, matrix_view<const float>(x.data(), 10, 100));
  CHECK(m.mean == 3.5);
  CHECK(m.m2 == 0.0);
  CHECK(m.m4 == 0.0);
  CHECK(std::isnan(m.kurtosis()));
  CHECK(m.inf_norm() == 3.5);
}
