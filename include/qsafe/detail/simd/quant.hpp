#pragma once
// Fake-quantization on xsimd batches: the same operations as the reference kernels in detail/scalar/quant.hpp
// (x·inv_s, nearbyint, + z, clamp, (q − z)·s), so results are bit-identical to them. Tails go through the
// same vector code.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <xsimd/xsimd.hpp>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "qsafe/detail/scalar/quant.hpp"
#include "qsafe/detail/simd/batch_io.hpp"

namespace qsafe::detail::simd {

template <class T>
struct lane_batches {
  batch<T> scale, inv_scale, zero_point, quant_min, quant_max;
};

// Broadcast once for a whole row.
template <class T>
struct uniform_lanes {
  lane_batches<T> b;
  explicit uniform_lanes(const uniform_params<T>& u)
      : b{batch<T>(u.p.scale), batch<T>(u.p.inv_scale), batch<T>(u.p.zero_point), batch<T>(u.p.quant_min),
          batch<T>(u.p.quant_max)} {}
  template <bool Tail>
  const lane_batches<T>& get(index_t, index_t) const {
    return b;
  }
};

// Loaded per batch of columns; the tail pads with a harmless channel (scale 1, codes [0, 1]).
template <class T>
struct column_lanes {
  column_params<T> c;
  explicit column_lanes(const column_params<T>& columns) : c(columns) {}
  template <bool Tail>
  lane_batches<T> get(index_t j, index_t n) const {
    return {load<Tail>(c.scale + j, n, T(1)), load<Tail>(c.inv_scale + j, n, T(1)),
            load<Tail>(c.zero_point + j, n, T(0)), load<Tail>(c.quant_min + j, n, T(0)),
            load<Tail>(c.quant_max + j, n, T(1))};
  }
};

template <class T>
uniform_lanes<T> lanes_for(const uniform_params<T>& u) {
  return uniform_lanes<T>(u);
}
template <class T>
column_lanes<T> lanes_for(const column_params<T>& c) {
  return column_lanes<T>(c);
}

template <class T>
batch<T> unclamped_code(const lane_batches<T>& p, const batch<T>& x) {
  return p.zero_point + xsimd::nearbyint(x * p.inv_scale);
}

// clamp that lets NaN through (comparisons with NaN are false).
template <class T>
batch<T> clamp_code(const lane_batches<T>& p, const batch<T>& v) {
  return xsimd::select(v < p.quant_min, p.quant_min, xsimd::select(v > p.quant_max, p.quant_max, v));
}

// Rounding of v = x·inv_s (the same operations as scalar::round_to_integer, so the same bits). `j` is the column
// of the batch's first lane.
template <class T>
batch<T> round_to_integer(round_half_even_tag, const batch<T>& v, index_t) {
  return xsimd::nearbyint(v);
}
template <class T>
batch<T> round_to_integer(round_half_away_tag, const batch<T>& v, index_t) {
  return xsimd::round(v);
}
// The batch's uniforms: integer hashing written as a plain loop over the lanes (the compiler vectorizes it). The
// key of the index's high word is computed once per row (the cache below) and again only where a row crosses a
// multiple of 2^32; a batch that straddles one takes the per-element path.
struct stochastic_key_cache {
  std::uint32_t hi = 0;
  stochastic_key key{};
  bool valid = false;
  const stochastic_key& get(std::uint64_t seed, std::uint32_t h) {
    if (!valid || h != hi) key = make_stochastic_key(seed, h), hi = h, valid = true;
    return key;
  }
};

template <class T>
batch<T> stochastic_uniforms(const round_stochastic_tag& r, stochastic_key_cache& cache, index_t j) {
  constexpr std::size_t width = batch<T>::size;
  alignas(64) T u[width];
  const std::uint64_t start = r.first + static_cast<std::uint64_t>(j);
  const auto lo = static_cast<std::uint32_t>(start);
  if (lo <= 0xFFFFFFFFu - (width - 1)) {
    const stochastic_key key = cache.get(r.seed, static_cast<std::uint32_t>(start >> 32));
    for (std::size_t i = 0; i < width; ++i)
      u[i] = unit_uniform<T>(counter_hash(key, lo + static_cast<std::uint32_t>(i)));
  } else {
    for (std::size_t i = 0; i < width; ++i) u[i] = stochastic_uniform<T>(r.seed, start + i);
  }
  return batch<T>::load_aligned(u);
}

// The rounding a row kernel holds: the tag, plus the key cache for stochastic rounding.
template <class Rounding>
struct row_rounding {
  const Rounding& tag;
  explicit row_rounding(const Rounding& t) : tag(t) {}
  template <class T>
  batch<T> operator()(const batch<T>& v, index_t j) {
    return round_to_integer(tag, v, j);
  }
};
template <>
struct row_rounding<round_stochastic_tag> {
  const round_stochastic_tag& tag;
  stochastic_key_cache cache;
  explicit row_rounding(const round_stochastic_tag& t) : tag(t) {}
  template <class T>
  batch<T> operator()(const batch<T>& v, index_t j) {
    const batch<T> f = xsimd::floor(v);
    return f + xsimd::select(stochastic_uniforms<T>(tag, cache, j) < v - f, batch<T>(T(1)), batch<T>(T(0)));
  }
};

template <class T, class Rounding>
batch<T> unclamped_code(const lane_batches<T>& p, row_rounding<Rounding>& rounding, const batch<T>& x, index_t j) {
  return p.zero_point + rounding(x * p.inv_scale, j);
}

template <class T>
auto passes_gradient(mask_code_tag, const lane_batches<T>& p, const batch<T>& v, const batch<T>&) {
  return (v >= p.quant_min) && (v <= p.quant_max);
}
template <class T>
auto passes_gradient(mask_range_tag, const lane_batches<T>& p, const batch<T>&, const batch<T>& x) {
  return (x >= (p.quant_min - p.zero_point) * p.scale) && (x <= (p.quant_max - p.zero_point) * p.scale);
}
template <class T>
auto passes_gradient(mask_none_tag, const lane_batches<T>&, const batch<T>&, const batch<T>& x) {
  return x == x;  // false only for NaN
}

// Tuning: outputs at least this large are written with non-temporal stores (the line is written without being
// read first, and does not evict the input). Measured on the dev machine (AVX2), fake_quantize of 2^27 floats:
// 0.73 -> 0.50 ns/element (memcpy 0.44-0.48). Below the L3 size (32 MiB there) plain stores leave y in cache for
// the next op.
inline constexpr std::size_t streaming_store_bytes = std::size_t{32} << 20;

// Non-temporal store of a full batch to an address aligned to the batch's size; a plain store on ISAs without one.
template <class T>
void store_stream(T* p, const batch<T>& v) {
  constexpr std::size_t bytes = sizeof(typename batch<T>::register_type);
  if constexpr (false) {
  }
#if defined(__AVX512F__)
  else if constexpr (bytes == 64) {
    if constexpr (std::is_same_v<T, float>) {
      _mm512_stream_ps(p, v);
    } else {
      _mm512_stream_pd(p, v);
    }
  }
#endif
#if defined(__AVX__)
  else if constexpr (bytes == 32) {
    if constexpr (std::is_same_v<T, float>) {
      _mm256_stream_ps(p, v);
    } else {
      _mm256_stream_pd(p, v);
    }
  }
#endif
#if defined(__SSE2__)
  else if constexpr (bytes == 16) {
    if constexpr (std::is_same_v<T, float>) {
      _mm_stream_ps(p, v);
    } else {
      _mm_stream_pd(p, v);
    }
  }
#endif
  else {
    v.store_aligned(p);
  }
}

// Runs value(j, m, tail) -> batch over [0, n) and stores each batch at out + j. Streaming: a partial batch up to
// the first address aligned to the batch size, non-temporal stores from there, a partial batch at the end (the
// same vector code everywhere, so the results do not depend on the store path).
template <class T, class Value>
[[gnu::always_inline]] inline void for_each_output_batch(index_t n, T* out, bool streaming, Value&& value) {
  constexpr index_t width = static_cast<index_t>(batch<T>::size);
  if (!streaming) {
    for_each_batch<T>(
        n, [&](index_t j, index_t m, auto tail) { store<decltype(tail)::value>(out + j, m, value(j, m, tail)); });
    return;
  }
  constexpr auto alignment = sizeof(batch<T>);
  const auto misalignment = reinterpret_cast<std::uintptr_t>(out) % alignment;
  index_t j = misalignment == 0 || misalignment % sizeof(T) != 0
                  ? 0
                  : std::min(n, static_cast<index_t>((alignment - misalignment) / sizeof(T)));
  if (j > 0) store<true>(out, j, value(index_t(0), j, std::true_type{}));
  const bool aligned = reinterpret_cast<std::uintptr_t>(out + j) % alignment == 0;
  for (; j + width <= n; j += width) {
    const batch<T> v = value(j, width, std::false_type{});
    if (aligned) {
      store_stream(out + j, v);
    } else {
      v.store_unaligned(out + j);
    }
  }
  if (j < n) store<true>(out + j, n - j, value(j, n - j, std::true_type{}));
#if defined(__SSE__)
  _mm_sfence();  // order the non-temporal stores before anything that follows
#endif
}

template <class Params, class T>
void fake_quantize_row(const Params& params, index_t n, const T* x, T* y, bool streaming) {
  const auto lanes = lanes_for(params);
  for_each_output_batch<T>(n, y, streaming, [&](index_t j, index_t m, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const auto& p = lanes.template get<is_tail>(j, m);
    const batch<T> q = clamp_code(p, unclamped_code(p, load<is_tail>(x + j, m, T(0))));
    return batch<T>((q - p.zero_point) * p.scale);
  });
}

template <class Params, class T>
void fake_quantize_backward_row(const Params& params, index_t n, const T* x, const T* dy, T* dx, bool streaming) {
  const auto lanes = lanes_for(params);
  for_each_output_batch<T>(n, dx, streaming, [&](index_t j, index_t m, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const auto& p = lanes.template get<is_tail>(j, m);
    const batch<T> v = unclamped_code(p, load<is_tail>(x + j, m, T(0)));
    const batch<T> g = load<is_tail>(dy + j, m, T(0));
    return xsimd::select((v >= p.quant_min) && (v <= p.quant_max), g, batch<T>(T(0)));
  });
}

template <class Params, class Rounding, class T>
void fake_quantize_row(const Params& params, const Rounding& tag, index_t n, const T* x, T* y, bool streaming) {
  const auto lanes = lanes_for(params);
  row_rounding<Rounding> rounding(tag);
  for_each_output_batch<T>(n, y, streaming, [&](index_t j, index_t m, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const auto& p = lanes.template get<is_tail>(j, m);
    const batch<T> q = clamp_code(p, unclamped_code(p, rounding, load<is_tail>(x + j, m, T(0)), j));
    return batch<T>((q - p.zero_point) * p.scale);
  });
}

template <class Params, class Rounding, class Mask, class T>
void fake_quantize_backward_row(const Params& params, const Rounding& tag, const Mask& mask, index_t n, const T* x,
                                const T* dy, T* dx, bool streaming) {
  const auto lanes = lanes_for(params);
  row_rounding<Rounding> rounding(tag);
  for_each_output_batch<T>(n, dx, streaming, [&](index_t j, index_t m, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const auto& p = lanes.template get<is_tail>(j, m);
    const batch<T> xv = load<is_tail>(x + j, m, T(0));
    batch<T> v(T(0));
    if constexpr (std::is_same_v<Mask, mask_code_tag>) v = unclamped_code(p, rounding, xv, j);
    const batch<T> g = load<is_tail>(dy + j, m, T(0));
    return xsimd::select(passes_gradient(mask, p, v, xv), g, batch<T>(T(0)));
  });
}

template <class Params, class Rounding, class T, class Code>
void quantize_row(const Params& params, const Rounding& tag, index_t n, const T* x, Code* q) {
  const auto lanes = lanes_for(params);
  row_rounding<Rounding> rounding(tag);
  alignas(64) T codes[batch<T>::size];
  for_each_batch<T>(n, [&](index_t j, index_t m, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const auto& p = lanes.template get<is_tail>(j, m);
    const batch<T> v = clamp_code(p, unclamped_code(p, rounding, load<is_tail>(x + j, m, T(0)), j));
    xsimd::select(xsimd::isnan(v), p.zero_point, v).store_aligned(codes);
    for (index_t i = 0; i < m; ++i) q[j + i] = static_cast<Code>(codes[i]);
  });
}

// Codes computed in vector registers, converted to the integer type through a small buffer (NaN: zero point).
template <class Params, class T, class Code>
void quantize_row(const Params& params, index_t n, const T* x, Code* q) {
  const auto lanes = lanes_for(params);
  alignas(64) T codes[batch<T>::size];
  for_each_batch<T>(n, [&](index_t j, index_t m, auto tail) {
    constexpr bool is_tail = decltype(tail)::value;
    const auto& p = lanes.template get<is_tail>(j, m);
    const batch<T> v = clamp_code(p, unclamped_code(p, load<is_tail>(x + j, m, T(0))));
    xsimd::select(xsimd::isnan(v), p.zero_point, v).store_aligned(codes);
    for (index_t i = 0; i < m; ++i) q[j + i] = static_cast<Code>(codes[i]);
  });
}

}  // namespace qsafe::detail::simd

