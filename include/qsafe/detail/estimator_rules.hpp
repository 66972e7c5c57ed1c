#pragma once
// The estimators' rules that the host (estimators.hpp, histogram_estimators.hpp) and CUDA (cuda/estimators.cuh, in
// its host code before the launches) share, each written once: where a percentile lies between order statistics,
// and the MSE search's candidate ranges and tie rule. Standard headers only (no CUDA, no xsimd, no qsafe API), so
// host headers and nvcc's host pass compile the same definitions.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

namespace qsafe::detail {

// The p-th percentile of n sorted values v (REFERENCE §2; linear, as torch.quantile and numpy.percentile):
// h = (n − 1)·(p/100), below = ⌊h⌋, above = min(⌊h⌋ + 1, n − 1), frac = h − ⌊h⌋, and the percentile is
// v[below] + frac·(v[above] − v[below]) in double (exactly v[below] when frac = 0).
struct percentile_rank {
  std::ptrdiff_t below = 0;
  std::ptrdiff_t above = 0;
  double frac = 0.0;

  double interpolate(double value_below, double value_above) const {
    return frac == 0.0 ? value_below : value_below + frac * (value_above - value_below);
  }
};

inline percentile_rank rank_of_percentile(std::ptrdiff_t n, double p) {
  const double h = static_cast<double>(n - 1) * (p / 100.0);
  const auto below = static_cast<std::ptrdiff_t>(std::floor(h));
  return {below, std::min(below + 1, n - 1), h - std::floor(h)};
}

// The p[i]-th percentiles of n values, from `select(ranks)`, which returns the values at the sorted, distinct
// ranks it is given (entry j the ranks[j]-th smallest, 0-based); each rank is selected once.
template <class Select>
std::vector<double> percentiles_by_selection(std::ptrdiff_t n, std::span<const double> p, Select&& select) {
  std::vector<percentile_rank> where;
  std::vector<std::ptrdiff_t> ranks;
  for (const double q : p) {
    where.push_back(rank_of_percentile(n, q));
    ranks.push_back(where.back().below);
    ranks.push_back(where.back().above);
  }
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  const auto values = select(std::span<const std::ptrdiff_t>(ranks));
  auto value_at = [&](std::ptrdiff_t k) {
    return static_cast<double>(
        values[static_cast<std::size_t>(std::lower_bound(ranks.begin(), ranks.end(), k) - ranks.begin())]);
  };
  std::vector<double> out;
  for (const percentile_rank& r : where) out.push_back(r.interpolate(value_at(r.below), value_at(r.above)));
  return out;
}

// Candidate k (0-based) of the MSE search over `candidates` clipping ranges (REFERENCE §2): the min-max `bounds`,
// widened to contain 0 when `contain_zero` (asymmetric mode), scaled by (k + 1)/candidates toward 0; the last
// candidate is the (widened) bounds exactly. Range: a {lo, hi} aggregate of doubles (value_range).
template <class Range>
Range mse_candidate(const Range& bounds, bool contain_zero, int k, int candidates) {
  const double f = static_cast<double>(k + 1) / static_cast<double>(candidates);
  const double lo = contain_zero ? std::min(bounds.lo, 0.0) : bounds.lo;
  const double hi = contain_zero ? std::max(bounds.hi, 0.0) : bounds.hi;
  return {k + 1 == candidates ? lo : lo * f, k + 1 == candidates ? hi : hi * f};
}

// The MSE search's choice among candidates' summed losses (non-empty): the smallest, ties to the wider range (the
// larger k).
inline int mse_best_candidate(std::span<const double> losses) {
  int best = static_cast<int>(losses.size()) - 1;
  for (int k = best; k >= 0; --k)
    if (losses[static_cast<std::size_t>(k)] < losses[static_cast<std::size_t>(best)]) best = k;
  return best;
}

}  // namespace qsafe::detail
