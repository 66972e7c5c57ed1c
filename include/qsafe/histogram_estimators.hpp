#pragma once
/// \file
/// Range estimators on exact histograms (issue 9, docs/quantization.md "Estimators on a histogram"), per tensor or
/// per channel, with the estimator interface of estimators.hpp (observe / next_pass / ranges / qparams / merge):
///
/// - `histogram_percentile_estimator<T>(p)`: the exact `(100 − p)`-th and `p`-th percentiles of all the data
///   (not an average of per-batch percentiles): a histogram, then a pass that gathers the values of the bins
///   holding the ranks.
/// - `histogram_mse_estimator<T>(bits, mode)`: the candidate range minimizing the expected squared
///   fake-quantization error under the histogram, searched exhaustively (no greedy stop at a local minimum).
/// - `histogram_sqnr_estimator<T>(bits, mode, gamma = 3)`: AIMET's "TF-enhanced" cost, clipping error weighted by
///   gamma plus rounding error (gamma = 1 is the MSE search).
/// - `histogram_kl_estimator<T>(bits, mode)`: TensorRT's entropy calibration (KL divergence on the histogram of
///   |x|).
///
/// \code
///   qsafe::histogram_mse_estimator<float> est(4, qsafe::quant_mode::asymmetric);
///   qsafe::calibrate(qsafe::simd, est, batches);          // pass 1 min-max, pass 2 counts
///   qsafe::quant_params p = est.qparams(4, qsafe::quant_mode::asymmetric);
/// \endcode
///
/// The searches are also free functions of a finished `histogram` (`mse_range`, `sqnr_range`, `kl_range`,
/// `expected_squared_error`). Every estimator merges exactly: its state is the histogram's integer counts (and,
/// for the percentile, the gathered values). Bad input: see histogram.hpp (NaN / ±inf throw or, by option, are
/// skipped and counted).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "qsafe/detail/estimator_rules.hpp"
#include "qsafe/detail/histogram_search.hpp"
#include "qsafe/estimators.hpp"
#include "qsafe/histogram.hpp"

