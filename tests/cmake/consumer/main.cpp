// Uses qsafe as a user would; exits non-zero if the result is wrong.
#include <qsafe/qsafe.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  std::vector<float> x{0.1f, 0.2f, 0.3f, 0.4f}, y(4);
  qsafe::softmax_forward(qsafe::simd, qsafe::normalized_clipped_softmax{1.0, 0.9}, qsafe::full_rows{},
                         qsafe::matrix_view<const float>(x.data(), 1, 4), qsafe::view(std::span<float>(y), 4));
  float sum = 0;
  for (float v : y) sum += v;
  std::printf("NCS row sum %.6f (beta 0.9 when nothing clips)\n", static_cast<double>(sum));
  return std::fabs(sum - 0.9f) < 1e-5f ? 0 : 1;
}
