#pragma once
// Row-length modes as the kernels see them. full_rows and causal_rows run on the device as they are; the modes
// that hold a std::span of lengths (which must point to device memory for the CUDA backend) become a raw pointer.
// A user-defined mode whose `row_length` is __host__ __device__ passes through unchanged.

#include <cstdint>

#include "qsafe/softmax_variant.hpp"

namespace qsafe::detail::cuda {

struct device_padded_rows {
  const std::int32_t* lengths;
  index_t rows_per_length;
  __device__ index_t row_length(index_t row, index_t /*cols*/) const { return lengths[row / rows_per_length]; }
};

struct device_causal_padded_rows {
  causal_rows causal;
  device_padded_rows padded;
  __device__ index_t row_length(index_t row, index_t cols) const {
    const index_t a = causal.row_length(row, cols), b = padded.row_length(row, cols);
    return a < b ? a : b;
  }
};

template <class Mode>
const Mode& device_form(const Mode& mode) {
  return mode;
}
inline device_padded_rows device_form(const padded_rows& mode) {
  return {mode.lengths.data(), mode.rows_per_length};
}
inline device_causal_padded_rows device_form(const causal_padded_rows& mode) {
  return {causal_rows{mode.queries, mode.offset}, {mode.lengths.data(), mode.rows_per_length}};
}

// The device pointers a mode reads (for the check that they are device memory); none by default.
template <class Mode>
const std::int32_t* length_pointer(const Mode&) {
  return nullptr;
}
inline const std::int32_t* length_pointer(const padded_rows& mode) {
  return mode.lengths.data();
}
inline const std::int32_t* length_pointer(const causal_padded_rows& mode) {
  return mode.lengths.data();
}

}  // namespace qsafe::detail::cuda