namespace qsafe {

namespace detail {

template <class T>
void check_channel(std::string_view function, const histogram<T>& h, index_t c) {
  if (!h.has_grid()) {
    throw std::logic_error("qsafe::" + std::string(function) + ": the histogram has no counts yet");
  }
  if (c < 0 || c >= h.layout().channels) {
    fail(function, "channel", std::to_string(c) + " is not in [0, " + std::to_string(h.layout().channels) + ")");
  }
}

template <class T>
binned_density density_of(const histogram<T>& h, index_t c) {
  const value_range g = h.grid(c);
  return binned_density(h.counts(c), g.lo, g.hi);
}

}  // namespace detail

/// The expected squared error `Σ (x − x̂)²` of fake-quantizing channel c's data with `params`, with each bin's
/// values taken as spread evenly over the bin (exact for the histogram; for the data it is within the bin width's
/// effect).
template <host_element T>
double expected_squared_error(const histogram<T>& h, index_t c, const quant_params& params) {
  detail::check_channel("expected_squared_error", h, c);
  detail::check_params("expected_squared_error", "params", params);
  return detail::expected_error(detail::density_of(h, c), params).total;
}

/// AIMET's SQNR ("TF-enhanced") search: the range minimizing `gamma·clipping + rounding` expected squared error
/// (see detail/histogram_search.hpp for the candidates). gamma >= 0; gamma = 1 is the MSE search.
template <host_element T>
value_range sqnr_range(const histogram<T>& h, index_t c, int bits, quant_mode mode, double gamma = 3.0) {
  detail::check_channel("sqnr_range", h, c);
  detail::check_bits("sqnr_range", bits);
  detail::check_mode("sqnr_range", mode);
  if (!(gamma >= 0.0) || !std::isfinite(gamma)) {
    detail::fail("sqnr_range", "gamma", "must be finite and >= 0, got " + std::to_string(gamma));
  }
  return detail::search_range<T>(detail::density_of(h, c), h.data_range(c), bits, mode, gamma);
}

/// The MSE search: `sqnr_range` with gamma = 1.
template <host_element T>
value_range mse_range(const histogram<T>& h, index_t c, int bits, quant_mode mode) {
  return sqnr_range(h, c, bits, mode, 1.0);
}

/// TensorRT's KL (entropy) threshold `t` on a symmetric-grid histogram with an even bin count; the range is
/// `[−t, t]` (`[0, t]` when no value is negative) for symmetric mode, the data's range clipped to `[−t, t]` for
/// asymmetric mode.
template <host_element T>
value_range kl_range(const histogram<T>& h, index_t c, int bits, quant_mode mode) {
  detail::check_channel("kl_range", h, c);
  detail::check_bits("kl_range", bits);
  detail::check_mode("kl_range", mode);
  if (h.options().grid != histogram_grid::symmetric || h.bins() % 2 != 0) {
    detail::fail("kl_range", "h", "needs a symmetric grid (histogram_grid::symmetric) with an even bin count");
  }
  const value_range data = h.data_range(c);
  const value_range g = h.grid(c);
  if (g.hi == 0.0) return data;
  const double t = detail::kl_threshold(std::span<const std::int64_t>(h.counts(c)), g.hi, data.lo >= 0.0, bits);
  if (mode == quant_mode::symmetric) return {data.lo >= 0.0 ? 0.0 : -t, t};
  return {std::max(data.lo, -t), std::min(data.hi, t)};
}

/// Which search a `histogram_search_estimator` runs.
enum class search_criterion { mse, sqnr, kl };

/// A histogram (two passes) and one search per channel when it is done; `qparams` must be asked for with the bit
/// width and mode the search ran for.
template <host_element T>
class histogram_search_estimator : public detail::estimator_results<T, histogram_search_estimator<T>> {
 public:
  histogram_search_estimator(search_criterion criterion, int bits, quant_mode mode, channel_layout layout = {},
                             histogram_options options = {}, double gamma = 3.0)
      : criterion_(criterion),
        bits_(bits),
        mode_(mode),
        gamma_(criterion == search_criterion::mse ? 1.0 : gamma),
        histogram_(layout, adjusted(criterion, std::move(options))) {
    detail::check_bits("histogram_search_estimator", bits);
    detail::check_mode("histogram_search_estimator", mode);
    if (criterion != search_criterion::mse && criterion != search_criterion::sqnr &&
        criterion != search_criterion::kl) {
      detail::fail("histogram_search_estimator", "criterion", "is not a search_criterion value");
    }
    if (!(gamma_ >= 0.0) || !std::isfinite(gamma_)) {
      detail::fail("histogram_search_estimator", "gamma", "must be finite and >= 0, got " + std::to_string(gamma));
    }
    if (criterion == search_criterion::kl && histogram_.bins() % 2 != 0) {
      detail::fail("histogram_search_estimator", "options.bins", "must be even for the KL search");
    }
  }

  template <host_policy Policy>
  void observe(const Policy& policy, matrix_view<const std::type_identity_t<T>> x) {
    histogram_.observe(policy, x);
  }

  bool next_pass() {
    if (histogram_.next_pass()) return true;
    if (best_.empty()) {
      for (index_t c = 0; c < histogram_.layout().channels; ++c) best_.push_back(search(c));
    }
    return false;
  }

  /// The estimator of the union of both estimators' data (exact: the histograms' counts add).
  void merge(const histogram_search_estimator& other) {
    if (other.criterion_ != criterion_ || other.bits_ != bits_ || other.mode_ != mode_ || other.gamma_ != gamma_) {
      detail::fail("histogram_search_estimator::merge", "other", "runs a different search");
    }
    if (!best_.empty() || !other.best_.empty()) {
      detail::fail("histogram_search_estimator::merge", "other", "merge before the last next_pass()");
    }
    histogram_.merge(other.histogram_);
  }

