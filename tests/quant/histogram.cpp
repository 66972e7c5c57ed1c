// Exact histograms (qsafe/histogram.hpp): counts against the documented bin function value by value, bins against
// long-double edges, identical counts for any split into batches, threads and merged parts, per channel equal to
// per tensor on each channel's values, bad input (NaN, ±inf, values off the grid, mismatched passes), and the
// serialized state (to_bytes / from_bytes): round trips at every stage, workers merging through bytes, bad bytes.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "qsafe/histogram.hpp"
#include "support/backends.hpp"
#include "support/distributions.hpp"

using namespace qsafe;
using namespace qsafe::test;

namespace {

template <class T>
matrix_view<const T> as_view(const std::vector<T>& v, index_t rows) {
  return {v.data(), rows, static_cast<index_t>(v.size()) / rows};
}

// Runs both passes over the given batches.
template <class T, class Policy>
histogram<T> two_pass(const Policy& policy, const std::vector<matrix_view<const T>>& batches,
                      channel_layout layout = {}, histogram_options options = {}) {
  histogram<T> h(layout, options);
  calibrate(policy, h, std::span<const matrix_view<const T>>(batches));
  return h;
}

template <class T>
std::vector<std::int64_t> all_counts(const histogram<T>& h) {
  std::vector<std::int64_t> out;
  for (index_t c = 0; c < h.layout().channels; ++c) {
    const auto counts = h.counts(c);
    out.insert(out.end(), counts.begin(), counts.end());
  }
  return out;
}

}  // namespace

TEMPLATE_TEST_CASE("histogram counts are the documented bin function of every value, on long-double edges",
                   "[histogram]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (const data_kind kind : all_data_kinds) {
    INFO("data: " << name(kind));
    // 2048: the default; beyond 2^16 bins the per-tensor kernel spreads over four tables instead of eight.
    const index_t bins = random.coin() ? 2048 : random.coin() ? random.integer(1, 300) : random.integer(65537, 70000);
    const index_t rows = random.integer(1, 4), cols = random.integer(1, 5000);
    const std::vector<T> x = make_data<T>(random, kind, rows * cols);
    histogram_options options;
    options.bins = bins;
    const histogram<T> h = two_pass<T>(TestType::policy, {as_view(x, rows)}, {}, options);
    // The counts are exactly the histogram of bin_of over the values (the kernels, sub-tables included).
    std::vector<std::int64_t> expected(static_cast<std::size_t>(bins), 0);
    const value_range g = h.grid(0);
    const long double lo = g.lo, w = (static_cast<long double>(g.hi) - g.lo) / bins;
    for (const T v : x) {
      const std::int32_t b = h.bin_of(0, v);
      REQUIRE(b >= 0);
      REQUIRE(b < bins);
      ++expected[static_cast<std::size_t>(b)];
      // The bin holds v up to the rounding of fl(fl(v − lo)·scale): a few ulps of the grid's magnitude.
      const long double tol = 8 * std::numeric_limits<T>::epsilon() * (std::fabs(g.lo) + std::fabs(g.hi));
      if (w > 0) {
        REQUIRE(static_cast<long double>(v) >= lo + b * w - tol);
        REQUIRE(static_cast<long double>(v) <= lo + (b + 1) * w + tol);
      }
    }
    const auto counts = h.counts(0);
    REQUIRE(std::vector<std::int64_t>(counts.begin(), counts.end()) == expected);
    REQUIRE(h.total(0) == static_cast<std::int64_t>(x.size()));
    REQUIRE(h.data_range(0).lo == static_cast<double>(*std::min_element(x.begin(), x.end())));
    REQUIRE(h.data_range(0).hi == static_cast<double>(*std::max_element(x.begin(), x.end())));
  }
}

