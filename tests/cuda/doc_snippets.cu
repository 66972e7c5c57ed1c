// The \code snippets of qsafe/cuda/stats.cuh and qsafe/cuda/estimators.cuh, compiled as written and run on a small
// device tensor, their results checked against qsafe::cpu.

#include <catch2/catch.hpp>
#include <utility>
#include <vector>

#include "qsafe/cuda/estimators.cuh"
#include "qsafe/cuda/stats.cuh"
#include "support.cuh"

using namespace qsafe::test;
using namespace qsafe::test::gpu;

TEST_CASE("CUDA statistics and estimator doc snippets compile and give the CPU's results", "[cuda][doc]") {
  QSAFE_TEST_RNG(random);
  test_matrix<float> data(gpu_shape{8, 512, 512, 0});
  fill_normal(random, data);
  const qsafe::matrix_view<const float> x = data.cview(), host = std::as_const(data).host_view();
  cudaStream_t stream = nullptr;
  qsafe::moments all = qsafe::tensor_moments(qsafe::cpu, host);
  {
    // qsafe/cuda/stats.cuh
    const qsafe::moments m = qsafe::tensor_moments(qsafe::cuda_t{stream}, x);  // x: matrix_view of device memory
    double k = m.kurtosis(), inf_norm = m.inf_norm();
    all.merge(m);  // the same mergeable accumulator as the host backends
    CHECK(inf_norm == qsafe::tensor_moments(qsafe::cpu, host).inf_norm());
    CHECK(k == Approx(qsafe::tensor_moments(qsafe::cpu, host).kurtosis()).epsilon(1e-4));
    CHECK(all.count == 2 * 8 * 512);
  }
  {
    // qsafe/cuda/estimators.cuh
    qsafe::cuda_workspace scratch;  // reused from call to call
    qsafe::cuda_t gpu{stream, &scratch};
    std::vector<qsafe::value_range> r = qsafe::channel_ranges(gpu, x, {qsafe::channel_axis::column, x.cols});
    std::vector<double> tails = qsafe::percentiles(gpu, x, std::vector<double>{0.001, 99.999});
    qsafe::mse_search_result best = qsafe::mse_search(gpu, x, 8, qsafe::quant_mode::symmetric);
    CHECK(r.size() == 512);
    CHECK(tails == qsafe::percentiles(qsafe::cpu, host, std::vector<double>{0.001, 99.999}));
    qsafe::mse_estimator<float> want(8, qsafe::quant_mode::symmetric);
    qsafe::calibrate(qsafe::cpu, want, host);
    CHECK(best.losses.size() == 100);
    CHECK(best.range.hi <= want.ranges()[0].hi * 1.02);  // the same choice up to a near-tie (estimators.cu)
    CHECK(best.range.hi >= want.ranges()[0].hi * 0.98);
  }
}