#include "qsafe/execution.hpp"

namespace qsafe::detail {

template <class Params, class T>
void fake_quantize_row(simd_t, const Params& params, index_t n, const T* x, T* y, bool streaming) {
  simd::fake_quantize_row(params, n, x, y, streaming);
}
template <class Params, class T>
void fake_quantize_backward_row(simd_t, const Params& params, index_t n, const T* x, const T* dy, T* dx,
                                bool streaming) {
  simd::fake_quantize_backward_row(params, n, x, dy, dx, streaming);
}
// Whether a call writing `bytes` of output should stream it past the caches.
inline bool streaming_output(simd_t, std::size_t bytes) {
  return bytes >= simd::streaming_store_bytes;
}
template <class Params, class T, class Code>
void quantize_row(simd_t, const Params& params, index_t n, const T* x, Code* q) {
  simd::quantize_row(params, n, x, q);
}
template <class Params, class Rounding, class T>
void fake_quantize_row(simd_t, const Params& params, const Rounding& rounding, index_t n, const T* x, T* y,
                       bool streaming) {
  simd::fake_quantize_row(params, rounding, n, x, y, streaming);
}
template <class Params, class Rounding, class Mask, class T>
void fake_quantize_backward_row(simd_t, const Params& params, const Rounding& rounding, const Mask& mask, index_t n,
                                const T* x, const T* dy, T* dx, bool streaming) {
  simd::fake_quantize_backward_row(params, rounding, mask, n, x, dy, dx, streaming);
}
template <class Params, class Rounding, class T, class Code>
void quantize_row(simd_t, const Params& params, const Rounding& rounding, index_t n, const T* x, Code* q) {
  simd::quantize_row(params, rounding, n, x, q);
}
// An integer-to-float map the compiler vectorizes by itself: the reference loop is the fast path.
template <class Params, class Code, class T>
void dequantize_row(simd_t, const Params& params, index_t n, const Code* q, T* y) {
  scalar::dequantize_row(params, n, q, y);
}

}  // namespace qsafe::detail
