#pragma once
/// \file
/// Histograms for calibration that merge exactly (issue 9, docs/quantization.md "Histograms"): 64-bit integer
/// counts on a fixed uniform grid per channel, so that any split of the data into batches, threads or processes
/// adds up to exactly the histogram of all of it.
///
/// \code
///   qsafe::histogram<float> h;                        // per tensor, 2048 bins
///   qsafe::calibrate(qsafe::simd, h, batches);        // pass 1: min-max (fixes the grid), pass 2: counts
///   std::vector<std::int64_t> c = h.counts(0);
///
///   // Across processes: agree on the ranges first (min-max merges exactly), then count on the same grid.
///   qsafe::histogram<float> total(ranges), part(ranges);   // fixed grids: one pass
///   part.observe(qsafe::simd, my_batch);
///   total.merge(part);                                     // exact: integer counts on identical edges
///   send(part.to_bytes()); /* elsewhere: */
///   total.merge(qsafe::histogram<float>::from_bytes(received));
/// \endcode
///
/// Contract:
/// - Grid of channel c: `bins` bins over `[lo_c, hi_c]`, the min and max of the channel's finite values over all
///   batches of pass 1 (or given at construction), or `[−m, m]` with `m = max|x|` for `histogram_grid::symmetric`.
///   The bin of x is `min(trunc(fl(fl(x − lo)·scale)), bins − 1)` with `scale = fl(bins/(hi − lo))` in the
///   element type (0 when hi == lo): one rounded operation at a time, so `cpu`, `simd` and every thread count give
///   the same bin for the same value, and the counts are identical for any split of the data.
/// - Bad values: NaN throws `std::invalid_argument` naming `x` (and the tensor's name, if given in the options) with
///   the count of NaNs, unless `options.nan == non_finite_policy::skip`: then NaNs are skipped and counted
///   (`nan_count()`). ±inf likewise with `options.inf` (`inf_count()`): never an infinite range. A value off the
///   fixed grid (different batches in pass 2, or outside the ranges given at construction) throws too: nothing is
///   clamped or dropped silently. A batch that throws leaves the histogram unchanged.
/// - Cost: pass 2 is one read of the data with a scalar increment per value (bench/bench_calibration.cpp);
///   pass 1 is a min-max read.
/// - Batches in CUDA device memory: `h.observe(qsafe::cuda_t{stream, &workspace}, x)` on a `histogram<float>` with
///   qsafe/cuda/histogram.cuh included (float, __half, __nv_bfloat16): the same ranges and bit-identical counts, the
///   state kept here (GPU and host batches mix and merge exactly). This header needs no CUDA: observe's overload
///   for non-host policies finds the backend's passes by argument-dependent lookup (`detail::device_hook`).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "qsafe/detail/bytes.hpp"
#include "qsafe/detail/check.hpp"
#include "qsafe/detail/parallel.hpp"
#include "qsafe/detail/scalar/histogram.hpp"
#include "qsafe/detail/simd/histogram.hpp"
#include "qsafe/estimators.hpp"
#include "qsafe/execution.hpp"
#include "qsafe/matrix_view.hpp"

