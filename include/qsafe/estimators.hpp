#pragma once
/// \file
/// Range estimators for calibration (REFERENCE §2, docs/quantization.md): min-max, running min-max,
/// percentile and MSE search, per tensor or per channel, all with one interface:
///
/// \code
///   qsafe::running_min_max_estimator<float> est(0.9);        // momentum 0.9, the papers' activations
///   for (auto batch : calibration) est.observe(qsafe::simd, batch);
///   qsafe::quant_params p = est.qparams(8, qsafe::quant_mode::asymmetric);
///
///   qsafe::mse_estimator<float> mse(8, qsafe::quant_mode::symmetric);  // needs two passes over the data
///   qsafe::calibrate(qsafe::simd, mse, weight);                          // runs them
/// \endcode
///
/// The interface (every estimator here; issue 9's histogram estimators follow it too):
/// - `observe(policy, x)`: feed one batch (a `matrix_view<const T>`) to the current pass. Throws
///   `std::invalid_argument` naming `x` for an empty batch, a shape that does not match the channel layout,
///   or NaN / ±inf values (with their count); the estimator is left unchanged then.
/// - `next_pass()`: ends a pass over the calibration data; returns true if the estimator needs the same batches
///   again (the MSE search: pass 1 finds the min-max range, pass 2 sums each candidate's loss). Single-pass
///   estimators return false. `qsafe::calibrate` runs the passes over a list of batches.
/// - `ranges()` (one per channel), `range()` (per tensor), `qparams(bits, mode)`, `channel_qparams(bits, mode)`:
///   the result. Asking before a batch was observed (or, for MSE, before its passes are done) throws
///   `std::logic_error`.
/// - `merge(other)`, where the state combines exactly (min-max): the estimator of the union of the data.
/// Granularity is a `channel_layout` given at construction: per tensor by default, or `{axis, channels}` with
/// the meaning of quant.hpp's per-channel functions (column j is channel j; row r is channel r % channels).
///
/// Batches on a CUDA device: `est.observe(qsafe::cuda_t{stream, &workspace}, x)` with x a view of device memory
/// (float, __half or __nv_bfloat16) and qsafe/cuda/estimators.cuh included: the same passes and results, the state
/// kept here on the host (device and host batches mix). The min-max and percentile results are exact, as on the host;
/// the MSE losses are summed in fp32 tiles then double on the device (relative error ~1e-6, so a near-tie between
/// candidates may resolve differently from qsafe::cpu). This header needs no CUDA: the device overloads of
/// `observe` reach the backend through the `detail::device_hook` functions below.

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "qsafe/detail/check.hpp"
#include "qsafe/detail/estimator_rules.hpp"
#include "qsafe/detail/parallel.hpp"
#include "qsafe/detail/scalar/range.hpp"
#include "qsafe/detail/scalar/select.hpp"
#include "qsafe/detail/simd/range.hpp"
#include "qsafe/detail/simd/select.hpp"
#include "qsafe/execution.hpp"
#include "qsafe/matrix_view.hpp"
#include "qsafe/quant.hpp"
#include "qsafe/stats.hpp"

