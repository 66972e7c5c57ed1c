#pragma once
// The searches behind the histogram estimators (docs/quantization.md "Estimators on a histogram"): the expected
// squared fake-quantization error of a quantizer under a histogram, read as a piecewise-uniform density (bin b's
// count spread evenly over the bin), split into its clipping and rounding parts; the exhaustive candidate scans of
// the MSE / SQNR searches; TensorRT's KL divergence search. Pure functions of (counts, grid); no data access.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "qsafe/quant.hpp"

namespace qsafe::detail {

struct three_moments {
  double m0 = 0.0, m1 = 0.0, m2 = 0.0;  // count, Σ y, Σ y² with y = x − mid
};

// One channel's histogram as a density: bin b holds counts[b] values spread uniformly over
// [lo + b·w, lo + (b + 1)·w), w = (hi − lo)/bins; hi == lo is a point mass at lo. Moments are taken about the
// grid's midpoint (less cancellation for data far from 0), from prefix sums: any interval in O(1).
class binned_density {
 public:
  binned_density(std::span<const std::int64_t> counts, double lo, double hi)
      : counts_(counts.begin(), counts.end()),
        lo_(lo),
        hi_(hi),
        w_((hi - lo) / static_cast<double>(counts.size())),
        mid_(0.5 * (lo + hi)) {
    p0_.assign(counts_.size() + 1, 0.0);
    p1_ = p0_;
    p2_ = p0_;
    for (std::size_t b = 0; b < counts_.size(); ++b) {
      const double c = static_cast<double>(counts_[b]);
      const double m = lo_ + (static_cast<double>(b) + 0.5) * w_ - mid_;
      p0_[b + 1] = p0_[b] + c;
      p1_[b + 1] = p1_[b] + c * m;
      p2_[b + 1] = p2_[b] + c * (m * m + w_ * w_ / 12.0);
    }
  }

  double lo() const { return lo_; }
  double hi() const { return hi_; }
  double width() const { return w_; }
  double total() const { return p0_.back(); }
  std::size_t bins() const { return counts_.size(); }
  // The nominal edge i (0..bins), exactly lo and hi at the ends.
  double edge(std::size_t i) const {
    return i == 0 ? lo_ : (i == counts_.size() ? hi_ : lo_ + static_cast<double>(i) * w_);
  }

  // Moments of the values in [a, b).
  three_moments moments(double a, double b) const {
    three_moments m;
    if (w_ == 0.0) {  // point mass at lo
      if (a <= lo_ && lo_ < b) m.m0 = total(), m.m1 = total() * (lo_ - mid_), m.m2 = m.m1 * (lo_ - mid_);
      return m;
    }
    a = std::max(a, lo_);
    b = std::min(b, hi_);
    if (!(a < b)) return m;
    const auto last = static_cast<std::ptrdiff_t>(counts_.size()) - 1;
    const auto ia = std::clamp(static_cast<std::ptrdiff_t>(std::floor((a - lo_) / w_)), std::ptrdiff_t(0), last);
    const auto ib = std::clamp(static_cast<std::ptrdiff_t>(std::floor((b - lo_) / w_)), std::ptrdiff_t(0), last);
    if (ia == ib) {
      add_partial(m, ia, a, b);
      return m;
    }
    add_partial(m, ia, a, edge(static_cast<std::size_t>(ia + 1)));
    m.m0 += p0_[static_cast<std::size_t>(ib)] - p0_[static_cast<std::size_t>(ia + 1)];
    m.m1 += p1_[static_cast<std::size_t>(ib)] - p1_[static_cast<std::size_t>(ia + 1)];
    m.m2 += p2_[static_cast<std::size_t>(ib)] - p2_[static_cast<std::size_t>(ia + 1)];
    add_partial(m, ib, edge(static_cast<std::size_t>(ib)), b);
    return m;
  }

  // Moments of the values below u (a prefix sum and one partial bin).
  three_moments below(double u) const {
    three_moments m;
    if (w_ == 0.0) return lo_ < u ? moments(-std::numeric_limits<double>::infinity(), u) : m;
    if (!(u > lo_)) return m;
    if (u >= hi_) return {p0_.back(), p1_.back(), p2_.back()};
    const auto last = static_cast<std::ptrdiff_t>(counts_.size()) - 1;
    const auto i = std::clamp(static_cast<std::ptrdiff_t>(std::floor((u - lo_) / w_)), std::ptrdiff_t(0), last);
    const auto k = static_cast<std::size_t>(i);
    m = {p0_[k], p1_[k], p2_[k]};
    add_partial(m, i, edge(k), u);
    return m;
  }
  double mid() const { return mid_; }