namespace qsafe {

/// What a calibration pass does with NaN or ±inf values: throw (the default), or skip them and count them.
enum class non_finite_policy { error, skip };

/// The grid of each channel: its finite min-max range, or the symmetric `[−max|x|, max|x|]` (KL on |x|).
enum class histogram_grid { min_max, symmetric };

struct histogram_options {
  index_t bins = 2048;
  histogram_grid grid = histogram_grid::min_max;
  non_finite_policy nan = non_finite_policy::error;
  non_finite_policy inf = non_finite_policy::error;
  std::string name;  ///< the tensor's name, quoted in error messages
};

namespace detail {

inline void check_histogram_options(std::string_view function, const histogram_options& o) {
  if (o.bins < 1 || o.bins > (index_t(1) << 24)) {
    fail(function, "options.bins", "must be in [1, 2^24], got " + std::to_string(o.bins));
  }
  if (o.grid != histogram_grid::min_max && o.grid != histogram_grid::symmetric) {
    fail(function, "options.grid", "is not a histogram_grid value");
  }
  for (const non_finite_policy p : {o.nan, o.inf}) {
    if (p != non_finite_policy::error && p != non_finite_policy::skip) {
      fail(function, "options.nan/inf", "is not a non_finite_policy value");
    }
  }
}

// histogram::observe finds a non-host policy's passes through estimators.hpp's `device_hook` (argument-dependent
// lookup at instantiation, so they may be declared after this header):
//   void histogram_ranges(device_hook, const Policy&, matrix_view<const E>, const channel_layout&,
//                         std::vector<finite_range<T>>& out);   // pass 1: per channel, as finite_range_row gives
//   void histogram_bins(device_hook, const Policy&, matrix_view<const E>, const channel_layout&,
//                       std::span<const grid_lanes<T>> grids, Add&& add);   // pass 2: calls add(counts) once
// where `counts` (a histogram_batch_counts) views the backend's own buffer, valid during the call: channels × bins
// would otherwise be copied into a vector per batch (67 MB for 4096 channels of 2048 bins: most of the time of a
// per-channel device batch).

// A batch counted by a backend: `counts` channel-major, bins + 1 slots per channel (the last: values outside the
// grid, NaN and ±inf included, as the host kernels count them), and the batch's NaN, ±inf and finite off-grid totals.
struct histogram_batch_counts {
  std::span<const unsigned long long> counts;
  std::int64_t nan = 0, inf = 0, off_grid = 0;
};

}  // namespace detail

/// A per-tensor or per-channel histogram with 64-bit counts on a grid fixed by a first min-max pass (two passes,
/// the `observe` / `next_pass` protocol of estimators.hpp) or by ranges given at construction (one pass).
template <host_element T>
class histogram {
 public:
  /// Two passes: pass 1 records each channel's finite min and max; `next_pass()` fixes the grids; pass 2 counts.
  explicit histogram(channel_layout layout = {}, histogram_options options = {})
      : layout_(detail::checked_layout("histogram", layout)), options_(std::move(options)) {
    detail::check_histogram_options("histogram", options_);
    const auto channels = static_cast<std::size_t>(layout_.channels);
    first_.assign(channels, detail::finite_range<T>{});
    finite_.assign(channels, 0);
  }

  /// One pass on fixed grids: `ranges[c]` is channel c's `[lo, hi]` (finite, lo <= hi); values outside throw.
  histogram(std::span<const value_range> ranges, channel_layout layout = {}, histogram_options options = {})
      : layout_(detail::checked_layout("histogram", layout)), options_(std::move(options)) {
    detail::check_histogram_options("histogram", options_);
    if (static_cast<index_t>(ranges.size()) != layout_.channels) {
      detail::fail(
          "histogram", "ranges",
          "has " + std::to_string(ranges.size()) + " entries for " + std::to_string(layout_.channels) + " channels");
    }
    for (std::size_t c = 0; c < ranges.size(); ++c) {
      const value_range r = ranges[c];
      if (!std::isfinite(r.lo) || !std::isfinite(r.hi) || !(r.lo <= r.hi) ||
          static_cast<double>(static_cast<T>(r.lo)) != r.lo || static_cast<double>(static_cast<T>(r.hi)) != r.hi) {
        detail::fail("histogram", "ranges[" + std::to_string(c) + "]",
                     "[" + std::to_string(r.lo) + ", " + std::to_string(r.hi) +
                         "] must be finite, lo <= hi, and exact in the element type");
      }
    }
    make_grids(ranges);
    fixed_ = true;
    pass_ = 1;
  }

  /// Feeds one batch to the current pass (see the contract above for errors).
  template <host_policy Policy>
  void observe(const Policy& policy, matrix_view<const std::type_identity_t<T>> x) {
    detail::check_batch("histogram::observe", layout_, x);
    if (pass_ == 0) {
      observe_range(policy, x);
    } else if (pass_ == 1) {
      observe_counts(policy, x);
    } else {
      throw std::logic_error("qsafe::histogram::observe: both passes are done");
    }
  }

