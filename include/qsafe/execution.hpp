#pragma once
/// \file
/// Execution policies: the backend is an object passed first, as with `std::execution` or `thrust::device`.
///
/// - `qsafe::cpu`: the scalar reference backend, double accumulation, one thread; the specification in code.
/// - `qsafe::simd`: the xsimd backend (the widest ISA the translation unit is compiled for), one thread.
/// - `qsafe::simd_parallel`: the xsimd backend with rows spread over OpenMP threads (one thread without OpenMP);
///   results are identical to `qsafe::simd`, since each row is computed by one thread.
/// The CUDA backend adds `qsafe::cuda_t{stream}` in `qsafe/cuda/`.

#include <concepts>

namespace qsafe {

/// Scalar reference backend.
struct cpu_t {};

/// xsimd backend. `threads == 1` runs on the calling thread; `threads == 0` uses OpenMP's default team size;
/// any other value that many OpenMP threads.
struct simd_t {
  int threads = 1;
};

inline constexpr cpu_t cpu{};
inline constexpr simd_t simd{};
inline constexpr simd_t simd_parallel{0};

/// A policy that runs on the host.
template <class P>
concept host_policy = std::same_as<P, cpu_t> || std::same_as<P, simd_t>;

/// The element types the host backends support.
template <class T>
concept host_element = std::same_as<T, float> || std::same_as<T, double>;

}  // namespace qsafe
