// The CUDA forward of every variant and row-length mode against the CPU reference (qsafe::cpu on the same values),
// for float, half and bfloat16, on fresh random inputs of awkward sizes; outputs are poisoned first, so every
// element must be written, and nothing outside the view may be.

#include <catch2/catch.hpp>
#include <cmath>

#include "qsafe/cuda/softmax.cuh"
#include "support.cuh"

using namespace qsafe;
using namespace qsafe::test;
using namespace qsafe::test::gpu;

TEMPLATE_TEST_CASE("CUDA forward matches the CPU reference for every variant, length mode and shape",
                   "[cuda][softmax][forward]", QSAFE_CUDA_ELEMENTS) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  index_t checked = 0;
  for (const index_t cols : gpu_test_columns(random)) {
    for (const length_kind kind : all_length_kinds) {
      for_each_variant([&](const auto& variant) {
        const gpu_shape s = random_gpu_shape<T>(random, cols);
        const length_data lengths = length_data::make(random, kind, s.rows, s.cols);
        const length_modes modes(lengths);
        const bool with_neg_inf = random.coin(0.3), save_p = random.coin();
        INFO("cols " << cols << ", rows " << s.rows << ", stride " << s.stride << ", misalign " << s.misalign
                     << ", lengths " << name(kind) << ", -inf keys " << with_neg_inf << ", save p " << save_p);

        test_matrix<T> x(s), y(s), p(s);
        fill_scores(random, x, with_neg_inf);
        std::vector<float> want_y(x.host.size()), want_p(x.host.size());
        const matrix_view<float> want_yv(want_y.data(), s.rows, s.cols, s.stride),
            want_pv(want_p.data(), s.rows, s.cols, s.stride);
        modes.visit([&](const auto& host_mode, const auto& device_mode) {
          softmax_forward(cpu, variant, host_mode, x.host_view(), want_yv, want_pv);
          if (save_p) {
            softmax_forward(cuda_t{}, variant, device_mode, x.cview(), y.view(), p.view());
          } else {
            softmax_forward(cuda_t{}, variant, device_mode, x.cview(), y.view());
          }
        });
        check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
        REQUIRE(y.download());
        REQUIRE(p.download());

        modes.visit([&](const auto& host_mode, const auto&) {
          for (index_t r = 0; r < s.rows; ++r) {
            const index_t length = host_mode.row_length(r, s.cols);
            const reference_params params = params_for(variant, length);
            const double a = params.clips ? static_cast<double>(params.zeta - params.gamma) : 1.0;
            const double b = params.clips ? static_cast<double>(params.gamma) : 0.0;
            const double m = row_max(x.row(r), length);
            // Each element's conditions are evaluated first, and the message and assertions built only when one
            // fails: built for every element, they cost more than the kernels and the CPU reference together.
            for (index_t c = 0; c < s.cols; ++c) {
              if (c >= length) {
                // masked keys are exactly zero (and never NaN)
                if (!(y(r, c) == 0.0f && (!save_p || p(r, c) == 0.0f))) {
                  INFO("row " << r << " of length " << length << ", col " << c << ": x " << x(r, c));
                  REQUIRE(y(r, c) == 0.0f);
                  if (save_p) REQUIRE(p(r, c) == 0.0f);
                }
                continue;
              }
              const double ref_p = want_pv(r, c), ref_y = want_yv(r, c);
              // fp32 error of p propagated through v = a·p + b and the 1-Lipschitz clip, then the rounding to T;
              // an absolute floor for results that underflow (flushed to zero by ex2, or subnormal in T).
              const double err_p = p_error(x(r, c) - m, length);
              const double tol_y = std::fabs(a) * ref_p * err_p + eps_f32 * (std::fabs(a) * ref_p + 2 * std::fabs(b)) +
                                   element_traits<T>::eps * std::fabs(ref_y) + element_traits<T>::underflow;
              const double tol_p = ref_p * err_p + element_traits<T>::eps * ref_p + element_traits<T>::underflow;
              const bool y_ok = std::isnan(y(r, c)) == std::isnan(ref_y) &&
                                (std::isnan(ref_y) || std::fabs(y(r, c) - ref_y) <= tol_y);
              const bool p_ok = !save_p || std::isnan(ref_p) || std::fabs(p(r, c) - ref_p) <= tol_p;
              if (!(y_ok && p_ok)) {
                INFO("row " << r << " of length " << length << ", col " << c << ": x " << x(r, c));
                REQUIRE(std::isnan(y(r, c)) == std::isnan(ref_y));
                if (!std::isnan(ref_y)) REQUIRE(std::fabs(y(r, c) - ref_y) <= tol_y);
                if (save_p && !std::isnan(ref_p)) REQUIRE(std::fabs(p(r, c) - ref_p) <= tol_p);
              }
              ++checked;
            }
          }
        });
      });
    }
  }
  CHECK(checked > 10000);
}