TEMPLATE_TEST_CASE("a range too narrow for a finite bin scale (subnormal ends) still bins every value",
                   "[histogram][edge]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  // Width 2·denorm_min: bins / width overflows T, so the scale is capped at T's largest value (an infinite scale
  // gave lo's bin as 0·inf = NaN, converted to an integer: undefined, an out-of-bounds increment in practice).
  const T d = std::numeric_limits<T>::denorm_min();
  const std::vector<T> x = {d, 2 * d, 3 * d, d, 3 * d, 2 * d};
  const histogram<T> h = two_pass<T>(TestType::policy, {as_view(x, 1)});
  for (const T v : x) {
    const std::int32_t b = h.bin_of(0, v);
    CHECK(b >= 0);
    CHECK(b < 2048);
  }
  CHECK(h.total(0) == static_cast<std::int64_t>(x.size()));
  CHECK(h.data_range(0).lo == static_cast<double>(d));
  CHECK(h.data_range(0).hi == static_cast<double>(3 * d));
}

TEMPLATE_TEST_CASE("any split into batches, threads and merged parts gives the identical histogram", "[histogram]",
                   float, double) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  for (const data_kind kind : all_data_kinds) {
    INFO("data: " << name(kind));
    const index_t cols = random.integer(1, 700), rows = random.integer(8, 40);
    const std::vector<T> x = make_data<T>(random, kind, rows * cols);
    const histogram<T> whole = two_pass<T>(cpu, {as_view(x, rows)});
    // Random batches (split at row boundaries), fed in a random order, to simd with 1, 2 and 3 threads.
    std::vector<matrix_view<const T>> batches;
    for (index_t r = 0; r < rows;) {
      const index_t take = std::min(rows - r, random.integer(1, 9));
      batches.emplace_back(x.data() + r * cols, take, cols);
      r += take;
    }
    std::shuffle(batches.begin(), batches.end(), random.engine);
    for (const int threads : {1, 2, 3}) {
      const histogram<T> split = two_pass<T>(simd_t{threads}, batches);
      REQUIRE(all_counts(split) == all_counts(whole));
    }
    // Separate histograms per batch on the agreed grid (the cross-process recipe), merged in any order.
    const value_range grid = whole.grid(0);
    histogram<T> merged(std::span<const value_range>(&grid, 1));
    for (const auto& b : batches) {
      histogram<T> part(std::span<const value_range>(&grid, 1));
      part.observe(simd, b);
      merged.merge(part);
    }
    REQUIRE(all_counts(merged) == all_counts(whole));
    // Pass-1 merging: two two-pass histograms that merge after pass 1 agree on the grid of all the data.
    histogram<T> a, b;
    for (std::size_t i = 0; i < batches.size(); ++i) (i % 2 ? a : b).observe(simd, batches[i]);
    a.merge(b);
    REQUIRE(a.next_pass());
    for (const auto& batch : batches) a.observe(simd, batch);
    REQUIRE_FALSE(a.next_pass());
    REQUIRE(all_counts(a) == all_counts(whole));
  }
}

// Inside another parallel region OpenMP grants a nested team of one thread: the row blocks must still cover every
// row (they were split for the team asked for, and two thirds of the rows went uncounted).
TEST_CASE("a histogram observed from inside a parallel region counts every row", "[histogram][threads]") {
#if defined(_OPENMP)
  QSAFE_TEST_RNG(random);
  const index_t rows = random.integer(6, 40), cols = random.integer(1, 300);
  const std::vector<float> x = make_data<float>(random, data_kind::normal, rows * cols);
  const matrix_view<const float> xv(x.data(), rows, cols);
  const histogram<float> serial = two_pass<float>(simd, {xv});
  const value_range grid = serial.grid(0);
  std::vector<std::vector<std::int64_t>> nested(2);
#pragma omp parallel num_threads(2)
  {
    histogram<float> h(std::span<const value_range>(&grid, 1));
    h.observe(simd_t{3}, xv);
    nested[static_cast<std::size_t>(omp_get_thread_num())] = all_counts(h);
  }
  for (const auto& counts : nested) {
    if (!counts.empty()) CHECK(counts == all_counts(serial));
  }
#else
  WARN("built without OpenMP: nothing nested to test");
#endif
}