  /// Feeds one batch that a non-host policy reads where it lives (`qsafe::cuda_t`: device memory, float / __half /
  /// __nv_bfloat16, with qsafe/cuda/histogram.cuh included). The policy's two passes are the free functions
  /// `histogram_ranges` / `histogram_bins` taking `detail::device_hook` first, found by argument-dependent lookup
  /// when this is instantiated (so a backend header declared after this one provides them); the state is updated
  /// here, by the same rules as for host batches.
  template <class Policy, class E>
  requires(!host_policy<Policy>) void observe(const Policy& policy, matrix_view<const E> x) {
    detail::check_batch("histogram::observe", layout_, x);
    if (pass_ == 0) {
      std::vector<detail::finite_range<T>> batch(first_.size());
      histogram_ranges(detail::device_hook{}, policy, x, layout_, batch);
      add_ranges(x.size(), batch);
    } else if (pass_ == 1) {
      histogram_bins(detail::device_hook{}, policy, x, layout_, std::span<const detail::grid_lanes<T>>(grids_),
                     [&](const detail::histogram_batch_counts& b) { add_counts(x.size(), b); });
    } else {
      throw std::logic_error("qsafe::histogram::observe: both passes are done");
    }
  }

  /// Pass 1 -> 2: fixes the grids (returns true: observe the same batches again). Pass 2 -> done: checks that
  /// pass 2 counted as many values per channel as pass 1 saw (else `std::logic_error`), returns false.
  bool next_pass() {
    if (pass_ == 0) {
      std::vector<value_range> ranges;
      for (std::size_t c = 0; c < first_.size(); ++c) {
        if (finite_[c] == 0) {
          throw std::logic_error("qsafe::histogram::next_pass: channel " + std::to_string(c) + name_note() +
                                 " has no finite value (nothing observed, or every value skipped)");
        }
        double lo = static_cast<double>(first_[c].lo), hi = static_cast<double>(first_[c].hi);
        if (options_.grid == histogram_grid::symmetric) {
          hi = std::max(std::fabs(lo), std::fabs(hi));
          lo = -hi;
        }
        ranges.push_back({lo, hi});
      }
      make_grids(ranges);
      pass_ = 1;
      return true;
    }
    if (pass_ == 1) {
      if (!fixed_ && !merged_counts_) {
        for (std::size_t c = 0; c < finite_.size(); ++c) {
          if (total(static_cast<index_t>(c)) != finite_[c]) {
            throw std::logic_error("qsafe::histogram::next_pass: channel " + std::to_string(c) + name_note() +
                                   ": pass 2 counted " + std::to_string(total(static_cast<index_t>(c))) +
                                   " values but pass 1 saw " + std::to_string(finite_[c]) +
                                   " finite values; feed the same batches to both passes");
          }
        }
      }
      pass_ = 2;
    }
    return false;
  }

  /// The histogram of the union of both histograms' data: in pass 1 the ranges and counts of values seen; after,
  /// the counts (both grids must be identical: the same ranges, bins and layout). Recipe for workers that each
  /// see part of the data: pass 1 on each, merge them all into one, copy that one back to every worker (each
  /// then has the grid of all the data), `next_pass()`, pass 2 on each worker's own batches, merge the counts.
  /// After a counts merge, `next_pass()` no longer checks pass 2's totals against pass 1's. Skipped NaN / ±inf are
  /// counted in pass 1 (fixed grids: in their one pass): a counts merge of two-pass histograms keeps this one's
  /// NaN / ±inf counts, those of the agreed pass 1, instead of adding every worker's copy of them.
  void merge(const histogram& other) {
    if (other.layout_.axis != layout_.axis || other.layout_.channels != layout_.channels ||
        other.options_.bins != options_.bins || other.options_.grid != options_.grid) {
      detail::fail("histogram::merge", "other", "has a different channel layout, bin count or grid kind");
    }
    if ((pass_ == 0) != (other.pass_ == 0) || fixed_ != other.fixed_) {
      detail::fail("histogram::merge", "other", "is in a different pass");
    }
    if (pass_ == 0) {
      for (std::size_t c = 0; c < first_.size(); ++c) {
        first_[c].lo = std::min(first_[c].lo, other.first_[c].lo);
        first_[c].hi = std::max(first_[c].hi, other.first_[c].hi);
        finite_[c] += other.finite_[c];
      }
    } else {
      for (std::size_t c = 0; c < grids_.size(); ++c) {
        const auto& a = grids_[c];
        const auto& b = other.grids_[c];
        if (a.lo != b.lo || a.hi != b.hi) {
          detail::fail("histogram::merge", "other",
                       "has a different grid for channel " + std::to_string(c) + ": merge pass 1 first");
        }
      }
      for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
      merged_counts_ = true;  // the pass-1 totals no longer say what pass 2 should count
      // Two passes: the NaN / ±inf counts are pass 1's, which every worker of the recipe carries (the agreed pass
      // 1, copied back to each): adding them would count each skipped value once per worker.
      if (!fixed_) return;
    }
    nan_ += other.nan_;
    inf_ += other.inf_;
  }