  // ∫ over [a, b) of (x − v)² dF.
  double squared_error(double a, double b, double v) const {
    const three_moments m = moments(a, b);
    const double d = v - mid_;
    return std::max(0.0, m.m2 - 2.0 * d * m.m1 + d * d * m.m0);
  }

 private:
  void add_partial(three_moments& m, std::ptrdiff_t bin, double p, double q) const {
    if (!(p < q)) return;
    const double density = static_cast<double>(counts_[static_cast<std::size_t>(bin)]) / w_;
    if (density == 0.0) return;
    const double yp = p - mid_, yq = q - mid_, dy = q - p;
    m.m0 += density * dy;
    m.m1 += density * dy * (yq + yp) / 2.0;
    m.m2 += density * dy * (yq * yq + yq * yp + yp * yp) / 3.0;
  }

  std::vector<std::int64_t> counts_;
  double lo_, hi_, w_, mid_;
  std::vector<double> p0_, p1_, p2_;
};

// Expected squared error of fake-quantizing the density with p: the total, and the part from clipping (values
// beyond the smallest or largest representable value, measured from that value).
struct quantization_error {
  double total = 0.0, clipping = 0.0;
};

inline quantization_error expected_error(const binned_density& d, const quant_params& p) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  const double s = p.scale, z = p.zero_point;
  const auto code_of = [&](double x) {
    return static_cast<std::int64_t>(std::clamp(std::floor(x / s + 0.5) + z, double(p.quant_min), double(p.quant_max)));
  };
  const std::int64_t first = code_of(d.lo()), last = code_of(d.hi());
  quantization_error e;
  // Code k takes [(k − z − ½)s, (k − z + ½)s) (the end codes everything beyond): its moments are differences of
  // the moments below consecutive boundaries, one prefix lookup per boundary.
  three_moments below = first == p.quant_min ? three_moments{} : d.below((static_cast<double>(first) - z - 0.5) * s);
  for (std::int64_t k = first; k <= last; ++k) {
    const three_moments next = k == p.quant_max ? d.below(inf) : d.below((static_cast<double>(k) - z + 0.5) * s);
    const double m0 = next.m0 - below.m0, m1 = next.m1 - below.m1, m2 = next.m2 - below.m2;
    const double dv = (static_cast<double>(k) - z) * s - d.mid();
    e.total += std::max(0.0, m2 - 2.0 * dv * m1 + dv * dv * m0);
    below = next;
  }
  if (first == p.quant_min) e.clipping += d.squared_error(-inf, (p.quant_min - z) * s, (p.quant_min - z) * s);
  if (last == p.quant_max) e.clipping += d.squared_error((p.quant_max - z) * s, inf, (p.quant_max - z) * s);
  return e;
}

// The search cost: gamma·clipping + rounding (gamma = 1: the plain squared error).
inline double weighted_error(const binned_density& d, const quant_params& p, double gamma) {
  const quantization_error e = expected_error(d, p);
  return e.total + (gamma - 1.0) * e.clipping;
}

