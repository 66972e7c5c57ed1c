#pragma once
// Loads and stores of a row's partial last batch through a small aligned buffer, so tails use the same vector
// code as the body (the same exp, the same rounding) instead of a scalar loop.

#include <algorithm>
#include <xsimd/xsimd.hpp>

#include "qsafe/matrix_view.hpp"

namespace qsafe::detail::simd {

template <class T>
using batch = xsimd::batch<T>;

template <class T>
batch<T> load_partial(const T* p, index_t n, T fill) {
  alignas(64) T buffer[batch<T>::size];
  std::fill(buffer, buffer + batch<T>::size, fill);
  std::copy(p, p + n, buffer);
  return batch<T>::load_aligned(buffer);
}

template <class T>
void store_partial(T* p, index_t n, const batch<T>& v) {
  alignas(64) T buffer[batch<T>::size];
  v.store_aligned(buffer);
  std::copy(buffer, buffer + n, p);
}

template <class T>
T reduce_max(const batch<T>& v) {
  alignas(64) T buffer[batch<T>::size];
  v.store_aligned(buffer);
  T m = buffer[0];
  for (std::size_t i = 1; i < batch<T>::size; ++i) m = std::max(m, buffer[i]);
  return m;
}

// A hint to bring the cache line holding p into L1; never faults, even past the end of an allocation.
template <class T>
void prefetch(const T* p) {
  __builtin_prefetch(p, 0, 3);
}

template <bool Tail, class T>
batch<T> load(const T* p, index_t n, T fill) {
  if constexpr (Tail) {
    return load_partial(p, n, fill);
  } else {
    (void)n, (void)fill;
    return batch<T>::load_unaligned(p);
  }
}

template <bool Tail, class T>
void store(T* p, index_t n, const batch<T>& v) {
  if constexpr (Tail) {
    store_partial(p, n, v);
  } else {
    (void)n;
    v.store_unaligned(p);
  }
}

// Calls body(offset, count, std::bool_constant<tail>) over [0, n): full batches, then one partial batch.
// Forced inline: otherwise the accumulators the body captures by reference live in memory (measured 2.5x slower).
template <class T, class Body>
[[gnu::always_inline]] inline void for_each_batch(index_t n, Body&& body) {
  constexpr index_t width = static_cast<index_t>(batch<T>::size);
  index_t j = 0;
  for (; j + width <= n; j += width) body(j, width, std::false_type{});
  if (j < n) body(j, n - j, std::true_type{});
}

}  // namespace qsafe::detail::simd