  /// The counts of channel c's bins (after the grids are fixed).
  std::vector<std::int64_t> counts(index_t c) const {
    require_grid("counts");
    std::vector<std::int64_t> out(static_cast<std::size_t>(options_.bins));
    for (index_t b = 0; b < options_.bins; ++b) out[static_cast<std::size_t>(b)] = counts_[slot(c, b)];
    return out;
  }
  /// The values counted in channel c.
  std::int64_t total(index_t c) const {
    std::int64_t sum = 0;
    for (index_t b = 0; b < options_.bins; ++b) sum += counts_[slot(c, b)];
    return sum;
  }
  /// Channel c's grid `[lo, hi]`; bin b covers `[lo + b·w, lo + (b + 1)·w)` with `w = (hi − lo)/bins`, up to the
  /// rounding of the bin function (the last bin includes hi).
  value_range grid(index_t c) const {
    require_grid("grid");
    const auto& g = grids_[static_cast<std::size_t>(c)];
    return {static_cast<double>(g.lo), static_cast<double>(g.hi)};
  }
  /// The finite min and max channel c's values had in pass 1 (a fixed grid: the grid).
  value_range data_range(index_t c) const {
    if (fixed_) return grid(c);
    require_grid("data_range");
    const auto& f = first_[static_cast<std::size_t>(c)];
    return {static_cast<double>(f.lo), static_cast<double>(f.hi)};
  }
  /// Skipped NaN / ±inf values (first pass, or the only pass of a fixed grid).
  std::int64_t nan_count() const { return nan_; }
  std::int64_t inf_count() const { return inf_; }
  index_t bins() const { return options_.bins; }
  const channel_layout& layout() const { return layout_; }
  const histogram_options& options() const { return options_; }
  /// 0: recording ranges; 1: counting; 2: done.
  int pass() const { return pass_; }
  bool has_grid() const { return !grids_.empty(); }

  /// The whole state (layout, options, pass, pass-1 ranges, grids, counts, NaN / ±inf counts) as bytes, to send
  /// to another process: `histogram<T>::from_bytes(h.to_bytes())` is h, so workers that each see part of the data
  /// follow merge()'s recipe through bytes. Little-endian and versioned (docs/quantization.md, "Across processes").
  std::vector<std::uint8_t> to_bytes() const {
    detail::byte_writer w;
    for (const char m : bytes_magic) w.u8(static_cast<std::uint8_t>(m));
    w.u32(bytes_version);
    w.u8(static_cast<std::uint8_t>(sizeof(T)));
    w.u8(static_cast<std::uint8_t>(layout_.axis));
    w.i64(layout_.channels);
    w.i64(options_.bins);
    w.u8(static_cast<std::uint8_t>(options_.grid));
    w.u8(static_cast<std::uint8_t>(options_.nan));
    w.u8(static_cast<std::uint8_t>(options_.inf));
    w.text(options_.name);
    w.u8(static_cast<std::uint8_t>(pass_));
    w.u8(fixed_ ? 1 : 0);
    w.u8(merged_counts_ ? 1 : 0);
    w.i64(nan_);
    w.i64(inf_);
    for (std::size_t c = 0; c < first_.size(); ++c) {  // pass 1's state: none on fixed grids
      w.real(first_[c].lo);
      w.real(first_[c].hi);
      w.i64(finite_[c]);
    }
    w.u8(grids_.empty() ? 0 : 1);
    for (const auto& g : grids_) {
      w.real(g.lo);
      w.real(g.hi);
    }
    for (const std::int64_t n : counts_) w.i64(n);
    return w.take();
  }

