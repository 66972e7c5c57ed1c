#pragma once
// Launch geometry of the elementwise fake-quantization kernels: a contiguous matrix is one long row; blocks of
// 256 threads walking 16-byte packets (kernels/quant.cuh), a few packets a thread, rows over the y dimension.

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <span>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "qsafe/cuda/execution.cuh"
#include "qsafe/detail/cuda/dispatch_softmax.cuh"  // all_aligned_16, all_contiguous
#include "qsafe/detail/cuda/kernels/quant.cuh"
#include "qsafe/quant.hpp"

namespace qsafe::detail::cuda {

struct quant_tuning {
  static constexpr int block_threads = quant_block_threads;
  static constexpr index_t max_blocks_y = 65535;
  // Packets a thread walks: all in flight at once while they are no more than its ring's stages. Column channels
  // take 8 rows, so that a thread's column parameters, loaded once, serve 8 packets (at 1 packet a thread the
  // parameter loads outweighed the data: bf16 columns at a fifth of the speed); per tensor 1 and row channels 2
  // measured best (H100, docs/performance.md).
  template <class Params>
  static constexpr index_t packets_per_thread = std::is_same_v<Params, column_channel_params> ? 8
                                                : std::is_same_v<Params, row_channel_params>  ? 2
                                                                                              : 1;
};

// Launches `Kernel` (template argument N: elements a packet) over the matrix (rows x cols with the strides given),
// flattening a contiguous one into a single row when its size fits an int. The grid gives each thread about
// `packets_per_thread` packets: along a row (grid-stride beyond) and down rows (rows over the y dimension); a thread
// that covers a column packet for several rows takes its column parameters once. `args(rows, cols)` gives the
// kernel's arguments.
template <class T, template <int> class KernelOf, class Args>
void launch_elementwise(std::string_view function, cudaStream_t stream, index_t rows, index_t cols, bool contiguous,
                        bool aligned, index_t packets_per_thread, Args&& args) {
  if (contiguous && rows * cols <= INT_MAX / 2) {
    cols *= rows;
    rows = 1;
  }
  const auto go = [&](auto packet) {
    constexpr int N = decltype(packet)::value;
    constexpr auto kernel = KernelOf<N>::value;
    constexpr index_t per_block = index_t{N} * quant_tuning::block_threads;
    const index_t steps = (cols + per_block - 1) / per_block;  // blocks that cover a row
    const index_t want = (rows * steps + packets_per_thread - 1) / packets_per_thread;
    const index_t blocks_x = std::min<index_t>(steps, std::max<index_t>(want, 1));
    const index_t blocks_y = std::min({rows, (want + blocks_x - 1) / blocks_x, quant_tuning::max_blocks_y});
    const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>(std::max<index_t>(blocks_y, 1)));
    std::apply([&](auto... a) { kernel<<<grid, quant_tuning::block_threads, 0, stream>>>(a...); },
               args(rows, static_cast<int>(cols)));
  };
  if (aligned) {
    go(std::integral_constant<int, 16 / static_cast<int>(sizeof(T))>{});
  } else {
    go(std::integral_constant<int, 1>{});
  }
  check(cudaGetLastError(), function, "the kernel launch");
}

// Params: tensor_params (a contiguous matrix is then walked as one row), or per channel (row_channel_params,
// column_channel_params: rows stay rows). The stochastic stream index of element (r, j) is
// options.index_offset + r·cols + j, as on the host (flattening keeps it).
template <class Params, class T>
void fake_quantize(cudaStream_t stream, const Params& p, matrix_view<const T> x, matrix_view<T> y,
                   const fake_quant_options& options) {
  constexpr bool per_tensor = std::is_same_v<Params, tensor_params>;
  const bool contiguous = per_tensor && all_contiguous(x, y);
  const bool aligned = all_aligned_16(x, y);
  with_rounding(options, options.index_offset, [&](const auto& rounding) {
    using Rounding = std::decay_t<decltype(rounding)>;
    launch_elementwise<T, fake_quantize_kernel_of<Params, Rounding, T>::template at>(
        "fake_quantize", stream, x.rows, x.cols, contiguous, aligned, quant_tuning::packets_per_thread<Params>,
        [&](index_t rows, int cols) {
          return std::tuple(p, rounding, rows, cols, x.data, x.row_stride, y.data, y.row_stride);
        });
  });
}