namespace qsafe {

/// Which elements an estimator gives a range of: `channels` ranges along `axis`; the default is per tensor.
struct channel_layout {
  channel_axis axis = channel_axis::row;
  index_t channels = 1;
};

namespace detail {

inline void check_layout(std::string_view function, const channel_layout& layout) {
  if (layout.axis != channel_axis::row && layout.axis != channel_axis::column) {
    fail(function, "layout.axis",
         "is not a channel_axis value (" + std::to_string(static_cast<int>(layout.axis)) + ")");
  }
  if (layout.channels < 1) {
    fail(function, "layout.channels", "must be >= 1, got " + std::to_string(layout.channels));
  }
}

inline channel_layout checked_layout(std::string_view function, const channel_layout& layout) {
  check_layout(function, layout);
  return layout;
}

template <class T>
void check_batch(std::string_view function, const channel_layout& layout, const matrix_view<const T>& x) {
  check_non_empty(function, x);
  if (layout.axis == channel_axis::column && x.cols != layout.channels) {
    fail(function, "x",
         "has " + std::to_string(x.cols) + " columns but the layout has " + std::to_string(layout.channels) +
             " channels along columns");
  }
  if (layout.axis == channel_axis::row && x.rows % layout.channels != 0) {
    fail(function, "x",
         "has " + std::to_string(x.rows) + " rows, not a multiple of the layout's " + std::to_string(layout.channels) +
             " channels along rows");
  }
}

// The tag through which the estimators' overloads for non-host policies (`qsafe::cuda_t`) find the backend by
// argument-dependent lookup (its namespace is searched when they are instantiated, so a backend header included
// after this one provides them). qsafe/cuda/estimators.cuh defines, for a batch x of device memory:
//   std::vector<value_range> device_ranges(device_hook, policy, function, layout, x);   // checks x, finite
//   std::vector<double> device_percentiles(device_hook, policy, function, x, p);         // exact
//   std::vector<double> device_losses(device_hook, policy, function, x, candidates);     // squared errors
struct device_hook {};

// Calls f(channel, view) with each channel's elements as a strided view of x (no copy): x itself per tensor, rows
// c, c + channels, ... along rows, the column c along columns.
template <class E, class F>
void for_each_channel_view(const channel_layout& layout, const matrix_view<const E>& x, F&& f) {
  if (layout.axis == channel_axis::row && layout.channels == 1) {
    f(index_t(0), x);
    return;
  }
  for (index_t c = 0; c < layout.channels; ++c) {
    if (layout.axis == channel_axis::column) {
      f(c, matrix_view<const E>(x.data + c, x.rows, 1, x.row_stride));
    } else {
      f(c, matrix_view<const E>(x.data + c * x.row_stride, x.rows / layout.channels, x.cols,
                                x.row_stride * layout.channels));
    }
  }
}

// Per-channel min and max of one batch (throws for non-finite values, before the caller changes any state).
template <class Policy, class T>
std::vector<value_range> batch_ranges(const Policy& policy, std::string_view function, const channel_layout& layout,
                                      const matrix_view<const T>& x) {
  check_batch(function, layout, x);
  const auto channels = static_cast<std::size_t>(layout.channels);
  constexpr T inf = std::numeric_limits<T>::infinity();
  // A block of rows per thread into its own lo / hi, then folded in thread order: min and max are exact, and the
  // row order is kept, so the ranges do not depend on the thread count.
  const int threads = thread_count(policy);
  const auto team = static_cast<std::size_t>(team_size(threads, x.rows));
  std::vector<std::vector<T>> los(team), his(team);
  std::vector<char> finite(team, 1);
  for_each_block(threads, x.rows, [&](int t, index_t begin, index_t end) {
    std::vector<T>& lo = los[static_cast<std::size_t>(t)];
    std::vector<T>& hi = his[static_cast<std::size_t>(t)];
    lo.assign(channels, inf);
    hi.assign(channels, -inf);
    bool ok = true;
    for (index_t r = begin; r < end; ++r) {
      if (layout.axis == channel_axis::column) {
        ok = column_range(policy, x.row(r), x.cols, lo.data(), hi.data()) && ok;
      } else {
        const row_range_result<T> rr = row_range(policy, x.row(r), x.cols);
        const auto c = static_cast<std::size_t>(r % layout.channels);
        lo[c] = std::min(lo[c], rr.lo);
        hi[c] = std::max(hi[c], rr.hi);
        ok = ok && rr.finite;
      }
    }
    finite[static_cast<std::size_t>(t)] = ok ? 1 : 0;
  });
  if (std::find(finite.begin(), finite.end(), 0) != finite.end()) fail_non_finite(function, x);
  std::vector<T> lo(channels, inf), hi(channels, -inf);
  for (std::size_t t = 0; t < team; ++t) {
    for (std::size_t c = 0; c < los[t].size(); ++c) {
      lo[c] = std::min(lo[c], los[t][c]);
      hi[c] = std::max(hi[c], his[t][c]);
    }
  }
  // + 0: a zero end is +0 whichever sign of zero the fold met first (the only thing the grouping could change)
  std::vector<value_range> out(channels);
  for (std::size_t c = 0; c < channels; ++c)
    out[c] = {static_cast<double>(lo[c] + T(0)), static_cast<double>(hi[c] + T(0))};
  return out;
}

// Calls f(channel, values) with each channel's values as a matrix view: the batch itself per tensor, a row
// when each row is a channel, else a contiguous copy.
template <class T, class F>
void for_each_channel_values(const channel_layout& layout, const matrix_view<const T>& x, F&& f) {
  if (layout.axis == channel_axis::row && layout.channels == 1) {
    f(index_t(0), x);
    return;
  }
  if (layout.axis == channel_axis::row && layout.channels == x.rows) {
    for (index_t r = 0; r < x.rows; ++r) f(r, matrix_view<const T>(x.row(r), 1, x.cols));
    return;
  }
  std::vector<T> values;
  for (index_t c = 0; c < layout.channels; ++c) {
    values.clear();
    if (layout.axis == channel_axis::column) {
      for (index_t r = 0; r < x.rows; ++r) values.push_back(x(r, c));
    } else {
      for (index_t r = c; r < x.rows; r += layout.channels) values.insert(values.end(), x.row(r), x.row(r) + x.cols);
    }
    f(c, matrix_view<const T>(values.data(), 1, static_cast<index_t>(values.size())));
  }
}

// lo <- m·lo + (1 − m)·batch; the first batch initializes. The fma is written out so that the result does not depend
// on the caller's -ffp-contract (GCC fuses it by default in gnu++ modes, not with -ffp-contract=off or in ISO
// modes); it also keeps an unchanged range exact (m·a + (1 − m)·a = a for m >= 0.5).
inline void running_update(std::vector<value_range>& state, const std::vector<value_range>& batch, double momentum) {
  if (state.empty()) {
    state = batch;
    return;
  }
  for (std::size_t c = 0; c < state.size(); ++c) {
    state[c].lo = std::fma(momentum, state[c].lo, (1.0 - momentum) * batch[c].lo);
    state[c].hi = std::fma(momentum, state[c].hi, (1.0 - momentum) * batch[c].hi);
  }
}

inline void check_momentum(std::string_view function, double momentum) {
  if (!(momentum >= 0.0 && momentum < 1.0)) {
    fail(function, "momentum", "must be in [0, 1), got " + std::to_string(momentum));
  }
}

// The shared result half of the interface: ranges -> qparams.
template <class T, class Derived>
class estimator_results {
 public:
  /// One range per channel.
  std::span<const value_range> ranges() const {
    const auto& self = static_cast<const Derived&>(*this);
    self.require_result();
    return self.result_ranges();
  }
  /// The range of a per-tensor (one-channel) estimator.
  value_range range() const {
    const std::span<const value_range> r = ranges();
    if (r.size() != 1) {
      throw std::logic_error("qsafe estimator: range() needs a one-channel layout; this one has " +
                             std::to_string(r.size()) + " channels (use ranges() or channel_qparams())");
    }
    return r[0];
  }
  quant_params qparams(int bits, quant_mode mode) const {
    static_cast<const Derived&>(*this).check_target(bits, mode);
    return make_qparams<T>(range(), bits, mode);
  }
  std::vector<quant_params> channel_qparams(int bits, quant_mode mode) const {
    static_cast<const Derived&>(*this).check_target(bits, mode);
    std::vector<quant_params> out;
    for (const value_range& r : ranges()) out.push_back(make_qparams<T>(r, bits, mode));
    return out;
  }
  bool next_pass() { return false; }
};

[[noreturn]] inline void fail_no_data(const char* estimator) {
  throw std::logic_error(std::string("qsafe::") + estimator + ": no batch has been observed");
}

}  // namespace detail

/// Min-max: the smallest and largest value over all observed batches. Merges exactly.
template <host_element T>
class min_max_estimator : public detail::estimator_results<T, min_max_estimator<T>> {
 public:
  explicit min_max_estimator(channel_layout layout = {}) : layout_(layout) {
    detail::check_layout("min_max_estimator", layout);
  }