TEMPLATE_TEST_CASE("per-channel histograms equal per-tensor histograms of each channel's values", "[histogram]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  for (const channel_axis axis : {channel_axis::row, channel_axis::column}) {
    // Along columns: more than one 16-column block and, sometimes, more than one 4096-row block of the kernel.
    const index_t channels = axis == channel_axis::row ? random.integer(1, 6) : random.integer(1, 40);
    const index_t rows = axis == channel_axis::row
                             ? channels * random.integer(1, 5)
                             : (random.coin() ? random.integer(1, 50) : random.integer(4090, 4200));
    const index_t cols = axis == channel_axis::column ? channels : random.integer(1, 300);
    std::vector<T> x = make_data<T>(random, data_kind::heavy_tailed, rows * cols);
    const channel_layout layout{axis, channels};
    histogram_options options;
    options.bins = random.integer(2, 600);
    const histogram<T> h = two_pass<T>(TestType::policy, {as_view(x, rows)}, layout, options);
    // Threads: private tables summed; the same counts for any team size.
    for (const int threads : {2, 3}) {
      const histogram<T> threaded = two_pass<T>(simd_t{threads}, {as_view(x, rows)}, layout, options);
      REQUIRE(all_counts(threaded) == all_counts(h));
    }
    for (index_t c = 0; c < channels; ++c) {
      std::vector<T> values;
      for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < cols; ++j)
          if ((axis == channel_axis::column ? j : r % channels) == c)
            values.push_back(x[static_cast<std::size_t>(r * cols + j)]);
      const histogram<T> single = two_pass<T>(TestType::policy, {as_view(values, 1)}, {}, options);
      const auto a = h.counts(c), b = single.counts(0);
      REQUIRE(std::vector<std::int64_t>(a.begin(), a.end()) == std::vector<std::int64_t>(b.begin(), b.end()));
      REQUIRE(h.grid(c).lo == single.grid(0).lo);
      REQUIRE(h.grid(c).hi == single.grid(0).hi);
    }
  }
}

TEMPLATE_TEST_CASE("the symmetric grid is centred on 0 and holds every value", "[histogram]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  std::vector<T> x = make_data<T>(random, data_kind::normal, 3000);
  histogram_options options;
  options.grid = histogram_grid::symmetric;
  const histogram<T> h = two_pass<T>(TestType::policy, {as_view(x, 3)}, {}, options);
  const value_range g = h.grid(0);
  REQUIRE(g.lo == -g.hi);
  REQUIRE(g.hi == static_cast<double>(std::max(std::fabs(*std::min_element(x.begin(), x.end())),
                                               std::fabs(*std::max_element(x.begin(), x.end())))));
  REQUIRE(h.total(0) == 3000);
}

TEMPLATE_TEST_CASE("NaN in calibration data is an error naming the tensor and the count, or skipped and counted",
                   "[histogram][errors]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> x = make_data<T>(random, data_kind::normal, 1000);
  for (const int i : {3, 500, 999}) x[static_cast<std::size_t>(i)] = nan;
  std::vector<T> clean = make_data<T>(random, data_kind::normal, 1000);
  histogram_options options;
  options.name = "encoder.3.fc1";
  histogram<T> h({}, options);
  h.observe(TestType::policy, as_view(clean, 10));
  try {
    h.observe(TestType::policy, as_view(x, 10));
    FAIL("NaN accepted");
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    INFO(what);
    REQUIRE(what.find("encoder.3.fc1") != std::string::npos);
    REQUIRE(what.find("3 NaN") != std::string::npos);
    REQUIRE(what.find("'x'") != std::string::npos);
  }
  // The histogram is unchanged: the clean batch alone completes both passes.
  REQUIRE(h.next_pass());
  h.observe(TestType::policy, as_view(clean, 10));
  REQUIRE_FALSE(h.next_pass());
  REQUIRE(h.total(0) == 1000);

  // Skipped and counted, in both passes; the grid ignores them.
  options.nan = non_finite_policy::skip;
  histogram<T> s({}, options);
  calibrate(TestType::policy, s, as_view(x, 10));
  REQUIRE(s.nan_count() == 3);
  REQUIRE(s.total(0) == 997);
  REQUIRE(std::isfinite(s.grid(0).lo));
  REQUIRE(std::isfinite(s.grid(0).hi));
  // ±inf is still an error under a NaN-only skip policy.
  x[10] = std::numeric_limits<T>::infinity();
  histogram<T> t({}, options);
  REQUIRE_THROWS_WITH(t.observe(TestType::policy, as_view(x, 10)), Catch::Contains("1 infinite value"));
}