  /// The histogram `to_bytes()` wrote. `std::invalid_argument` naming `bytes` when they are not such a state: wrong
  /// magic, version or element type, truncated or with trailing bytes, or inconsistent (bad layout, options, pass,
  /// ranges, negative counts).
  static histogram from_bytes(std::span<const std::uint8_t> bytes) {
    constexpr std::string_view function = "histogram::from_bytes";
    detail::byte_reader r(bytes, function, "bytes");
    for (const char m : bytes_magic) {
      if (r.u8() != static_cast<std::uint8_t>(m)) r.fail("does not start with a qsafe histogram's magic 'qsHG'");
    }
    if (const std::uint32_t v = r.u32(); v != bytes_version) {
      r.fail("has format version " + std::to_string(v) + "; this qsafe reads version " + std::to_string(bytes_version));
    }
    if (const int size = r.u8(); size != static_cast<int>(sizeof(T))) {
      r.fail("holds a histogram of " + std::to_string(size) + "-byte elements, not of " + std::to_string(sizeof(T)));
    }
    channel_layout layout;
    const std::uint8_t axis = r.u8();
    if (axis > 1) r.fail("has channel axis " + std::to_string(axis));
    layout.axis = static_cast<channel_axis>(axis);
    layout.channels = r.i64();
    if (layout.channels < 1) r.fail("has " + std::to_string(layout.channels) + " channels");
    histogram_options options;
    options.bins = r.i64();
    options.grid = static_cast<histogram_grid>(r.u8());
    options.nan = static_cast<non_finite_policy>(r.u8());
    options.inf = static_cast<non_finite_policy>(r.u8());
    options.name = r.text();
    try {
      detail::check_histogram_options(function, options);
    } catch (const std::invalid_argument& e) {
      r.fail(std::string("holds bad options: ") + e.what());
    }
    const auto channels = static_cast<std::uint64_t>(layout.channels);
    // 2 values and a count per channel, then (maybe) 2 per grid: check the channel count against what is left
    // before anything is sized by it.
    r.need(channels, 2 * sizeof(T) + 8);
    histogram h(layout, options);
    const std::uint8_t pass = r.u8(), fixed = r.u8(), merged = r.u8();
    if (pass > 2 || fixed > 1 || merged > 1 || (fixed == 1 && pass == 0)) {
      r.fail("has an impossible pass (" + std::to_string(pass) + ", fixed " + std::to_string(fixed) + ")");
    }
    h.pass_ = pass;
    h.fixed_ = fixed == 1;
    h.merged_counts_ = merged == 1;
    h.nan_ = r.i64();
    h.inf_ = r.i64();
    if (h.nan_ < 0 || h.inf_ < 0) r.fail("has a negative NaN or inf count");
    if (h.fixed_) {  // one pass on given ranges: no pass-1 state (as the ranges constructor leaves it)
      h.first_.clear();
      h.finite_.clear();
    }
    for (std::size_t c = 0; c < h.first_.size(); ++c) {
      h.first_[c].lo = r.template real<T>();
      h.first_[c].hi = r.template real<T>();
      h.finite_[c] = r.i64();
      if (h.finite_[c] < 0) r.fail("has a negative value count for channel " + std::to_string(c));
    }
    const bool has_grids = r.u8() == 1;
    if (has_grids != (pass > 0)) r.fail("has grids in pass 0, or none after it");
    if (has_grids) {
      // the counts (at least the grids' bytes too) must be there before they are allocated
      r.need(channels * static_cast<std::uint64_t>(options.bins + 1), 8);
      std::vector<value_range> ranges;
      for (std::uint64_t c = 0; c < channels; ++c) {
        const T lo = r.template real<T>(), hi = r.template real<T>();
        if (!std::isfinite(lo) || !std::isfinite(hi) || !(lo <= hi)) {
          r.fail("has a bad grid for channel " + std::to_string(c));
        }
        ranges.push_back({static_cast<double>(lo), static_cast<double>(hi)});
      }
      try {
        h.make_grids(ranges);
      } catch (const std::invalid_argument& e) {
        r.fail(std::string("holds a grid no histogram can have: ") + e.what());
      }
      for (std::int64_t& n : h.counts_) {
        n = r.i64();
        if (n < 0) r.fail("has a negative bin count");
      }
    }
    r.finish();
    return h;
  }

  /// The bin of x in channel c, exactly as counted (for refinement passes).
  std::int32_t bin_of(index_t c, T x) const { return detail::scalar::bin_of(grids_[static_cast<std::size_t>(c)], x); }

 private:
  static constexpr char bytes_magic[4] = {'q', 's', 'H', 'G'};
  static constexpr std::uint32_t bytes_version = 1;