  const histogram<T>& data_histogram() const { return histogram_; }

 private:
  friend class detail::estimator_results<T, histogram_search_estimator<T>>;
  static histogram_options adjusted(search_criterion criterion, histogram_options o) {
    if (criterion == search_criterion::kl) o.grid = histogram_grid::symmetric;
    return o;
  }
  value_range search(index_t c) const {
    if (criterion_ == search_criterion::kl) return kl_range(histogram_, c, bits_, mode_);
    return sqnr_range(histogram_, c, bits_, mode_, gamma_);
  }
  void require_result() const {
    if (best_.empty()) {
      throw std::logic_error(
          "qsafe::histogram_search_estimator: the search needs both passes: observe the batches, next_pass(), "
          "observe them again, next_pass() (qsafe::calibrate does this)");
    }
  }
  std::span<const value_range> result_ranges() const { return best_; }
  void check_target(int bits, quant_mode mode) const {
    if (bits != bits_) {
      detail::fail("histogram_search_estimator::qparams", "bits",
                   "is " + std::to_string(bits) + " but the search ran for " + std::to_string(bits_));
    }
    if (mode != mode_) {
      detail::fail("histogram_search_estimator::qparams", "mode", "differs from the mode the search ran for");
    }
  }

  search_criterion criterion_;
  int bits_;
  quant_mode mode_;
  double gamma_;
  histogram<T> histogram_;
  std::vector<value_range> best_;
};

/// MSE search on a histogram (gamma = 1).
template <host_element T>
class histogram_mse_estimator : public histogram_search_estimator<T> {
 public:
  histogram_mse_estimator(int bits, quant_mode mode, channel_layout layout = {}, histogram_options options = {})
      : histogram_search_estimator<T>(search_criterion::mse, bits, mode, layout, std::move(options)) {}
};

/// AIMET's SQNR search, clipping error weighted by gamma (default 3, AIMET's).
template <host_element T>
class histogram_sqnr_estimator : public histogram_search_estimator<T> {
 public:
  histogram_sqnr_estimator(int bits, quant_mode mode, double gamma = 3.0, channel_layout layout = {},
                           histogram_options options = {})
      : histogram_search_estimator<T>(search_criterion::sqnr, bits, mode, layout, std::move(options), gamma) {}
};

/// TensorRT's KL search; the histogram is on a symmetric grid, 4096 bins by default (2048 bins of |x|, as
/// TensorRT).
template <host_element T>
class histogram_kl_estimator : public histogram_search_estimator<T> {
 public:
  histogram_kl_estimator(int bits, quant_mode mode, channel_layout layout = {},
                         histogram_options options = default_options())
      : histogram_search_estimator<T>(search_criterion::kl, bits, mode, layout, std::move(options)) {}
  static histogram_options default_options() {
    histogram_options o;
    o.bins = 4096;
    return o;
  }
};

/// The exact `(100 − p)`-th and `p`-th percentiles of all values of each channel, over all batches (REFERENCE §2's
/// definition: linear interpolation between the order statistics, as `torch.quantile`). Three passes: min-max,
/// counts, then the values of the (at most four) bins holding the needed ranks, gathered and selected. Where those
/// bins hold more than `gather_limit` values in a channel, that channel's result is interpolated inside the bin
/// instead (error at most one bin width, `(hi − lo)/bins`) and `exact()` is false. NaN / ±inf skipped by option
/// are not counted in n.
template <host_element T>
class histogram_percentile_estimator : public detail::estimator_results<T, histogram_percentile_estimator<T>> {
 public:
  explicit histogram_percentile_estimator(double p = 99.999, channel_layout layout = {}, histogram_options options = {},
                                          index_t gather_limit = index_t(1) << 24)
      : percentile_(p), gather_limit_(gather_limit), histogram_(layout, std::move(options)) {
    if (!(p > 50.0 && p <= 100.0)) {
      detail::fail("histogram_percentile_estimator", "p", "must be in (50, 100], got " + std::to_string(p));
    }
    if (gather_limit < 0) {
      detail::fail("histogram_percentile_estimator", "gather_limit", "must be >= 0");
    }
  }