  template <host_policy Policy>
  void observe(const Policy& policy, matrix_view<const std::type_identity_t<T>> x) {
    const std::vector<value_range> batch = detail::batch_ranges(policy, "min_max_estimator::observe", layout_, x);
    merge_ranges(batch);
  }
  /// A batch of device memory (see the file comment).
  template <class Policy, class E>
  requires(!host_policy<Policy>) void observe(const Policy& policy, matrix_view<const E> x) {
    merge_ranges(device_ranges(detail::device_hook{}, policy, "min_max_estimator::observe", layout_, x));
  }

  /// The estimator of the union of both estimators' data (exact, any order).
  void merge(const min_max_estimator& other) {
    if (other.layout_.axis != layout_.axis || other.layout_.channels != layout_.channels) {
      detail::fail("min_max_estimator::merge", "other", "has a different channel layout");
    }
    if (!other.ranges_.empty()) merge_ranges(other.ranges_);
  }

 private:
  friend class detail::estimator_results<T, min_max_estimator<T>>;
  void require_result() const {
    if (ranges_.empty()) detail::fail_no_data("min_max_estimator");
  }
  std::span<const value_range> result_ranges() const { return ranges_; }
  void check_target(int, quant_mode) const {}
  void merge_ranges(const std::vector<value_range>& batch) {
    if (ranges_.empty()) {
      ranges_ = batch;
      return;
    }
    for (std::size_t c = 0; c < ranges_.size(); ++c) {
      ranges_[c].lo = std::min(ranges_[c].lo, batch[c].lo);
      ranges_[c].hi = std::max(ranges_[c].hi, batch[c].hi);
    }
  }