  index_t stride() const { return options_.bins + 1; }  // the extra slot collects values off the grid
  std::size_t slot(index_t c, index_t b) const { return static_cast<std::size_t>(c * stride() + b); }
  std::string name_note() const { return options_.name.empty() ? "" : " of tensor '" + options_.name + "'"; }
  void require_grid(const char* what) const {
    if (grids_.empty()) {
      throw std::logic_error(std::string("qsafe::histogram::") + what +
                             ": the grid is not fixed yet (observe pass 1, then call next_pass())");
    }
  }

  void make_grids(std::span<const value_range> ranges) {
    grids_.clear();
    for (std::size_t c = 0; c < ranges.size(); ++c) {
      const T lo = static_cast<T>(ranges[c].lo), hi = static_cast<T>(ranges[c].hi);
      if (!std::isfinite(hi - lo)) {
        throw std::invalid_argument("qsafe::histogram: the range of channel " + std::to_string(c) + name_note() +
                                    " is wider than the element type's largest value; no grid over it");
      }
      const double width = static_cast<double>(hi) - static_cast<double>(lo);
      // Capped at the largest finite T: a range narrower than bins / max (subnormal ends) would make the scale
      // infinite and lo's bin 0·inf = NaN; capped, every value still gets a bin, all near bin 0 (documented).
      const T scale = width > 0.0 ? static_cast<T>(std::min(static_cast<double>(options_.bins) / width,
                                                            static_cast<double>(std::numeric_limits<T>::max())))
                                  : T(0);
      grids_.push_back({lo, hi, scale, static_cast<T>(options_.bins - 1), static_cast<std::int32_t>(options_.bins)});
    }
    counts_.assign(grids_.size() * static_cast<std::size_t>(stride()), 0);
  }

  // NaN / ±inf / off-grid counts of one batch, by channel (the slow path, taken only when a value went outside).
  struct bad_values {
    std::int64_t nan = 0, inf = 0, off_grid = 0;
  };
  bad_values diagnose(const matrix_view<const T>& x) const {
    bad_values b;
    for (index_t r = 0; r < x.rows; ++r) {
      for (index_t j = 0; j < x.cols; ++j) {
        const T v = x(r, j);
        const index_t c = layout_.axis == channel_axis::column ? j : r % layout_.channels;
        if (std::isnan(v)) {
          ++b.nan;
        } else if (std::isinf(v)) {
          ++b.inf;
        } else if (!grids_.empty() && bin_of(c, v) == options_.bins) {
          ++b.off_grid;
        }
      }
    }
    return b;
  }

  // Throws for the NaN / ±inf the options do not allow to skip, before any state changes.
  void check_non_finite(const char* function, std::int64_t nan, std::int64_t inf, index_t n) const {
    if (nan > 0 && options_.nan == non_finite_policy::error) {
      detail::fail(function, "x",
                   (options_.name.empty() ? std::string() : "(tensor '" + options_.name + "') ") + "contains " +
                       std::to_string(nan) + " NaN value(s) among " + std::to_string(n) +
                       "; calibration needs finite data (histogram_options::nan = non_finite_policy::skip skips and "
                       "counts them)");
    }
    if (inf > 0 && options_.inf == non_finite_policy::error) {
      detail::fail(function, "x",
                   (options_.name.empty() ? std::string() : "(tensor '" + options_.name + "') ") + "contains " +
                       std::to_string(inf) + " infinite value(s) among " + std::to_string(n) +
                       "; a range cannot be infinite (histogram_options::inf = non_finite_policy::skip skips and "
                       "counts them)");
    }
  }

  template <class Policy>
  void observe_range(const Policy& policy, const matrix_view<const T>& x) {
    std::vector<detail::finite_range<T>> batch(first_.size());
    for (index_t r = 0; r < x.rows; ++r) {
      if (layout_.axis == channel_axis::column) {
        detail::finite_range_columns(policy, x.row(r), x.cols, batch.data());
      } else {
        detail::finite_range_row(policy, x.row(r), x.cols, batch[static_cast<std::size_t>(r % layout_.channels)]);
      }
    }
    add_ranges(x.size(), batch);
  }