TEMPLATE_TEST_CASE("±inf in calibration data is an error or, by option, skipped: never an infinite range",
                   "[histogram][errors]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  constexpr T inf = std::numeric_limits<T>::infinity();
  std::vector<T> x = make_data<T>(random, data_kind::normal, 600);
  x[7] = inf;
  x[8] = -inf;
  histogram<T> h;
  REQUIRE_THROWS_WITH(h.observe(TestType::policy, as_view(x, 6)), Catch::Contains("2 infinite value"));
  histogram_options options;
  options.inf = non_finite_policy::skip;
  for (const channel_layout layout : {channel_layout{}, channel_layout{channel_axis::column, 100}}) {
    histogram<T> s(layout, options);
    calibrate(TestType::policy, s, as_view(x, 6));
    REQUIRE(s.inf_count() == 2);
    std::int64_t total = 0;
    for (index_t c = 0; c < layout.channels; ++c) {
      total += s.total(c);
      REQUIRE(std::isfinite(s.grid(c).hi));
      REQUIRE(std::isfinite(s.grid(c).lo));
    }
    REQUIRE(total == 598);
  }
}

TEMPLATE_TEST_CASE("values off the grid are an error and leave the counts unchanged", "[histogram][errors]",
                   QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  QSAFE_TEST_RNG(random);
  std::vector<T> x = make_data<T>(random, data_kind::normal, 800);
  for (const channel_layout layout :
       {channel_layout{}, channel_layout{channel_axis::row, 4}, channel_layout{channel_axis::column, 100}}) {
    INFO("channels " << layout.channels);
    histogram<T> h(layout);
    h.observe(TestType::policy, as_view(x, 8));
    REQUIRE(h.next_pass());
    h.observe(TestType::policy, as_view(x, 8));
    const std::vector<std::int64_t> before = all_counts(h);
    std::vector<T> other = x;
    other[5] = T(1000);  // pass 2 sees a batch pass 1 did not
    REQUIRE_THROWS_WITH(h.observe(TestType::policy, as_view(other, 8)),
                        Catch::Contains("1 value(s) outside the histogram's grid"));
    REQUIRE(all_counts(h) == before);
    REQUIRE_THROWS_WITH(h.observe(simd_t{3}, as_view(other, 8)), Catch::Contains("outside the histogram's grid"));
    REQUIRE(all_counts(h) == before);
    // Different batches in pass 2, all on the grid: the count check catches it.
    h.observe(TestType::policy, matrix_view<const T>(x.data(), 4, 100));
    REQUIRE_THROWS_WITH(h.next_pass(), Catch::Contains("feed the same batches"));
  }
  // A fixed grid rejects values outside it (never clamped, never dropped).
  const value_range r{-1.0, 1.0};
  histogram<T> fixed(std::span<const value_range>(&r, 1));
  REQUIRE_THROWS_WITH(fixed.observe(TestType::policy, as_view(x, 8)), Catch::Contains("the ranges given"));
  REQUIRE(fixed.total(0) == 0);
}

TEST_CASE("histogram preconditions name the argument", "[histogram][errors]") {
  histogram_options bad;
  bad.bins = 0;
  REQUIRE_THROWS_WITH(histogram<float>({}, bad), Catch::Contains("'options.bins'"));
  REQUIRE_THROWS_WITH(histogram<float>(channel_layout{channel_axis::row, 0}), Catch::Contains("'layout.channels'"));
  const value_range inverted{1.0, -1.0};
  REQUIRE_THROWS_WITH(histogram<float>(std::span<const value_range>(&inverted, 1)), Catch::Contains("'ranges[0]'"));
  histogram<float> h;
  REQUIRE_THROWS_AS(h.counts(0), std::logic_error);
  REQUIRE_THROWS_AS(h.next_pass(), std::logic_error);  // nothing observed: no grid
  const std::vector<float> x(12, 1.0f);
  histogram<float> wrong(channel_layout{channel_axis::column, 5});
  REQUIRE_THROWS_WITH(wrong.observe(simd, as_view(x, 3)), Catch::Contains("'x'"));
  histogram<float> a, b;
  a.observe(simd, as_view(x, 3));
  b.observe(simd, as_view(x, 3));
  REQUIRE(b.next_pass());
  REQUIRE_THROWS_WITH(a.merge(b), Catch::Contains("different pass"));
}

