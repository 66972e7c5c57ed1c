#pragma once
// GPU test support: device buffers, strided test matrices mirrored on the host in float, the (element type) grid,
// and row-length modes built over device copies of the lengths. The CPU reference is qsafe::cpu run on the float
// values of the very elements the GPU reads.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "qsafe/cuda/execution.cuh"
#include "qsafe/softmax.hpp"
#include "support/random.hpp"
#include "support/softmax_reference.hpp"

namespace qsafe::test::gpu {

// The element types of the CUDA backend; fp32 arithmetic inside for all of them.
#define QSAFE_CUDA_ELEMENTS float, __half, __nv_bfloat16

template <class T>
struct element_traits;
template <>
struct element_traits<float> {
  static float to_float(float v) { return v; }
  static float from_float(float v) { return v; }
  static constexpr double eps = 0x1p-23;         // unit roundoff x 2
  static constexpr double underflow = 0x1p-126;  // below this, results may flush to zero
};
template <>
struct element_traits<__half> {
  static float to_float(__half v) { return __half2float(v); }
  static __half from_float(float v) { return __float2half_rn(v); }
  static constexpr double eps = 0x1p-10;
  static constexpr double underflow = 0x1p-24;  // the spacing of half's subnormals
};
template <>
struct element_traits<__nv_bfloat16> {
  static float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
  static constexpr double eps = 0x1p-7;
  static constexpr double underflow = 0x1p-126;
};

// The value of `v` once stored as a T.
template <class T>
float round_to(float v) {
  return element_traits<T>::to_float(element_traits<T>::from_float(v));
}

inline void check(cudaError_t code, const char* call) {
  detail::cuda::check(code, "test", call);
}

template <class T>
struct device_buffer {
  T* data = nullptr;
  std::size_t size = 0;
  explicit device_buffer(std::size_t n) : size(n) {
    check(cudaMalloc(&data, std::max<std::size_t>(n, 1) * sizeof(T)), "cudaMalloc");
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  ~device_buffer() { cudaFree(data); }
  void upload(const std::vector<T>& host) {
    check(cudaMemcpy(data, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  std::vector<T> download() const {
    std::vector<T> host(size);
    check(cudaMemcpy(host.data(), data, size * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return host;
  }
};

struct gpu_shape {
  index_t rows, cols, stride, misalign;
  bool aligned() const { return misalign == 0; }
};

// Half of the shapes have every row start 16-byte aligned (the vectorized kernels); the others a misaligned start
// or an odd stride (the single-element fallback). Many rows for short rows, so several blocks and a partial last
// block run.
template <class T>
gpu_shape random_gpu_shape(rng& random, index_t cols) {
  const index_t rows = cols <= 64     ? random.integer(1, 300)
                       : cols <= 1100 ? random.integer(1, 40)
                                      : random.integer(1, 5);
  const index_t packet = 16 / static_cast<index_t>(sizeof(T));
  if (random.coin()) {
    const index_t stride = (cols + random.integer(0, 1) * random.integer(1, 9) + packet - 1) / packet * packet;
    return {rows, cols, stride, 0};
  }
  return {rows, cols, cols + random.integer(0, 3), random.integer(rows == 1 ? 1 : 0, 3)};
}

// A strided matrix on the device, poisoned outside and (before a kernel writes it) inside the view, mirrored on
// the host in float. `storage` includes `misalign` leading elements.
template <class T>
struct test_matrix {
  gpu_shape shape;
  std::vector<float> host;  // the view's values, row-major with the same stride (no misalign)
  device_buffer<T> device;
  static float poison() { return round_to<T>(12345.0f); }

  explicit test_matrix(const gpu_shape& s)
      : shape(s),
        host(static_cast<std::size_t>(std::max<index_t>(s.rows * s.stride, 1)), poison()),
        device(static_cast<std::size_t>(s.misalign + std::max<index_t>(s.rows * s.stride, 1))) {
    upload();
  }
  float& operator()(index_t r, index_t c) { return host[static_cast<std::size_t>(r * shape.stride + c)]; }
  float operator()(index_t r, index_t c) const { return host[static_cast<std::size_t>(r * shape.stride + c)]; }
  const float* row(index_t r) const { return host.data() + r * shape.stride; }

  void upload() {
    std::vector<T> all(device.size, element_traits<T>::from_float(poison()));
    for (std::size_t i = 0; i < host.size(); ++i)
      all[static_cast<std::size_t>(shape.misalign) + i] = element_traits<T>::from_float(host[i]);
    device.upload(all);
  }
  // Downloads the view into `host`; returns whether everything outside the view still holds the poison.
  bool download() {
    const std::vector<T> all = device.download();
    bool untouched = true;
    for (std::size_t i = 0; i < all.size(); ++i) {
      const float v = element_traits<T>::to_float(all[i]);
      const auto offset = static_cast<index_t>(i) - shape.misalign;
      const bool inside = offset >= 0 && offset < shape.rows * shape.stride && offset % shape.stride < shape.cols;
      if (inside) {
        host[static_cast<std::size_t>(offset)] = v;
      } else if (!(v == poison())) {
        untouched = false;
      }
    }
    return untouched;
  }
  matrix_view<T> view() { return {device.data + shape.misalign, shape.rows, shape.cols, shape.stride}; }
  matrix_view<const T> cview() { return view(); }
  matrix_view<const float> host_view() const { return {host.data(), shape.rows, shape.cols, shape.stride}; }
  matrix_view<float> host_view() { return {host.data(), shape.rows, shape.cols, shape.stride}; }
};

// Scores as on the host tests (normal, spread 3, some -inf), rounded to T.
template <class T>
void fill_scores(rng& random, test_matrix<T>& x, bool with_neg_inf) {
  for (index_t r = 0; r < x.shape.rows; ++r)
    for (index_t c = 0; c < x.shape.cols; ++c)
      x(r, c) = (with_neg_inf && random.coin(0.1)) ? -std::numeric_limits<float>::infinity()
                                                   : round_to<T>(static_cast<float>(random.normal(0.0, 3.0)));
  x.upload();
}

template <class T>
void fill_normal(rng& random, test_matrix<T>& m) {
  for (index_t r = 0; r < m.shape.rows; ++r)
    for (index_t c = 0; c < m.shape.cols; ++c) m(r, c) = round_to<T>(static_cast<float>(random.normal()));
  m.upload();
}

// The row-length modes of `d`, twice: over the host lengths (for the CPU reference) and over a device copy.
struct length_modes {
  const length_data& data;
  device_buffer<std::int32_t> device;
  explicit length_modes(const length_data& d) : data(d), device(d.lengths.size()) { device.upload(d.lengths); }

  template <class F>
  void visit(F&& f) const {
    const std::span<const std::int32_t> on_device(device.data, data.lengths.size());
    switch (data.kind) {
      case length_kind::padded:
        return f(padded_rows{data.lengths, data.rows_per_length}, padded_rows{on_device, data.rows_per_length});
      case length_kind::causal:
        return f(causal_rows{data.queries, data.offset}, causal_rows{data.queries, data.offset});
      case length_kind::causal_padded:
        return f(causal_padded_rows{data.queries, data.offset, data.lengths, data.rows_per_length},
                 causal_padded_rows{data.queries, data.offset, on_device, data.rows_per_length});
      case length_kind::full:
        break;
    }
    f(full_rows{}, full_rows{});
  }
};

// The columns of the host tests plus the GPU's shape boundaries: 2049 (a block per row), 9000 (512 threads a row or,
// for the ops caching 16 elements a thread, streamed), 20000 (streamed).
inline std::vector<index_t> gpu_test_columns(rng& random) {
  std::vector<index_t> cols = test_columns(random);
  cols.insert(cols.end(), {2049, 9000, 20000});
  return cols;
}

inline constexpr double eps_f32 = 0x1p-23;

// Relative error bound of the GPU's fp32 p against the exact value: the rounding of x - m amplified by exp
// (|x - m|·eps), ex2.approx and the argument scaling (2|x - m|·eps + a few ulp), the sum of L terms
// (L/8·eps covers a per-thread sum of L/threads terms and the tree), the reference's own rounding.
inline double p_error(double x_minus_m, index_t length) {
  if (std::isinf(x_minus_m) || std::isnan(x_minus_m)) x_minus_m = 0;
  return eps_f32 * (16 + 3 * std::fabs(x_minus_m) + static_cast<double>(length) / 8);
}

// A row's scores, p and dy for a failure message: every key of a short row, else the key of the largest p.
inline std::string row_values(const float* x, const float* p, const float* dy, index_t length) {
  std::ostringstream out;
  out << std::setprecision(9);
  index_t top = 0;
  for (index_t j = 1; j < length; ++j)
    if (p[j] > p[top]) top = j;
  for (index_t j = length <= 8 ? 0 : top; j < (length <= 8 ? length : top + 1); ++j)
    out << "key " << j << ": x " << x[j] << ", p " << p[j] << ", dy " << dy[j] << "; ";
  return out.str();
}

// The row max over valid keys (0 if none finite), for the |x - m| in the bounds.
inline double row_max(const float* x, index_t length) {
  double m = -std::numeric_limits<double>::infinity();
  for (index_t j = 0; j < length; ++j) m = std::max(m, static_cast<double>(x[j]));
  return std::isinf(m) ? 0 : m;
}

// As the host tests: rows where some v = a·p + b lies within rounding of 0 or 1 may have their clip mask decided
// either way, which changes the whole row's gradient; they are skipped (and counted). A p_j of exactly 1 is exempt
// where both sides read that p (`shared_p`: the GPU's float v and the reference's double v agree at p = 1 for the
// tests' variants at every L up to 8192; docs/softmax.md) or the row is one-hot (the gradient does not depend on
// its mask); recomputed p rounded to 1 beside nonzero p_k is not: its mask decides p_k·(zeta - gamma)·dy_j in the
// other keys' dx, and v = zeta = 1 there.
inline bool mask_is_ambiguous(const reference_params& v, const float* p, index_t length, double p_err, bool shared_p) {
  if (!v.clips) return false;
  const bool one_hot = std::count_if(p, p + length, [](float pj) { return pj != 0; }) == 1;
  for (index_t j = 0; j < length; ++j) {
    if (p[j] == 0 || (p[j] == 1 && (shared_p || one_hot))) continue;
    const double affine = static_cast<double>(v.zeta - v.gamma) * p[j] + static_cast<double>(v.gamma);
    const double slack = 4 * (std::fabs(static_cast<double>(v.zeta - v.gamma)) * p[j] * (p_err + eps_f32) +
                              eps_f32 * std::fabs(static_cast<double>(v.gamma)));
    if (std::fabs(affine) <= slack || std::fabs(affine - 1) <= slack) return true;
  }
  return false;
}

// The same float, bit for bit (-0 and +0 differ), NaN equal to NaN.
inline bool same_bits(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return std::memcmp(&a, &b, sizeof a) == 0;
}

// The policy for a test call: half of the time with a reusable workspace (the cached-scratch path), else without
// (scratch allocated per call on the stream).
inline cuda_t some_policy(rng& random, cuda_workspace& workspace) {
  return random.coin() ? cuda_t{nullptr, &workspace} : cuda_t{};
}

}  // namespace qsafe::test::gpu