  // Pass 1's update with one batch of n values: `batch` holds each channel's finite min and max and NaN / ±inf
  // counts. Throws (state unchanged) for NaN / ±inf the options do not skip.
  void add_ranges(index_t n, const std::vector<detail::finite_range<T>>& batch) {
    std::int64_t nan = 0, inf = 0;
    for (const auto& b : batch) nan += b.nan, inf += b.inf;
    check_non_finite("histogram::observe", nan, inf, n);
    const index_t per_channel = n / layout_.channels;
    for (std::size_t c = 0; c < first_.size(); ++c) {
      first_[c].lo = std::min(first_[c].lo, batch[c].lo);
      first_[c].hi = std::max(first_[c].hi, batch[c].hi);
      finite_[c] += per_channel - batch[c].nan - batch[c].inf;
    }
    nan_ += nan;
    inf_ += inf;
  }

  // Counts a block of rows into `tables` (a private table set); returns the values that went outside.
  template <class Policy, class Count>
  std::int64_t count_rows(const Policy& policy, const matrix_view<const T>& x, index_t begin, index_t end,
                          Count* tables, index_t table_count) const {
    std::int64_t outside = 0;
    if (layout_.axis == channel_axis::column) {
      // Transposed blocks: 16 columns x up to 4096 rows copied channel by channel into a buffer (256 KiB, L2), each
      // channel's values then counted by the row kernel into its own table (L1-resident while it runs). Counting
      // the rows directly touches every channel's table per row (768 channels: 12.6 MB, cache and TLB misses):
      // measured 5-10x slower.
      constexpr index_t block_cols = 16, block_rows = 4096;
      std::vector<T> buffer(static_cast<std::size_t>(block_cols * block_rows));
      for (index_t j0 = 0; j0 < x.cols; j0 += block_cols) {
        const index_t m = std::min(block_cols, x.cols - j0);
        for (index_t r0 = begin; r0 < end; r0 += block_rows) {
          const index_t rr = std::min(block_rows, end - r0);
          for (index_t r = 0; r < rr; ++r) {
            const T* row = x.row(r0 + r) + j0;
            for (index_t j = 0; j < m; ++j) buffer[static_cast<std::size_t>(j * rr + r)] = row[j];
          }
          for (index_t j = 0; j < m; ++j) {
            outside += detail::histogram_row(policy, grids_[static_cast<std::size_t>(j0 + j)], buffer.data() + j * rr,
                                             rr, tables + (j0 + j) * stride(), index_t(1));
          }
        }
      }
      return outside;
    }
    for (index_t r = begin; r < end; ++r) {
      {
        const auto c = r % layout_.channels;
        outside += detail::histogram_row(policy, grids_[static_cast<std::size_t>(c)], x.row(r), x.cols,
                                         tables + c * table_count * stride(), table_count);
      }
    }
    return outside;
  }

