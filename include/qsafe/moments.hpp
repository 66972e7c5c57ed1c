#pragma once
/// \file
/// `qsafe::moments`: a mergeable accumulator of count, min, max, mean and the central moment sums M2..M4
/// (REFERENCE §3, docs/statistics.md). Two accumulators over disjoint data merge with the pairwise update
/// formulas (Chan et al.; Pébay 2008), so batches, threads and GPU blocks combine in any order with the same
/// result up to rounding, and the result stays accurate when all values share a large offset (1e6 + N(0, 1)).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace qsafe {

struct moments {
  std::int64_t count = 0;
  double mean = 0.0;
  double m2 = 0.0;  ///< sum of (x − mean)^2
  double m3 = 0.0;  ///< sum of (x − mean)^3
  double m4 = 0.0;  ///< sum of (x − mean)^4
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();

  /// From the power sums `s_k = sum (x − shift)^k` of `n` values (the kernels' per-chunk result).
  static moments from_power_sums(std::int64_t n, double shift, double s1, double s2, double s3, double s4, double lo,
                                 double hi) {
    moments m;
    if (n == 0) return m;
    const double count = static_cast<double>(n), a = s1 / count;
    m.count = n;
    m.mean = shift + a;
    m.m2 = std::max(s2 - a * s1, 0.0);
    m.m3 = s3 - 3.0 * a * s2 + 2.0 * count * a * a * a;
    m.m4 = std::max(s4 - 4.0 * a * s3 + 6.0 * a * a * s2 - 3.0 * count * a * a * a * a, 0.0);
    m.min = lo;
    m.max = hi;
    return m;
  }

  /// Adds the statistics of disjoint data `b` (pairwise update formulas).
  moments& merge(const moments& b) {
    if (b.count == 0) return *this;
    if (count == 0) return *this = b;
    const double na = static_cast<double>(count), nb = static_cast<double>(b.count), n = na + nb;
    const double delta = b.mean - mean, dn = delta / n, dn2 = dn * dn;
    const double cross = delta * dn * na * nb;  // delta^2 na nb / n
    const double new_m4 = m4 + b.m4 + cross * dn2 * (na * na - na * nb + nb * nb) +
                          6.0 * dn2 * (na * na * b.m2 + nb * nb * m2) + 4.0 * dn * (na * b.m3 - nb * m3);
    const double new_m3 = m3 + b.m3 + cross * dn * (na - nb) + 3.0 * dn * (na * b.m2 - nb * m2);
    m2 = m2 + b.m2 + cross;
    m3 = new_m3;
    m4 = new_m4;
    mean = mean + nb * dn;
    count += b.count;
    // NaN-propagating min and max: a NaN bound stays NaN.
    min = (b.min < min || std::isnan(b.min)) && !std::isnan(min) ? b.min : min;
    max = (b.max > max || std::isnan(b.max)) && !std::isnan(max) ? b.max : max;
    return *this;
  }

  /// Population variance `m2 / n`.
  double variance() const { return m2 / static_cast<double>(count); }
  /// `max |x|`, the ∞-norm.
  double inf_norm() const { return std::max(std::fabs(min), std::fabs(max)); }
  /// Pearson kurtosis `(m4/n) / (m2/n)^2` (3 for a normal distribution); NaN when the variance is 0.
  double kurtosis() const {
    return m2 > 0.0 ? static_cast<double>(count) * m4 / (m2 * m2) : std::numeric_limits<double>::quiet_NaN();
  }
  /// Pearson kurtosis − 3 (0 for a normal distribution).
  double excess_kurtosis() const { return kurtosis() - 3.0; }
  /// The OSP paper's per-token number: `max(0, mean(x^4)/sigma^4 − 3)` with the *uncentred* fourth moment
  /// `mean(x^4)` and the population `sigma^2 = m2/n`; NaN when the variance is 0.
  double osp_excess_kurtosis() const {
    if (!(m2 > 0.0)) return std::numeric_limits<double>::quiet_NaN();
    const double n = static_cast<double>(count), mu = mean;
    const double raw4 = m4 / n + 4.0 * mu * m3 / n + 6.0 * mu * mu * m2 / n + mu * mu * mu * mu;
    const double var = m2 / n;
    return std::max(0.0, raw4 / (var * var) - 3.0);
  }
};

}  // namespace qsafe
