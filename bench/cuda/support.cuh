#pragma once
// The GPU benchmarks' shared harness: checked CUDA calls, device buffers, a hashed fill (no RNG state), and the
// median of event-timed runs after warm-ups (each from an idle stream, or queued back to back).

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "qsafe/cuda/execution.cuh"

namespace qsafe::bench {

inline void check(cudaError_t code, const char* call) {
  qsafe::detail::cuda::check(code, "bench", call);
}

// A sum of four hashed uniforms, centred, scaled to standard deviation `spread`: roughly normal data, so that
// values crowd as real scores and activations do.
template <class T>
__global__ void fill_sum_of_uniforms(T* out, std::size_t n, std::uint32_t seed, float spread) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n;
       i += std::size_t{gridDim.x} * blockDim.x) {
    std::uint32_t h = static_cast<std::uint32_t>(i) * 0x9E3779B1u ^ seed;
    float sum = 0.0f;
    for (int k = 0; k < 4; ++k) {
      h ^= h >> 15;
      h *= 0x2C1B3C6Du;
      h ^= h >> 12;
      h *= 0x297A2D39u;
      h ^= h >> 15;
      sum += static_cast<float>(h >> 8) * 0x1p-24f;
    }
    out[i] = static_cast<T>((sum - 2.0f) * spread * 1.7320508f);
  }
}

template <class T>
struct buffer {
  T* data = nullptr;
  explicit buffer(std::size_t n) { check(cudaMalloc(&data, n * sizeof(T)), "cudaMalloc"); }
  ~buffer() { cudaFree(data); }
  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;
};

// Median milliseconds of `repeats` runs of `run` (CUDA events on the legacy default stream), after `warmups`.
inline double median_ms(int repeats, const std::function<void()>& run, int warmups = 3) {
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  for (int i = 0; i < warmups; ++i) run();
  std::vector<float> times;
  for (int i = 0; i < repeats; ++i) {
    check(cudaEventRecord(start), "cudaEventRecord");
    run();
    check(cudaEventRecord(stop), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    times.push_back(ms);
  }
  check(cudaEventDestroy(start), "cudaEventDestroy");
  check(cudaEventDestroy(stop), "cudaEventDestroy");
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// As median_ms, but the runs are queued back to back (each between its own two events, one synchronization at the
// end): the host's work in a call (a per-channel call converts and uploads its parameters) overlaps the previous
// call's kernel, as in an engine that keeps its stream busy. median_ms counts it, from an idle stream.
inline double queued_median_ms(int repeats, const std::function<void()>& run, int warmups = 3) {
  for (int i = 0; i < warmups; ++i) run();
  std::vector<cudaEvent_t> events(2 * static_cast<std::size_t>(repeats));
  for (cudaEvent_t& e : events) check(cudaEventCreate(&e), "cudaEventCreate");
  for (std::size_t i = 0; i < events.size(); i += 2) {
    check(cudaEventRecord(events[i]), "cudaEventRecord");
    run();
    check(cudaEventRecord(events[i + 1]), "cudaEventRecord");
  }
  check(cudaEventSynchronize(events.back()), "cudaEventSynchronize");
  std::vector<float> times;
  for (std::size_t i = 0; i < events.size(); i += 2) {
    float ms = 0;
    check(cudaEventElapsedTime(&ms, events[i], events[i + 1]), "cudaEventElapsedTime");
    times.push_back(ms);
  }
  for (cudaEvent_t e : events) check(cudaEventDestroy(e), "cudaEventDestroy");
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace qsafe::bench