  channel_layout layout_;
  std::vector<value_range> ranges_;
};

/// Running min-max (REFERENCE §2): each batch's min and max, averaged over batches with momentum `m`:
/// `lo <- m·lo + (1 − m)·lo_batch` (in double), the first batch initializes. The papers: m = 0.9.
template <host_element T>
class running_min_max_estimator : public detail::estimator_results<T, running_min_max_estimator<T>> {
 public:
  explicit running_min_max_estimator(double momentum = 0.9, channel_layout layout = {})
      : momentum_(momentum), layout_(layout) {
    detail::check_momentum("running_min_max_estimator", momentum);
    detail::check_layout("running_min_max_estimator", layout);
  }

  template <host_policy Policy>
  void observe(const Policy& policy, matrix_view<const std::type_identity_t<T>> x) {
    detail::running_update(ranges_, detail::batch_ranges(policy, "running_min_max_estimator::observe", layout_, x),
                           momentum_);
  }
  /// A batch of device memory (see the file comment).
  template <class Policy, class E>
  requires(!host_policy<Policy>) void observe(const Policy& policy, matrix_view<const E> x) {
    detail::running_update(
        ranges_, device_ranges(detail::device_hook{}, policy, "running_min_max_estimator::observe", layout_, x),
        momentum_);
  }

 private:
  friend class detail::estimator_results<T, running_min_max_estimator<T>>;
  void require_result() const {
    if (ranges_.empty()) detail::fail_no_data("running_min_max_estimator");
  }
  std::span<const value_range> result_ranges() const { return ranges_; }
  void check_target(int, quant_mode) const {}