TEMPLATE_TEST_CASE("constant and tiny data get a valid grid", "[histogram]", QSAFE_HOST_CONFIGS) {
  using T = typename TestType::element;
  const std::vector<T> x(5000, T(3.25));
  const histogram<T> h = two_pass<T>(TestType::policy, {as_view(x, 5)});
  REQUIRE(h.counts(0)[0] == 5000);
  REQUIRE(h.grid(0).lo == 3.25);
  REQUIRE(h.grid(0).hi == 3.25);
}

TEMPLATE_TEST_CASE("a histogram's bytes rebuild it exactly at every stage; workers merge through them exactly",
                   "[histogram][bytes]", float, double) {
  using T = TestType;
  QSAFE_TEST_RNG(random);
  const index_t cols = random.integer(3, 90), rows = 3 * random.integer(4, 12);
  std::vector<T> x = make_data<T>(random, data_kind::heavy_tailed, rows * cols);
  x[static_cast<std::size_t>(random.integer(0, rows * cols - 1))] = std::numeric_limits<T>::quiet_NaN();
  std::vector<matrix_view<const T>> batches;
  for (index_t r = 0; r < rows; r += 3) batches.emplace_back(x.data() + r * cols, 3, cols);
  histogram_options options;
  options.bins = random.integer(2, 300);
  options.name = "layer.3 \"q\"";
  options.nan = non_finite_policy::skip;
  const auto roundtrip = [](const histogram<T>& h) {
    const std::vector<std::uint8_t> bytes = h.to_bytes();
    const histogram<T> copy = histogram<T>::from_bytes(bytes);
    CHECK(copy.to_bytes() == bytes);
    return copy;
  };
  for (const channel_layout layout :
       {channel_layout{}, channel_layout{channel_axis::column, cols}, channel_layout{channel_axis::row, 3}}) {
    INFO("layout axis " << static_cast<int>(layout.axis) << ", " << layout.channels << " channels");
    const histogram<T> whole = two_pass<T>(simd, batches, layout, options);
    // Every stage: a copy continued with the rest of the protocol ends where the original does.
    histogram<T> h(layout, options);
    h.observe(simd, batches[0]);
    histogram<T> copy = roundtrip(h);
    for (std::size_t i = 1; i < batches.size(); ++i) h.observe(simd, batches[i]), copy.observe(simd, batches[i]);
    REQUIRE(h.next_pass());
    copy = roundtrip(copy);
    REQUIRE(copy.next_pass());
    h.observe(simd, batches[0]);
    copy = roundtrip(copy);
    copy.observe(simd, batches[0]);
    copy = roundtrip(copy);
    for (std::size_t i = 1; i < batches.size(); ++i) h.observe(simd, batches[i]), copy.observe(simd, batches[i]);
    REQUIRE_FALSE(copy.next_pass());
    REQUIRE_FALSE(h.next_pass());
    CHECK(roundtrip(copy).to_bytes() == h.to_bytes());
    CHECK(all_counts(copy) == all_counts(whole));
    CHECK(copy.options().name == options.name);

    // merge()'s recipe between three workers that exchange only bytes: pass 1 each, merged at a root, sent back;
    // pass 2 each on its own batches, merged at the root: the histogram of all the data, bit for bit.
    std::vector<std::vector<std::uint8_t>> sent(3);
    for (std::size_t w = 0; w < 3; ++w) {
      histogram<T> worker(layout, options);
      for (std::size_t i = w; i < batches.size(); i += 3) worker.observe(simd, batches[i]);
      sent[w] = worker.to_bytes();
    }
    histogram<T> root = histogram<T>::from_bytes(sent[0]);
    for (std::size_t w = 1; w < 3; ++w) root.merge(histogram<T>::from_bytes(sent[w]));
    const std::vector<std::uint8_t> agreed = root.to_bytes();
    for (std::size_t w = 0; w < 3; ++w) {
      histogram<T> worker = histogram<T>::from_bytes(agreed);
      REQUIRE(worker.next_pass());
      for (std::size_t i = w; i < batches.size(); i += 3) worker.observe(simd, batches[i]);
      sent[w] = worker.to_bytes();
    }
    histogram<T> total = histogram<T>::from_bytes(sent[2]);
    for (std::size_t w = 0; w < 2; ++w) total.merge(histogram<T>::from_bytes(sent[w]));
    REQUIRE_FALSE(total.next_pass());
    CHECK(all_counts(total) == all_counts(whole));
    CHECK(total.nan_count() == 1);
    CHECK(whole.nan_count() == 1);
    std::vector<value_range> ranges;
    for (index_t c = 0; c < layout.channels; ++c) {
      CHECK(total.grid(c).lo == whole.grid(c).lo);
      CHECK(total.grid(c).hi == whole.grid(c).hi);
      ranges.push_back(whole.grid(c));
    }

    // The other recipe: fixed grids on agreed ranges, one pass; copies before and after counting, parts merged
    // through bytes (here NaN is counted in the one pass, once per worker that saw it).
    histogram<T> fixed(ranges, layout, options);
    CHECK(roundtrip(fixed).pass() == 1);
    histogram<T> merged = roundtrip(fixed);
    for (std::size_t w = 0; w < 3; ++w) {
      histogram<T> worker = roundtrip(fixed);
      for (std::size_t i = w; i < batches.size(); i += 3) worker.observe(simd, batches[i]);
      merged.merge(histogram<T>::from_bytes(worker.to_bytes()));
    }
    CHECK(all_counts(merged) == all_counts(whole));
    CHECK(merged.nan_count() == 1);
    CHECK(roundtrip(merged).to_bytes() == merged.to_bytes());
  }
}