// MSE / SQNR search (gamma = 1 / AIMET's gamma = 3) over candidate ranges on the grid's edges. Symmetric: every
// threshold a = k·max|x|/bins, k = 1..bins. Asymmetric: (lo, hi) = (edge i, edge j): every pair of a coarse grid
// of about `coarse` edges per side (global: no greedy walk), then every pair of edges within one coarse step of
// the coarse optimum. Ties go to the widest range. `data` is the channel's finite min-max range.
template <class T>
value_range search_range(const binned_density& d, value_range data, int bits, quant_mode mode, double gamma,
                         std::size_t coarse = 64) {
  const std::size_t bins = d.bins();
  if (d.width() == 0.0) return data;
  auto cost = [&](value_range r) { return weighted_error(d, make_qparams<T>(r, bits, mode), gamma); };
  if (mode == quant_mode::symmetric) {
    const double m = std::max(std::fabs(d.lo()), std::fabs(d.hi()));
    value_range best = data;
    double best_cost = cost(best);  // the min-max range first: ties keep it
    for (std::size_t k = bins; k >= 1; --k) {
      const double a = k == bins ? m : m * static_cast<double>(k) / static_cast<double>(bins);
      const value_range r{data.lo >= 0.0 ? 0.0 : -a, a};
      const double c = cost(r);
      if (c < best_cost) best_cost = c, best = r;
    }
    return best;
  }
  // Asymmetric: make_qparams widens every candidate to contain 0, so one side may have a single candidate.
  const bool lo_free = d.lo()<0.0, hi_free = d.hi()> 0.0;
  auto range_of = [&](std::size_t i, std::size_t j) {
    return value_range{std::min(d.edge(i), 0.0), std::max(d.edge(j), 0.0)};
  };
  const std::size_t step = std::max<std::size_t>(1, bins / coarse);
  std::vector<std::size_t> lows, highs;
  for (std::size_t i = 0; i < bins; i += step) lows.push_back(i);
  for (std::size_t j = bins; j > 0; j = j > step ? j - step : 0) highs.push_back(j);
  if (!lo_free) lows = {0};
  if (!hi_free) highs = {bins};
  std::size_t bi = 0, bj = bins;
  double best_cost = cost(range_of(bi, bj));
  for (const std::size_t i : lows) {
    for (const std::size_t j : highs) {
      if (j <= i) continue;
      const double c = cost(range_of(i, j));
      if (c < best_cost) best_cost = c, bi = i, bj = j;
    }
  }
  // Every pair within one coarse step of the coarse optimum (the widest first, so ties keep the widest).
  const std::size_t ci = bi, cj = bj;
  const std::size_t i_end = lo_free ? std::min(ci + step, bins) : 0,
                    j_begin = hi_free ? (cj > step ? cj - step : 0) : bins;
  for (std::size_t i = lo_free && ci > step ? ci - step : 0; i <= i_end; ++i) {
    for (std::size_t j = hi_free ? std::min(cj + step, bins) : bins; j >= j_begin && j > i; --j) {
      const double c = cost(range_of(i, j));
      if (c < best_cost) best_cost = c, bi = i, bj = j;
      if (j == 0) break;
    }
  }
  return range_of(bi, bj);
}

// TensorRT's entropy calibration on the histogram of |x| (the symmetric grid folded at 0: `bins` even): for each
// threshold bin i = levels..bins/2, P = the first i bins of |x| with the mass beyond added to the last, Q = those i
// bins merged into `levels` groups and spread back evenly over each group's non-empty bins; the threshold edge
// i·w minimizing KL(P‖Q) (the last minimum, as ModelOpt). levels = 2^(b−1), or 2^b when no value is negative.
inline double kl_threshold(std::span<const std::int64_t> counts, double m, bool unsigned_data, int bits) {
  const std::size_t half = counts.size() / 2;
  std::vector<double> h(half);
  for (std::size_t j = 0; j < half; ++j)
    h[j] = static_cast<double>(counts[half + j]) + static_cast<double>(counts[half - 1 - j]);
  const std::size_t levels = std::size_t(1) << (unsigned_data ? bits : bits - 1);
  const double w = m / static_cast<double>(half);
  if (levels >= half) return m;
  std::vector<double> suffix(half + 1, 0.0);
  for (std::size_t j = half; j-- > 0;) suffix[j] = suffix[j + 1] + h[j];
  double best = std::numeric_limits<double>::infinity();
  std::size_t best_i = half;
  std::vector<double> q(half), group_sum(levels), group_nonzero(levels);
  for (std::size_t i = levels; i <= half; ++i) {
    std::fill(group_sum.begin(), group_sum.end(), 0.0);
    std::fill(group_nonzero.begin(), group_nonzero.end(), 0.0);
    for (std::size_t j = 0; j < i; ++j) {
      const std::size_t g = j * levels / i;
      group_sum[g] += h[j];
      group_nonzero[g] += h[j] > 0.0 ? 1.0 : 0.0;
    }
    double p_total = 0.0, q_total = 0.0;
    for (std::size_t j = 0; j < i; ++j) {
      const std::size_t g = j * levels / i;
      q[j] = h[j] > 0.0 ? group_sum[g] / group_nonzero[g] : 0.0;
      q_total += q[j];
      p_total += h[j];
    }
    p_total += suffix[i];
    double kl = 0.0;
    for (std::size_t j = 0; j < i; ++j) {
      const double p = (j + 1 == i ? h[j] + suffix[i] : h[j]) / p_total;
      if (p == 0.0) continue;
      const double qq = q[j] / q_total;
      kl += qq > 0.0 ? p * std::log(p / qq) : std::numeric_limits<double>::infinity();
    }
    if (kl <= best) best = kl, best_i = i;
  }
  return best_i == half ? m : static_cast<double>(best_i) * w;
}

}  // namespace qsafe::detail
