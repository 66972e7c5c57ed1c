#pragma once
// Launches of the statistics, range, selection and MSE kernels: grids, the device workspace (stream-ordered
// cudaMallocAsync, freed on the stream), and the one copy of the result to the host at the end of each op.
// A contiguous matrix is walked as one long row; at most `reduction_tuning::max_blocks` blocks, so per-block
// partials stay few and the final combine is one small kernel.

#include <cuda_runtime.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "qsafe/cuda/execution.cuh"
#include "qsafe/detail/cuda/dispatch_softmax.cuh"  // aligned_16
#include "qsafe/detail/cuda/kernels/mse.cuh"
#include "qsafe/detail/cuda/kernels/select.cuh"
#include "qsafe/detail/cuda/kernels/stats.cuh"
#include "qsafe/moments.hpp"

namespace qsafe::detail::cuda {

struct reduction_tuning {
  // 132 SMs x 4 blocks of 256 threads (reduce_blocks_per_sm): one wave on an H100. Fixed (not read off the
  // device), so the partition of the tensor, and with it every rounding, is the same on any GPU. The first version
  // launched 1056 blocks of kernels that used 101 (moments) and 48 (MSE) registers: 2-5 waves with a tail;
  // moments 0.436 ms at 2^28 floats (82% of copy), bf16 50%.
  static constexpr index_t max_blocks = 132 * reduce_blocks_per_sm;
  // Elements per thread per tile in the moments and MSE kernels: 32 (8 float packets, 4 half ones) keeps 128
  // bytes a thread in flight and amortizes the per-tile merge over 32 values.
  static constexpr int tile_elements = 32;
  // The moments kernel's tile and blocks an SM (one wave of them). Its per-tile double work (central sums, the
  // pairwise merge) bounds it: 16-bit types take tiles of 64 values at 2 blocks an SM (128 registers): bf16 0.222 ->
  // 0.192 ms at 2^28 values on the H200; floats keep 32 at 3 (64 measured the same).
  template <class T>
  static constexpr int moments_tile = sizeof(T) == 2 ? 64 : 32;
  template <class T>
  static constexpr int moments_blocks_per_sm = sizeof(T) == 2 ? 2 : 3;
  template <class T>
  static constexpr index_t moments_max_blocks = 132 * moments_blocks_per_sm<T>;
  // Histogram copies per block in the first selection pass (the top 11 bits of every key: few hot bins).
  static constexpr int first_pass_copies = 4;
  // Candidates per MSE launch (the shared accumulators: 8 warps x 256 doubles = 16 KiB).
  static constexpr int max_candidates_per_launch = 256;
};

// A matrix as the kernels walk it: contiguous ones as a single row when that fits an int.
struct walk_shape {
  index_t rows;
  int cols;
  index_t stride;
};

template <class T>
walk_shape flat_shape(const matrix_view<const T>& x) {
  const bool contiguous = x.rows <= 1 || x.row_stride == x.cols;
  if (contiguous && x.size() <= INT_MAX / 2) return {1, static_cast<int>(x.size()), x.size()};
  return {x.rows, static_cast<int>(x.cols), x.row_stride};
}

// At most max_blocks blocks: along the row as many as the tiles need, then rows.
inline dim3 reduction_grid(const walk_shape& s, int elements_per_thread,
                           index_t max_blocks = reduction_tuning::max_blocks) {
  const index_t span = index_t{reduce_block_threads} * elements_per_thread;
  const index_t bx = std::clamp<index_t>((s.cols + span - 1) / span, 1, max_blocks);
  const index_t by = std::clamp<index_t>(max_blocks / bx, 1, std::min<index_t>(s.rows, 65535));
  return dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by));
}

// Scratch memory for one op: from the policy's cuda_workspace when it has one (kept between calls), else device
// memory allocated on the stream (cudaMallocAsync, freed stream-ordered) and a pageable host buffer.
class scratch {
 public:
  scratch(std::string_view function, const cuda_t& policy, std::size_t device_bytes, std::size_t host_bytes)
      : stream_(policy.stream) {
    device_bytes = std::max<std::size_t>(device_bytes, 16);
    if (policy.workspace != nullptr) {
      device_ = policy.workspace->device(device_bytes);
      host_ = policy.workspace->host(host_bytes);
    } else {
      check(cudaMallocAsync(&device_, device_bytes, stream_), function, "cudaMallocAsync(workspace)");
      owned_ = true;
      pageable_.resize(host_bytes);
      host_ = pageable_.data();
    }
  }
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  ~scratch() {
    if (owned_) cudaFreeAsync(device_, stream_);
  }
  template <class U>
  U* device_at(std::size_t offset) const {
    return reinterpret_cast<U*>(static_cast<char*>(device_) + offset);
  }
  template <class U>
  U* host_at(std::size_t offset) const {
    return reinterpret_cast<U*>(static_cast<char*>(host_) + offset);
  }

