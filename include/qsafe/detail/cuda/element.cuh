#pragma once
// Element types on the device (float, __half, __nv_bfloat16): conversion to and from the fp32 the kernels compute
// in, and loads and stores of N consecutive elements, as one access of sizeof(T)·N bytes where the whole group is
// in range and as single elements at a row's end.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace qsafe::detail::cuda {

template <class T>
inline constexpr bool is_device_element =
    std::is_same_v<T, float> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

__device__ __forceinline__ float to_float(float v) {
  return v;
}
__device__ __forceinline__ float to_float(__half v) {
  return __half2float(v);
}
__device__ __forceinline__ float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <class T>
__device__ __forceinline__ T from_float(float v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return v;
  }
}

// N elements accessed as one: with sizeof(T)·N == 16 this is one 128-bit load or store.
template <class T, int N>
struct alignas(sizeof(T) * N) packet {
  T v[N];
};

// Elements [j, j + N) of `row`; those at or past `end` read as `fill` (and are not touched in memory).
template <int N, class T>
__device__ __forceinline__ packet<T, N> load_packet(const T* row, int j, int end, T fill) {
  packet<T, N> out;
  if (j + N <= end) {
    out = *reinterpret_cast<const packet<T, N>*>(row + j);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) out.v[i] = j + i < end ? row[j + i] : fill;
  }
  return out;
}

template <int N, class T>
__device__ __forceinline__ void to_float(const packet<T, N>& in, float (&out)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = to_float(in.v[i]);
}

// Two floats rounded to a 16-bit type and packed into one 32-bit word (low half first, as in memory).
template <class T>
__device__ __forceinline__ unsigned pack_pair(float a, float b) {
  unsigned bits;
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 h = __floats2half2_rn(a, b);
    memcpy(&bits, &h, sizeof bits);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    memcpy(&bits, &h, sizeof bits);
  }
  return bits;
}

// Stores v[0, N) at [j, j + N) of `row`, clipped to `end`. A whole 16-byte packet is built as a float4 / uint4
// and stored with __stwb (one st.global.v4): assigning a packet struct, or even a float4, compiled to N scalar
// stores in the elementwise kernels (seen in the PTX; bf16 fake-quantize ran at 0.84 TB/s).
template <int N, class T>
__device__ __forceinline__ void store_packet(T* row, int j, int end, const float (&v)[N]) {
  if (j + N <= end) {
    if constexpr (std::is_same_v<T, float> && N == 4) {
      __stwb(reinterpret_cast<float4*>(row + j), make_float4(v[0], v[1], v[2], v[3]));
      return;
    } else if constexpr (sizeof(T) == 2 && N == 8) {
      __stwb(reinterpret_cast<uint4*>(row + j), make_uint4(pack_pair<T>(v[0], v[1]), pack_pair<T>(v[2], v[3]),
                                                           pack_pair<T>(v[4], v[5]), pack_pair<T>(v[6], v[7])));
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < N; ++i)
    if (j + i < end) row[j + i] = from_float<T>(v[i]);
}

}  // namespace qsafe::detail::cuda