template <class Params, class T>
void fake_quantize_backward(cudaStream_t stream, const Params& p, matrix_view<const T> x, matrix_view<const T> dy,
                            matrix_view<T> dx, const fake_quant_options& options) {
  constexpr bool per_tensor = std::is_same_v<Params, tensor_params>;
  const bool contiguous = per_tensor && all_contiguous(x, dy, dx);
  const bool aligned = all_aligned_16(x, dy, dx);
  with_rounding_and_mask(options, options.index_offset, [&](const auto& rounding, const auto& mask) {
    using Rounding = std::decay_t<decltype(rounding)>;
    using Mask = std::decay_t<decltype(mask)>;
    launch_elementwise<T, fake_quantize_backward_kernel_of<Params, Rounding, Mask, T>::template at>(
        "fake_quantize_backward", stream, x.rows, x.cols, contiguous, aligned, quant_tuning::packets_per_thread<Params>,
        [&](index_t rows, int cols) {
          return std::tuple(p, rounding, mask, rows, cols, x.data, x.row_stride, dy.data, dy.row_stride, dx.data,
                            dx.row_stride);
        });
  });
}

// The kernels' fp32 form of per-channel parameters, into `out`.
inline void convert_channel_params(std::span<const quant_params> params, code_params* out) {
  for (std::size_t c = 0; c < params.size(); ++c) out[c] = to_code_params(to_lanes<float>(params[c]));
}

// Per-channel parameters on the device for one launch, in the kernels' fp32 form (code_params). With a workspace:
// staged in its pinned memory and copied into its device memory, asynchronously (the workspace is used on one stream,
// so the next call's copy is ordered after this launch). Without one: copied from pageable memory into memory allocated
// on the stream (the copy first waits for the work queued on the stream; the allocation is freed stream-ordered).
class device_channel_params {
 public:
  device_channel_params(std::string_view function, const cuda_t& policy, std::span<const quant_params> params)
      : stream_(policy.stream) {
    const std::size_t bytes = params.size() * sizeof(code_params);
    code_params* staging = nullptr;  // host memory the copy reads
    std::vector<code_params> pageable;
    if (policy.workspace != nullptr) {
      staging = static_cast<code_params*>(policy.workspace->host(bytes));
      data_ = static_cast<code_params*>(policy.workspace->device(bytes));
    } else {
      pageable.resize(params.size());
      staging = pageable.data();
      check(cudaMallocAsync(&data_, bytes, stream_), function, "cudaMallocAsync(params)");
      owned_ = true;
    }
    convert_channel_params(params, staging);
    const cudaError_t copied = cudaMemcpyAsync(data_, staging, bytes, cudaMemcpyHostToDevice, stream_);
    if (copied != cudaSuccess && owned_) cudaFreeAsync(data_, stream_);  // no destructor runs after a throw here
    check(copied, function, "cudaMemcpyAsync(params)");
    if (policy.workspace != nullptr) policy.workspace->uploaded(stream_);
  }
  device_channel_params(const device_channel_params&) = delete;
  device_channel_params& operator=(const device_channel_params&) = delete;
  ~device_channel_params() {
    if (owned_) cudaFreeAsync(data_, stream_);
  }
  const code_params* data() const { return data_; }

 private:
  cudaStream_t stream_;
  code_params* data_ = nullptr;
  bool owned_ = false;
};

// Calls f(params) with the kernels' view of `channels` per-channel parameters on the device along `axis`.
template <class F>
void with_device_channel_params(const code_params* data, std::size_t channels, channel_axis axis, F&& f) {
  if (axis == channel_axis::column) {
    f(column_channel_params{data, static_cast<int>(channels)});
  } else {
    f(row_channel_params{data, static_cast<index_t>(channels)});
  }
}

// Calls f(params) with the kernels' form of per-channel parameters along `axis`, uploaded for this call.
template <class F>
void with_channel_params(std::string_view function, const cuda_t& policy, std::span<const quant_params> params,
                         channel_axis axis, F&& f) {
  const device_channel_params on_device(function, policy, params);
  with_device_channel_params(on_device.data(), params.size(), axis, std::forward<F>(f));
}

// New device memory holding the kernels' form of `params` (checked by the caller), copied synchronously: it is built
// once and read by many calls. The caller frees it with cudaFree.
inline code_params* upload_channel_params(std::string_view function, std::span<const quant_params> params) {
  std::vector<code_params> host(params.size());
  convert_channel_params(params, host.data());
  const std::size_t bytes = host.size() * sizeof(code_params);
  code_params* data = nullptr;
  check(cudaMalloc(&data, bytes), function, "cudaMalloc(params)");
  const cudaError_t copied = cudaMemcpy(data, host.data(), bytes, cudaMemcpyHostToDevice);
  if (copied != cudaSuccess) cudaFree(data);
  check(copied, function, "cudaMemcpy(params)");
  return data;
}

}  // namespace qsafe::detail::cuda