  template <class Policy>
  void observe_counts(const Policy& policy, const matrix_view<const T>& x) {
    const int threads = detail::thread_count(policy);
    const int team = detail::team_size(threads, x.rows);
    const auto channel_slots = static_cast<std::size_t>(layout_.channels * stride());
    std::vector<std::vector<std::int64_t>> partial(static_cast<std::size_t>(team));
    std::int64_t outside = 0;
    if (layout_.axis == channel_axis::row && layout_.channels == 1) {
      // Per tensor: eight tables of 32-bit counts per thread (four beyond 2^16 bins), folded into 64-bit partial
      // sums before any 32-bit count could wrap.
      const index_t tables = options_.bins <= (index_t(1) << 16) ? 8 : 4;
      const index_t table_stride = detail::histogram_table_stride<std::uint32_t>(options_.bins, tables);
      constexpr index_t fold_every = index_t(1) << 30;
      std::vector<std::int64_t> outs(static_cast<std::size_t>(team), 0);
      detail::for_each_block(threads, x.rows, [&](int t, index_t begin, index_t end) {
        std::vector<std::uint32_t> scratch(static_cast<std::size_t>(tables * table_stride), 0u);
        std::vector<std::int64_t>& sum = partial[static_cast<std::size_t>(t)];
        sum.assign(static_cast<std::size_t>(stride()), 0);
        auto fold = [&] {
          for (index_t k = 0; k < tables; ++k)
            for (index_t b = 0; b < stride(); ++b)
              sum[static_cast<std::size_t>(b)] +=
                  std::exchange(scratch[static_cast<std::size_t>(k * table_stride + b)], 0u);
        };
        index_t pending = 0;
        for (index_t r = begin; r < end; ++r) {
          for (index_t j = 0; j < x.cols; j += fold_every) {
            const index_t m = std::min(fold_every, x.cols - j);
            outs[static_cast<std::size_t>(t)] +=
                detail::histogram_row(policy, grids_[0], x.row(r) + j, m, scratch.data(), tables);
            pending += m;
            if (pending >= fold_every) {
              fold();
              pending = 0;
            }
          }
        }
        fold();
      });
      for (const std::int64_t o : outs) outside += o;
      if (outside > 0) accept_outside(x);  // throws unless every outside value is a skipped NaN / ±inf
      for (const auto& sum : partial)
        for (std::size_t b = 0; b < sum.size(); ++b) counts_[b] += sum[b];
    } else {
      // Per channel: 64-bit counts straight into the totals (thread 0) or a private copy (other threads).
      std::vector<std::int64_t> outs(static_cast<std::size_t>(team), 0);
      detail::for_each_block(threads, x.rows, [&](int t, index_t begin, index_t end) {
        std::int64_t* tables = counts_.data();
        if (t > 0) {
          partial[static_cast<std::size_t>(t)].assign(channel_slots, 0);
          tables = partial[static_cast<std::size_t>(t)].data();
        }
        outs[static_cast<std::size_t>(t)] = count_rows(policy, x, begin, end, tables, index_t(1));
      });
      for (const std::int64_t o : outs) outside += o;
      for (const auto& sum : partial)
        for (std::size_t i = 0; i < sum.size(); ++i) counts_[i] += sum[i];
      if (outside > 0) {
        try {
          accept_outside(x);
        } catch (...) {
          // Undo exactly: count the batch again into a fresh table and subtract it.
          std::vector<std::int64_t> again(channel_slots, 0);
          count_rows(cpu, x, 0, x.rows, again.data(), index_t(1));
          for (std::size_t i = 0; i < again.size(); ++i) counts_[i] -= again[i];
          throw;
        }
      }
    }
  }

  // Some values of the batch fell outside the grid: fine only if all of them are NaN / ±inf the options skip.
  void accept_outside(const matrix_view<const T>& x) { accept_bad_values(x.size(), diagnose(x)); }

  // Pass 2's update with a batch of n values counted elsewhere (a device): `b.counts` is laid out as counts_ (the
  // off-grid slot included), added only once the batch's NaN / ±inf / off-grid values are accepted.
  void add_counts(index_t n, const detail::histogram_batch_counts& b) {
    if (b.counts.size() != counts_.size()) {
      throw std::logic_error("qsafe::histogram::observe: a backend returned " + std::to_string(b.counts.size()) +
                             " counts for " + std::to_string(counts_.size()) + " slots");
    }
    accept_bad_values(n, {b.nan, b.inf, b.off_grid});
    // Each count < 2^63 (a batch has fewer values): the same value as int64.
    for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += static_cast<std::int64_t>(b.counts[i]);
  }

  void accept_bad_values(index_t n, const bad_values& b) {
    check_non_finite("histogram::observe", b.nan, b.inf, n);
    if (b.off_grid > 0) {
      detail::fail("histogram::observe", "x",
                   (options_.name.empty() ? std::string() : "(tensor '" + options_.name + "') ") + "has " +
                       std::to_string(b.off_grid) + " value(s) outside the histogram's grid (" +
                       (fixed_ ? std::string("the ranges given at construction")
                               : std::string("the range pass 1 observed: pass 2 must see the same batches")) +
                       "); they are neither clamped nor dropped");
    }
    if (fixed_) nan_ += b.nan, inf_ += b.inf;
  }

  channel_layout layout_;
  histogram_options options_;
  int pass_ = 0;
  bool fixed_ = false;
  bool merged_counts_ = false;
  std::vector<detail::finite_range<T>> first_;
  std::vector<std::int64_t> finite_;  // finite values per channel seen in pass 1
  std::vector<detail::grid_lanes<T>> grids_;
  std::vector<std::int64_t> counts_;  // channels x (bins + 1)
  std::int64_t nan_ = 0, inf_ = 0;
};

}  // namespace qsafe