  double momentum_;
  channel_layout layout_;
  std::vector<value_range> ranges_;
};

/// The exact `p`-th percentile of all elements of `x`, `p` in [0, 100] (REFERENCE §2): with the `n` values
/// sorted, `h = (n − 1)·(p/100)`, `v[⌊h⌋] + (h − ⌊h⌋)·(v[⌊h⌋+1] − v[⌊h⌋])` in double, as `torch.quantile` and
/// `numpy.percentile` (linear). Any size (no 2^24 limit). `cpu` copies and selects (std::nth_element); `simd`
/// runs a two-pass radix selection without copying the tensor (detail/simd/select.hpp); both are exact.
/// Throws `std::invalid_argument` for an empty `x`, NaN or ±inf in `x` (with their count), `p` outside [0, 100].
template <host_policy Policy, host_element T>
std::vector<double> percentiles(const Policy& policy, matrix_view<const T> x, std::span<const double> p) {
  detail::check_non_empty("percentiles", x);
  for (const double q : p) {
    if (!(q >= 0.0 && q <= 100.0)) detail::fail("percentiles", "p", "must be in [0, 100], got " + std::to_string(q));
  }
  return detail::percentiles_by_selection(x.size(), p, [&](std::span<const index_t> ranks) {
    detail::selection<T> sel = detail::select_ranks(policy, x, ranks);
    if (sel.non_finite > 0) detail::fail_non_finite("percentiles", x);
    return std::move(sel.values);
  });
}

/// One percentile; see `percentiles`.
template <host_policy Policy, host_element T>
double percentile(const Policy& policy, matrix_view<const T> x, double p) {
  return percentiles(policy, x, std::span<const double>(&p, 1))[0];
}

/// Percentile range: each batch's `(100 − p)`-th and `p`-th percentiles (exact, see `percentiles`), averaged
/// over batches with momentum like running min-max (the papers' OPT activations: p = 99.999, m = 0.9). `p` in
/// (50, 100]; p = 100 is the batch min-max. Per-batch percentiles are what the papers do; for the percentile of
/// all the data across batches use `histogram_percentile_estimator` (histogram_estimators.hpp).
template <host_element T>
class percentile_estimator : public detail::estimator_results<T, percentile_estimator<T>> {
 public:
  explicit percentile_estimator(double p = 99.999, double momentum = 0.9, channel_layout layout = {})
      : percentile_(p), momentum_(momentum), layout_(layout) {
    if (!(p > 50.0 && p <= 100.0)) {
      detail::fail("percentile_estimator", "percentile", "must be in (50, 100], got " + std::to_string(p));
    }
    detail::check_momentum("percentile_estimator", momentum);
    detail::check_layout("percentile_estimator", layout);
  }

  template <host_policy Policy>
  void observe(const Policy& policy, matrix_view<const std::type_identity_t<T>> x) {
    detail::check_batch("percentile_estimator::observe", layout_, x);
    std::vector<value_range> batch(static_cast<std::size_t>(layout_.channels));
    const double tails[2] = {100.0 - percentile_, percentile_};
    try {
      detail::for_each_channel_values(layout_, x, [&](index_t c, matrix_view<const T> values) {
        const std::vector<double> v = percentiles(policy, values, std::span<const double>(tails));
        batch[static_cast<std::size_t>(c)] = {v[0], v[1]};
      });
    } catch (const std::invalid_argument&) {
      detail::fail_non_finite("percentile_estimator::observe", x);
    }
    detail::running_update(ranges_, batch, momentum_);
  }
  /// A batch of device memory (see the file comment): a range pass (which checks the batch and counts NaN / ±inf
  /// over all of it), then each channel's two tails selected in place.
  template <class Policy, class E>
  requires(!host_policy<Policy>) void observe(const Policy& policy, matrix_view<const E> x) {
    const char* function = "percentile_estimator::observe";
    (void)device_ranges(detail::device_hook{}, policy, function, layout_, x);
    std::vector<value_range> batch(static_cast<std::size_t>(layout_.channels));
    const double tails[2] = {100.0 - percentile_, percentile_};
    detail::for_each_channel_view(layout_, x, [&](index_t c, matrix_view<const E> values) {
      const std::vector<double> v =
          device_percentiles(detail::device_hook{}, policy, function, values, std::span<const double>(tails));
      batch[static_cast<std::size_t>(c)] = {v[0], v[1]};
    });
    detail::running_update(ranges_, batch, momentum_);
  }

