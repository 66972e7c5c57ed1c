// "No worse than PyTorch": on the data of tests/golden/histogram_data.bin (normal, Student-t with 3 degrees of
// freedom, planted outliers; written by tests/golden/generate_histogram_golden.py), each histogram estimator's
// choice gives a squared fake-quantization error on the data no larger than that of the qparams
// torch.ao.quantization.HistogramObserver (torch 2.11) returned for the same bit width (8 and 4, asymmetric).

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "qsafe/histogram_estimators.hpp"
#include "qsafe/quant.hpp"
#include "quant/golden_records.hpp"

using namespace qsafe;

namespace {

struct observer_golden {
  std::string data;
  int bits = 0;
  quant_params params;
  double error = 0.0;  // Σ (x − x̂)² under PyTorch's qparams, float64
};

struct golden {
  std::map<std::string, std::vector<float>> data;
  std::vector<observer_golden> observers;
};

golden read_golden() {
  golden g;
  std::ifstream binary(std::string(QSAFE_GOLDEN_DIR) + "/histogram_data.bin", std::ios::binary);
  REQUIRE(binary.good());
  for (const test::record& r : test::read_golden("histogram_observer.txt")) {
    if (r.key == "data") {
      const auto n = static_cast<std::size_t>(std::stoull(r.values.at(1)));
      std::vector<float> values(n);
      std::vector<char> bytes(n * 4);
      binary.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      REQUIRE(binary.good());
      std::memcpy(values.data(), bytes.data(), bytes.size());  // little-endian float32, as this machine
      g.data[r.values.at(0)] = std::move(values);
    } else if (r.key == "observer") {  // data bits quant_min quant_max lo hi scale zero_point error
      observer_golden o;
      o.data = r.values.at(0);
      o.bits = r.integer(1);
      o.params = {r.number(6), r.integer(7), r.integer(2), r.integer(3)};
      o.error = r.number(8);
      g.observers.push_back(o);
    }
  }
  return g;
}

// Σ (x − fake_quantize(x))² in double.
double data_error(const std::vector<float>& x, const quant_params& p) {
  const auto n = static_cast<index_t>(x.size());
  std::vector<float> y(x.size());
  fake_quantize(simd, matrix_view<const float>(x.data(), 1, n), p, matrix_view<float>(y.data(), 1, n));
  double sum = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double e = static_cast<double>(x[i]) - static_cast<double>(y[i]);
    sum += e * e;
  }
  return sum;
}

}  // namespace

TEST_CASE("the golden error of PyTorch's HistogramObserver qparams is reproduced", "[histogram][golden]") {
  const golden g = read_golden();
  REQUIRE(g.observers.size() == 6);
  for (const observer_golden& o : g.observers) {
    INFO(o.data << " " << o.bits << " bits");
    // fake_quantize equals PyTorch's bit for bit (tests/quant/golden.cpp); the sums differ only in order.
    REQUIRE(data_error(g.data.at(o.data), o.params) == Approx(o.error).epsilon(1e-12));
  }
}

TEST_CASE("each histogram estimator's error on the data is no worse than PyTorch's HistogramObserver's",
          "[histogram][golden]") {
  const golden g = read_golden();
  for (const observer_golden& o : g.observers) {
    const std::vector<float>& x = g.data.at(o.data);
    const matrix_view<const float> view(x.data(), 1, static_cast<index_t>(x.size()));
    const quant_mode mode = quant_mode::asymmetric;
    histogram_mse_estimator<float> mse(o.bits, mode);
    histogram_sqnr_estimator<float> sqnr(o.bits, mode);
    histogram_kl_estimator<float> kl(o.bits, mode);
    calibrate(simd, mse, view);
    calibrate(simd, sqnr, view);
    calibrate(simd, kl, view);
    const double e_mse = data_error(x, mse.qparams(o.bits, mode));
    const double e_sqnr = data_error(x, sqnr.qparams(o.bits, mode));
    const double e_kl = data_error(x, kl.qparams(o.bits, mode));
    histogram_percentile_estimator<float> percentile(99.99);
    calibrate(simd, percentile, view);
    const double e_percentile = data_error(x, percentile.qparams(o.bits, mode));
    INFO(o.data << " " << o.bits << " bits: PyTorch " << o.error << ", mse " << e_mse << ", sqnr(3) " << e_sqnr
                << ", kl " << e_kl << ", percentile 99.99 " << e_percentile);
    // The MSE and SQNR searches: no tolerance (deterministic data; the margins are 0.07% to 81%, docs/quantization.md).
    CHECK(e_mse <= o.error);
    CHECK(e_sqnr <= o.error);
    // KL and the percentile optimize other criteria: they clip the planted outliers or the Student-t tails, which
    // costs squared error. Their errors are recorded in docs/quantization.md, not asserted against PyTorch's; what
    // holds for them is that the MSE search beats them too.
    CHECK(e_mse <= e_kl);
    CHECK(e_mse <= e_percentile);
  }
}