TEST_CASE("bytes that are not a histogram's state are refused naming 'bytes'", "[histogram][bytes][errors]") {
  histogram_options options;
  options.bins = 5;
  histogram<float> h(channel_layout{channel_axis::column, 2}, options);
  const std::vector<float> x{1.0f, -2.0f, 0.5f, 4.0f, 3.0f, 0.0f};
  h.observe(cpu, matrix_view<const float>(x.data(), 3, 2));
  REQUIRE(h.next_pass());
  h.observe(cpu, matrix_view<const float>(x.data(), 3, 2));
  const std::vector<std::uint8_t> good = h.to_bytes();
  const auto refused = [](std::vector<std::uint8_t> bytes, const std::string& what) {
    INFO("expected: " << what);
    CHECK_THROWS_WITH(histogram<float>::from_bytes(bytes),
                      Catch::Contains("argument 'bytes'") && Catch::Contains(what));
  };
  for (std::size_t n = 0; n < good.size(); ++n) {  // every truncation
    refused(std::vector<std::uint8_t>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)), "");
  }
  auto extra = good;
  extra.push_back(0);
  refused(extra, "after the end");
  auto magic = good;
  magic[0] = 'x';
  refused(magic, "magic");
  auto version = good;
  version[4] = 2;
  refused(version, "version 2");
  CHECK_THROWS_WITH(histogram<double>::from_bytes(good), Catch::Contains("4-byte elements"));
  auto channels = good;
  channels[10] = 0;  // the channel count's low byte (magic 4, version 4, element size 1, axis 1)
  refused(channels, "0 channels");
  auto bins = good;
  bins[18] = 0;  // the bin count's low byte
  refused(bins, "bins");
  auto huge = good;  // 2^24 bins: refused from the length (the counts' bytes are not there), not by allocating them
  huge[18] = 0, huge[21] = 0x01;
  refused(huge, "ends early");
  auto negative = good;
  negative[negative.size() - 1] = 0x80;  // the last count's sign byte
  refused(negative, "negative bin count");
  CHECK(histogram<float>::from_bytes(good).to_bytes() == good);
}