 private:
  friend class detail::estimator_results<T, percentile_estimator<T>>;
  void require_result() const {
    if (ranges_.empty()) detail::fail_no_data("percentile_estimator");
  }
  std::span<const value_range> result_ranges() const { return ranges_; }
  void check_target(int, quant_mode) const {}

  double percentile_, momentum_;
  channel_layout layout_;
  std::vector<value_range> ranges_;
};

/// MSE search (REFERENCE §2): the clipping range minimizing the summed squared fake-quantization error
/// `sum (x − x̂)^2` over all observed batches, for the bit width and mode given at construction. Candidates
/// `k = 1..candidates`: the min-max range of the data (over all batches) scaled by `k / candidates` toward 0
/// (asymmetric: both ends of the range widened to contain 0; symmetric: `max|x|`), each turned into qparams
/// by `make_qparams<T>`. Ties go to the wider range. Two passes: pass 1 the min-max range, pass 2 the losses.
template <host_element T>
class mse_estimator : public detail::estimator_results<T, mse_estimator<T>> {
 public:
  explicit mse_estimator(int bits, quant_mode mode, channel_layout layout = {}, int candidates = 100)
      : bits_(bits),
        mode_(mode),
        candidates_(candidates),
        layout_(detail::checked_layout("mse_estimator", layout)),
        minmax_(layout) {
    detail::check_bits("mse_estimator", bits);
    detail::check_mode("mse_estimator", mode);
    if (candidates < 1) detail::fail("mse_estimator", "candidates", "must be >= 1, got " + std::to_string(candidates));
  }

  template <host_policy Policy>
  void observe(const Policy& policy, matrix_view<const std::type_identity_t<T>> x) {
    if (pass_ == 0) {
      minmax_.observe(policy, x);
      return;
    }
    if (pass_ > 1) throw std::logic_error("qsafe::mse_estimator::observe: both passes are done");
    const std::vector<value_range> batch = detail::batch_ranges(policy, "mse_estimator::observe", layout(), x);
    (void)batch;  // validates shape and finiteness before any loss is added
    detail::for_each_channel_values(layout(), x, [&](index_t c, matrix_view<const T> values) {
      const auto ch = static_cast<std::size_t>(c);
      for (int k = 0; k < candidates_; ++k) {
        const detail::uniform_params<T> p{detail::to_lanes<T>(make_qparams<T>(candidate(ch, k), bits_, mode_))};
        double loss = 0.0;
        for (index_t r = 0; r < values.rows; ++r) loss += detail::squared_error(policy, p, values.cols, values.row(r));
        losses_[ch][static_cast<std::size_t>(k)] += loss;
      }
    });
  }
  /// A batch of device memory (see the file comment; float estimators: the device quantizes in fp32). Pass 2
  /// sums every candidate's loss of a channel in one read of its elements.
  template <class Policy, class E>
  requires(!host_policy<Policy>) void observe(const Policy& policy, matrix_view<const E> x) {
    static_assert(std::is_same_v<T, float>, "device batches feed mse_estimator<float> (fp32 fake-quantization)");
    if (pass_ == 0) {
      minmax_.observe(policy, x);
      return;
    }
    if (pass_ > 1) throw std::logic_error("qsafe::mse_estimator::observe: both passes are done");
    const char* function = "mse_estimator::observe";
    (void)device_ranges(detail::device_hook{}, policy, function, layout(), x);  // shape and finiteness first
    std::vector<std::vector<double>> batch(losses_.size());
    detail::for_each_channel_view(layout(), x, [&](index_t c, matrix_view<const E> values) {
      const auto ch = static_cast<std::size_t>(c);
      std::vector<quant_params> params;
      for (int k = 0; k < candidates_; ++k) params.push_back(make_qparams<T>(candidate(ch, k), bits_, mode_));
      batch[ch] = device_losses(detail::device_hook{}, policy, function, values, std::span<const quant_params>(params));
    });
    for (std::size_t c = 0; c < batch.size(); ++c)
      for (std::size_t k = 0; k < batch[c].size(); ++k) losses_[c][k] += batch[c][k];
  }