 private:
  cudaStream_t stream_;
  void* device_ = nullptr;
  void* host_ = nullptr;
  bool owned_ = false;
  std::vector<unsigned char> pageable_;
};

// Calls go(std::integral_constant<int, N>) with N = the 16-byte packet where every row start is aligned, else 1.
template <class T, class Go>
void with_packet(const matrix_view<const T>& x, Go&& go) {
  if (aligned_16(x.data, x.row_stride, x.rows)) {
    go(std::integral_constant<int, 16 / static_cast<int>(sizeof(T))>{});
  } else {
    go(std::integral_constant<int, 1>{});
  }
}

template <class T>
void copy_to_host(std::string_view function, cudaStream_t stream, T* host, const T* device, std::size_t count) {
  check(cudaMemcpyAsync(host, device, count * sizeof(T), cudaMemcpyDeviceToHost, stream), function,
        "cudaMemcpyAsync(result)");
  check(cudaStreamSynchronize(stream), function, "cudaStreamSynchronize");
}

// The moments of all elements (one read), and the count of non-finite ones.
template <class T>
partial_moments tensor_moments(std::string_view function, const cuda_t& policy, const matrix_view<const T>& x) {
  const cudaStream_t stream = policy.stream;
  const walk_shape s = flat_shape(x);
  constexpr int tile = reduction_tuning::moments_tile<T>, per_sm = reduction_tuning::moments_blocks_per_sm<T>;
  const dim3 grid = reduction_grid(s, tile, reduction_tuning::moments_max_blocks<T>);
  const unsigned blocks = grid.x * grid.y;
  const scratch space(function, policy, (blocks + 1) * sizeof(partial_moments), sizeof(partial_moments));
  auto* partials = space.device_at<partial_moments>(0);
  with_packet(x, [&](auto packet) {
    constexpr int N = decltype(packet)::value;
    moments_kernel<N, tile / N, T, per_sm>
        <<<grid, reduce_block_threads, 0, stream>>>(s.rows, s.cols, x.data, s.stride, partials);
  });
  check(cudaGetLastError(), function, "the moments kernel launch");
  combine_moments_kernel<<<1, reduce_block_threads, 0, stream>>>(partials, static_cast<int>(blocks), partials + blocks);
  check(cudaGetLastError(), function, "the combine kernel launch");
  auto* result = space.host_at<partial_moments>(0);
  copy_to_host(function, stream, result, partials + blocks, 1);
  return *result;
}

inline float from_order_key(std::uint32_t key) {
  const std::uint32_t bits = (key & 0x80000000u) ? (key ^ 0x80000000u) : ~key;
  return std::bit_cast<float>(bits);
}

struct channel_extremes {
  std::vector<float> lo, hi;          // per channel
  unsigned long long non_finite = 0;  // > 0: some value is NaN or ±inf (count them with count_non_finite)
};

