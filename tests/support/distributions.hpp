#pragma once
// Data distributions the quantizer, estimator and statistics tests share: normal, heavy-tailed with planted
// outliers, constant, tiny and offset by 1e6.

#include <cmath>
#include <vector>

#include "qsafe/matrix_view.hpp"
#include "support/random.hpp"

namespace qsafe::test {

// Data shapes the estimator and statistics tests share.
enum class data_kind { normal, heavy_tailed, constant, tiny, offset };
inline constexpr data_kind all_data_kinds[] = {data_kind::normal, data_kind::heavy_tailed, data_kind::constant,
                                               data_kind::tiny, data_kind::offset};
inline const char* name(data_kind k) {
  switch (k) {
    case data_kind::normal:
      return "normal";
    case data_kind::heavy_tailed:
      return "heavy-tailed with planted outliers";
    case data_kind::constant:
      return "constant";
    case data_kind::tiny:
      return "tiny (1e-30 scale)";
    case data_kind::offset:
      return "1e6 + N(0, 1)";
  }
  return "?";
}

template <class T>
std::vector<T> make_data(rng& random, data_kind kind, index_t n) {
  std::vector<T> v(static_cast<std::size_t>(n));
  const double constant = random.normal(0.0, 5.0);
  for (auto& x : v) {
    switch (kind) {
      case data_kind::normal:
        x = static_cast<T>(random.normal(0.3, 2.0));
        break;
      case data_kind::heavy_tailed: {
        // Student-t-like tails (normal over a random spread) plus rare outliers 100-1000x the bulk.
        const double spread = std::exp(random.normal(0.0, 1.0));
        x = static_cast<T>(random.coin(0.002) ? random.uniform(-1000.0, 1000.0) : random.normal(0.0, spread));
        break;
      }
      case data_kind::constant:
        x = static_cast<T>(constant);
        break;
      case data_kind::tiny:
        x = static_cast<T>(1e-30 * random.normal(0.0, 1.0));
        break;
      case data_kind::offset:
        x = static_cast<T>(1e6 + random.normal(0.0, 1.0));
        break;
    }
  }
  return v;
}

}  // namespace qsafe::test