  /// Pass 1 -> pass 2 (returns true: observe the same batches again); pass 2 -> done (returns false).
  bool next_pass() {
    if (pass_ == 0) {
      const std::span<const value_range> r = minmax_.ranges();  // throws if nothing was observed
      bounds_.assign(r.begin(), r.end());
      losses_.assign(bounds_.size(), std::vector<double>(static_cast<std::size_t>(candidates_), 0.0));
      pass_ = 1;
      return true;
    }
    if (pass_ == 1) {
      best_.clear();
      for (std::size_t c = 0; c < bounds_.size(); ++c)
        best_.push_back(candidate(c, detail::mse_best_candidate(losses_[c])));
      pass_ = 2;
    }
    return false;
  }

  /// The summed loss of candidate `k` (0-based, scale (k+1)/candidates) of channel `c`, after pass 2.
  double loss(index_t c, int k) const {
    return losses_.at(static_cast<std::size_t>(c)).at(static_cast<std::size_t>(k));
  }
  const channel_layout& layout() const { return layout_; }

 private:
  friend class detail::estimator_results<T, mse_estimator<T>>;
  void require_result() const {
    if (pass_ < 2) {
      throw std::logic_error(
          "qsafe::mse_estimator: the search needs two passes over the data: observe the batches, call "
          "next_pass(), "
          "observe them again, call next_pass() (qsafe::calibrate does this)");
    }
  }
  std::span<const value_range> result_ranges() const { return best_; }
  void check_target(int bits, quant_mode mode) const {
    if (bits != bits_) {
      detail::fail("mse_estimator::qparams", "bits",
                   "is " + std::to_string(bits) + " but the search ran for " + std::to_string(bits_));
    }
    if (mode != mode_) detail::fail("mse_estimator::qparams", "mode", "differs from the mode the search ran for");
  }
  value_range candidate(std::size_t c, int k) const {
    return detail::mse_candidate(bounds_[c], mode_ == quant_mode::asymmetric, k, candidates_);
  }

  int bits_;
  quant_mode mode_;
  int candidates_;
  channel_layout layout_;
  min_max_estimator<T> minmax_;
  int pass_ = 0;
  std::vector<value_range> bounds_, best_;
  std::vector<std::vector<double>> losses_;
};

/// Runs an estimator's passes over a list of batches: observe each, `next_pass()`, repeat while it asks (any policy:
/// device batches with `qsafe::cuda_t`).
template <class Policy, class Estimator, class T>
void calibrate(const Policy& policy, Estimator& estimator, std::span<const matrix_view<const T>> batches) {
  do {
    for (const matrix_view<const T>& b : batches) estimator.observe(policy, b);
  } while (estimator.next_pass());
}

/// Runs an estimator's passes over one tensor.
template <class Policy, class Estimator, class T>
void calibrate(const Policy& policy, Estimator& estimator, matrix_view<const T> x) {
  calibrate(policy, estimator, std::span<const matrix_view<const T>>(&x, 1));
}

}  // namespace qsafe