  template <host_policy Policy>
  void observe(const Policy& policy, matrix_view<const std::type_identity_t<T>> x) {
    if (histogram_.pass() < 2) {
      histogram_.observe(policy, x);
      return;
    }
    if (!ranges_.empty()) throw std::logic_error("qsafe::histogram_percentile_estimator::observe: all passes done");
    gather(x);
  }

  bool next_pass() {
    if (histogram_.pass() < 2) {
      if (histogram_.next_pass()) return true;
      plan();
      if (std::any_of(plans_.begin(), plans_.end(), [](const channel_plan& c) { return c.gather; })) return true;
      finish();
      return false;
    }
    if (ranges_.empty()) finish();
    return false;
  }

  /// The estimator of the union of both estimators' data, before the last `next_pass()`: in the histogram passes
  /// the histograms merge; in the gathering pass the gathered values (both must hold the same histogram: the
  /// workers' recipe of `histogram::merge`, with the copy made after pass 2).
  void merge(const histogram_percentile_estimator& other) {
    if (other.percentile_ != percentile_ || other.gather_limit_ != gather_limit_) {
      detail::fail("histogram_percentile_estimator::merge", "other", "has a different percentile or gather limit");
    }
    if (!ranges_.empty() || !other.ranges_.empty()) {
      detail::fail("histogram_percentile_estimator::merge", "other", "merge before the last next_pass()");
    }
    if (plans_.empty() != other.plans_.empty()) {
      detail::fail("histogram_percentile_estimator::merge", "other", "is in a different pass");
    }
    if (plans_.empty()) {
      histogram_.merge(other.histogram_);
      return;
    }
    for (std::size_t c = 0; c < plans_.size(); ++c) {
      auto& mine = plans_[c].targets;
      const auto& theirs = other.plans_[c].targets;
      bool same = mine.size() == theirs.size() && plans_[c].n == other.plans_[c].n;
      for (std::size_t t = 0; same && t < mine.size(); ++t) same = mine[t].bin == theirs[t].bin;
      if (!same) detail::fail("histogram_percentile_estimator::merge", "other", "holds a different histogram");
      for (std::size_t t = 0; t < mine.size(); ++t)
        mine[t].values.insert(mine[t].values.end(), theirs[t].values.begin(), theirs[t].values.end());
    }
  }

  /// Whether every channel's result is exact (see the class comment).
  bool exact() const {
    return std::all_of(plans_.begin(), plans_.end(), [](const channel_plan& c) { return c.gather; });
  }
  const histogram<T>& data_histogram() const { return histogram_; }

 private:
  friend class detail::estimator_results<T, histogram_percentile_estimator<T>>;

  struct target {
    std::int32_t bin;
    std::int64_t below;  // values in lower bins
    std::int64_t count;
    std::vector<T> values;
  };
  struct channel_plan {
    std::int64_t n = 0;
    bool gather = true;
    std::vector<target> targets;
  };

  void plan() {
    plans_.clear();
    const double qs[2] = {100.0 - percentile_, percentile_};
    for (index_t c = 0; c < histogram_.layout().channels; ++c) {
      channel_plan plan;
      const std::vector<std::int64_t> counts = histogram_.counts(c);
      plan.n = histogram_.total(c);
      std::int64_t gathered = 0;
      for (const double q : qs) {
        const detail::percentile_rank rank = detail::rank_of_percentile(plan.n, q);
        for (const std::int64_t k : {rank.below, rank.above}) {
          std::int64_t below = 0;
          std::int32_t b = 0;
          while (below + counts[static_cast<std::size_t>(b)] <= k) below += counts[static_cast<std::size_t>(b++)];
          if (std::none_of(plan.targets.begin(), plan.targets.end(), [&](const target& t) { return t.bin == b; })) {
            plan.targets.push_back({b, below, counts[static_cast<std::size_t>(b)], {}});
            gathered += counts[static_cast<std::size_t>(b)];
          }
        }
      }
      plan.gather = gathered <= gather_limit_;
      plans_.push_back(std::move(plan));
    }
  }

