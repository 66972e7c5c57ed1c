#pragma once
// The CPU benchmarks' shared harness: the inputs (activations with a few outliers, 2^24 and 2^28 floats, built once
// per binary), the counters every case reports, and the memcpy yardstick measured in the same run.

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "qsafe/matrix_view.hpp"

namespace qsafe::bench {

constexpr std::int64_t small_size = std::int64_t{1} << 24, large_size = std::int64_t{1} << 28;

// Activations with a few outliers: N(0, 1) plus 1 in 10^4 values 50x larger.
inline void fill_activations(std::vector<float>& x, std::mt19937& engine) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> rare(0.0f, 1.0f);
  for (auto& v : x) v = rare(engine) < 1e-4f ? 50.0f * normal(engine) : normal(engine);
}

// The binary's `Tensors` (constructed from the element count) of small_size or large_size elements, each built on
// first use and kept.
template <class Tensors>
Tensors& shared_tensors(index_t n) {
  static Tensors small(small_size);
  if (n == small_size) return small;
  static Tensors large(large_size);
  return large;
}

// items = elements of the tensor; bytes = `tensor_count` tensors of n floats, each read or written once.
inline void set_counters(benchmark::State& state, index_t n, int tensor_count) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * n);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * n * tensor_count *
                          static_cast<std::int64_t>(sizeof(float)));
  state.counters["ns_per_element"] =
      benchmark::Counter(static_cast<double>(n) * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// The yardstick: memcpy of the state's n floats from `from` to `to` (read n, write n).
inline void memcpy_floats(benchmark::State& state, const std::vector<float>& from, std::vector<float>& to) {
  const index_t n = state.range(0);
  for (auto _ : state) {
    std::memcpy(to.data(), from.data(), static_cast<std::size_t>(n) * sizeof(float));
    benchmark::ClobberMemory();
  }
  set_counters(state, n, 2);
}

}  // namespace qsafe::bench