// Min and max per channel: along rows (row r is channel r % channels; 1 channel: per tensor) or along columns
// (channels == cols).
template <class T>
channel_extremes channel_ranges(std::string_view function, const cuda_t& policy, const matrix_view<const T>& x,
                                bool along_columns, index_t channels) {
  const cudaStream_t stream = policy.stream;
  // Layout: the min keys (start at ~0u), the non-finite count and the max keys (start at 0): two memsets, one copy
  // back.
  const auto c = static_cast<std::size_t>(channels);
  const std::size_t min_bytes = (c * sizeof(std::uint32_t) + 7) / 8 * 8;
  const std::size_t bytes = min_bytes + sizeof(unsigned long long) + c * sizeof(std::uint32_t);
  const scratch space(function, policy, bytes, bytes);
  auto* min_keys = space.device_at<std::uint32_t>(0);
  auto* non_finite = space.device_at<unsigned long long>(min_bytes);
  auto* max_keys = space.device_at<std::uint32_t>(min_bytes + sizeof(unsigned long long));
  check(cudaMemsetAsync(min_keys, 0xff, min_bytes, stream), function, "cudaMemsetAsync");
  check(cudaMemsetAsync(non_finite, 0, bytes - min_bytes, stream), function, "cudaMemsetAsync");
  with_packet(x, [&](auto packet) {
    constexpr int N = decltype(packet)::value;
    if (along_columns) {
      const index_t threads = (x.cols + N - 1) / N;
      const index_t bx = (threads + reduce_block_threads - 1) / reduce_block_threads;
      const index_t by = std::clamp<index_t>(reduction_tuning::max_blocks / bx, 1, std::min<index_t>(x.rows, 65535));
      column_ranges_kernel<N>
          <<<dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by)), reduce_block_threads, 0, stream>>>(
              x.rows, static_cast<int>(x.cols), x.data, x.row_stride, min_keys, max_keys, non_finite);
    } else {
      const walk_shape s = channels == 1 ? flat_shape(x) : walk_shape{x.rows, static_cast<int>(x.cols), x.row_stride};
      dim3 grid = reduction_grid(s, range_unroll * N);
      // A multiple of `channels` rows apart: each block sees one channel (fewer publications).
      if (channels > 1 && channels <= 65535) {
        const index_t per = std::max<index_t>(1, std::min<index_t>(65535 / channels, grid.y / channels));
        grid.y = static_cast<unsigned>(std::min(channels * per, s.rows));
      }
      // Rows of a block's one channel walked several at a time, where each block has that many (else along rows).
      const bool one_channel =
          channels > 1 && grid.y % channels == 0 && s.rows >= index_t{range_unroll} * index_t{grid.y};
      const auto launch = [&](auto kernel) {
        kernel<<<grid, reduce_block_threads, 0, stream>>>(s.rows, s.cols, x.data, s.stride, channels, min_keys,
                                                          max_keys, non_finite);
      };
      if (one_channel) {
        launch(row_ranges_kernel<N, true, T>);
      } else {
        launch(row_ranges_kernel<N, false, T>);
      }
    }
  });
  check(cudaGetLastError(), function, "the range kernel launch");
  auto* host = space.host_at<unsigned char>(0);
  copy_to_host(function, stream, host, space.device_at<unsigned char>(0), bytes);
  channel_extremes out;
  std::memcpy(&out.non_finite, host + min_bytes, sizeof(unsigned long long));
  for (std::size_t i = 0; i < c; ++i) {
    std::uint32_t lo = 0, hi = 0;
    std::memcpy(&lo, host + i * sizeof(std::uint32_t), sizeof lo);
    std::memcpy(&hi, host + min_bytes + sizeof(unsigned long long) + i * sizeof(std::uint32_t), sizeof hi);
    out.lo.push_back(from_order_key(lo));
    out.hi.push_back(from_order_key(hi));
  }
  return out;
}

struct selected_values {
  std::vector<float> values;  // values[i]: the ranks[i]-th smallest (0-based)
  unsigned long long non_finite = 0;
};

// The ranks[i]-th smallest elements of x, exact: three histogram + select passes per group of
// max_select_targets ranks; the group's ranks go to the first select kernel as a parameter, and the group's results
// come back in one copy.
template <class T>
selected_values select_ranks(std::string_view function, const cuda_t& policy, const matrix_view<const T>& x,
                             std::span<const index_t> ranks) {
  const cudaStream_t stream = policy.stream;
  const walk_shape s = flat_shape(x);
  // Layout: the histograms, then the targets and the non-finite count.
  const std::size_t counts_bytes = max_select_targets * select_max_bins * sizeof(unsigned long long);
  const std::size_t result_bytes = max_select_targets * sizeof(select_target) + sizeof(unsigned long long);
  const scratch space(function, policy, counts_bytes + result_bytes, result_bytes);
  auto* counts = space.device_at<unsigned long long>(0);
  auto* targets = space.device_at<select_target>(counts_bytes);
  auto* non_finite = space.device_at<unsigned long long>(counts_bytes + max_select_targets * sizeof(select_target));
  selected_values out;
  for (std::size_t first = 0; first < ranks.size(); first += max_select_targets) {
    const int count = static_cast<int>(std::min<std::size_t>(max_select_targets, ranks.size() - first));
    select_ranks_init init{};
    for (int t = 0; t < count; ++t)
      init.rank[t] = static_cast<unsigned long long>(ranks[first + static_cast<std::size_t>(t)]);
    int known = 0;
    for (const int bits : select_digit_bits) {
      const int histograms = known == 0 ? 1 : count;
      const int copies = known == 0 ? reduction_tuning::first_pass_copies : 1;
      check(cudaMemsetAsync(counts, 0, static_cast<std::size_t>(histograms) << bits << 3, stream), function,
            "cudaMemsetAsync(counts)");
      const std::size_t shared = static_cast<std::size_t>(copies * histograms) * (std::size_t{1} << bits) * 4;
      with_packet(x, [&](auto packet) {
        constexpr int N = decltype(packet)::value;
        radix_histogram_kernel<N><<<reduction_grid(s, histogram_unroll * N), reduce_block_threads, shared, stream>>>(
            s.rows, s.cols, x.data, s.stride, targets, histograms, known, bits, copies, counts);
      });
      check(cudaGetLastError(), function, "the histogram kernel launch");
      // Pass 1 of the first group also counts the non-finite values.
      radix_select_kernel<<<1, 32 * count, 0, stream>>>(targets, count, init, known, counts, histograms, bits,
                                                        first == 0 ? non_finite : nullptr);
      check(cudaGetLastError(), function, "the select kernel launch");
      known += bits;
    }
    auto* result = space.host_at<unsigned char>(0);
    copy_to_host(function, stream, result, reinterpret_cast<const unsigned char*>(targets), result_bytes);
    for (int t = 0; t < count; ++t) {
      select_target target;
      std::memcpy(&target, result + static_cast<std::size_t>(t) * sizeof(select_target), sizeof target);
      out.values.push_back(from_order_key(target.prefix));
    }
    if (first == 0) {
      std::memcpy(&out.non_finite, result + max_select_targets * sizeof(select_target), sizeof(unsigned long long));
    }
  }
  return out;
}