  void gather(const matrix_view<const T>& x) {
    detail::check_batch("histogram_percentile_estimator::observe", histogram_.layout(), x);
    const channel_layout& layout = histogram_.layout();
    for (index_t r = 0; r < x.rows; ++r) {
      for (index_t j = 0; j < x.cols; ++j) {
        const index_t c = layout.axis == channel_axis::column ? j : r % layout.channels;
        channel_plan& plan = plans_[static_cast<std::size_t>(c)];
        if (!plan.gather) continue;
        const T v = x(r, j);
        const std::int32_t b = histogram_.bin_of(c, v);
        for (target& t : plan.targets) {
          if (t.bin == b && b != histogram_.bins()) {
            t.values.push_back(v);
            break;
          }
        }
      }
    }
  }

  // The value of rank k (0-based) of channel c: exact from the gathered values, or interpolated in its bin.
  double value_at(index_t c, std::int64_t k) {
    channel_plan& plan = plans_[static_cast<std::size_t>(c)];
    for (target& t : plan.targets) {
      if (k < t.below || k >= t.below + t.count) continue;
      const std::int64_t within = k - t.below;
      if (plan.gather) {
        auto nth = t.values.begin() + within;
        std::nth_element(t.values.begin(), nth, t.values.end());
        return static_cast<double>(*nth);
      }
      const value_range g = histogram_.grid(c);
      const double w = (g.hi - g.lo) / static_cast<double>(histogram_.bins());
      return g.lo + w * (t.bin + (static_cast<double>(within) + 0.5) / static_cast<double>(t.count));
    }
    throw std::logic_error("qsafe::histogram_percentile_estimator: rank outside the planned bins");
  }

  void finish() {
    for (std::size_t c = 0; c < plans_.size(); ++c) {
      for (const target& t : plans_[c].targets) {
        if (plans_[c].gather && static_cast<std::int64_t>(t.values.size()) != t.count) {
          throw std::logic_error("qsafe::histogram_percentile_estimator::next_pass: the gathering pass found " +
                                 std::to_string(t.values.size()) + " values in a bin of channel " + std::to_string(c) +
                                 " that holds " + std::to_string(t.count) + "; feed the same batches to every pass");
        }
      }
    }
    ranges_.clear();
    const double qs[2] = {100.0 - percentile_, percentile_};
    for (index_t c = 0; c < histogram_.layout().channels; ++c) {
      const std::int64_t n = plans_[static_cast<std::size_t>(c)].n;
      double out[2];
      for (int i = 0; i < 2; ++i) {
        const detail::percentile_rank rank = detail::rank_of_percentile(n, qs[i]);
        out[i] = rank.interpolate(value_at(c, rank.below), value_at(c, rank.above));
      }
      ranges_.push_back({out[0], out[1]});
    }
  }

  void require_result() const {
    if (ranges_.empty()) {
      throw std::logic_error(
          "qsafe::histogram_percentile_estimator: the percentiles need three passes over the data (qsafe::calibrate "
          "runs them)");
    }
  }
  std::span<const value_range> result_ranges() const { return ranges_; }
  void check_target(int, quant_mode) const {}

  double percentile_;
  index_t gather_limit_;
  histogram<T> histogram_;
  std::vector<channel_plan> plans_;
  std::vector<value_range> ranges_;
};

}  // namespace qsafe