// Summed squared fake-quantization error of each candidate over all elements of x, in double.
template <class T>
std::vector<double> squared_errors(std::string_view function, const cuda_t& policy, const matrix_view<const T>& x,
                                   std::span<const lane_params<float>> candidates) {
  const cudaStream_t stream = policy.stream;
  const walk_shape s = flat_shape(x);
  const dim3 grid = reduction_grid(s, reduction_tuning::tile_elements);
  const unsigned blocks = grid.x * grid.y;
  const std::size_t total = candidates.size();
  const std::size_t per = std::min<std::size_t>(total, reduction_tuning::max_candidates_per_launch);
  const std::size_t params_bytes = (total * sizeof(lane_params<float>) + 15) / 16 * 16;
  const scratch space(function, policy, params_bytes + (blocks + 1) * per * sizeof(double),
                      std::max(params_bytes, per * sizeof(double)));
  auto* params = space.device_at<lane_params<float>>(0);
  auto* partials = space.device_at<double>(params_bytes);
  double* sums = partials + blocks * per;
  // Through the host buffer (pinned with a workspace), which the copy back reuses only after synchronizing.
  std::memcpy(space.host_at<unsigned char>(0), candidates.data(), total * sizeof(lane_params<float>));
  check(cudaMemcpyAsync(params, space.host_at<unsigned char>(0), total * sizeof(lane_params<float>),
                        cudaMemcpyHostToDevice, stream),
        function, "cudaMemcpyAsync(candidates)");
  std::vector<double> out(total);
  for (std::size_t first = 0; first < total; first += per) {
    const int count = static_cast<int>(std::min(per, total - first));
    const std::size_t shared = (reduce_block_threads / 32) * static_cast<std::size_t>(count) * sizeof(double) +
                               static_cast<std::size_t>(count) * sizeof(lane_params<float>);
    with_packet(x, [&](auto packet) {
      constexpr int N = decltype(packet)::value;
      squared_error_kernel<N, reduction_tuning::tile_elements / N><<<grid, reduce_block_threads, shared, stream>>>(
          s.rows, s.cols, x.data, s.stride, params + first, count, partials);
    });
    check(cudaGetLastError(), function, "the squared-error kernel launch");
    sum_partials_kernel<<<(count + 127) / 128, 128, 0, stream>>>(partials, static_cast<int>(blocks), count, sums);
    check(cudaGetLastError(), function, "the sum kernel launch");
    copy_to_host(function, stream, space.host_at<double>(0), sums, static_cast<std::size_t>(count));
    std::memcpy(out.data() + first, space.host_at<double>(0), static_cast<std::size_t>(count) * sizeof(double));
  }
  return out;
}

// The exact number of NaN and ±inf values of x (for the error message, after a kernel flagged some).
template <class T>
unsigned long long count_non_finite(std::string_view function, const cuda_t& policy, const matrix_view<const T>& x) {
  const walk_shape s = flat_shape(x);
  const scratch space(function, policy, sizeof(unsigned long long), sizeof(unsigned long long));
  auto* count = space.device_at<unsigned long long>(0);
  check(cudaMemsetAsync(count, 0, sizeof(unsigned long long), policy.stream), function, "cudaMemsetAsync");
  with_packet(x, [&](auto packet) {
    constexpr int N = decltype(packet)::value;
    count_non_finite_kernel<N>
        <<<reduction_grid(s, N), reduce_block_threads, 0, policy.stream>>>(s.rows, s.cols, x.data, s.stride, count);
  });
  check(cudaGetLastError(), function, "the counting kernel launch");
  copy_to_host(function, policy.stream, space.host_at<unsigned long long>(0), count, 1);
  return *space.host_at<unsigned long long>(0);
}

}  // namespace qsafe::detail::cuda
