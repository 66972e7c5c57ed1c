#pragma once
// safetensors files (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length, a JSON
// header {"__metadata__": {string: string}, name: {"dtype", "shape", "data_offsets"}}, then the raw tensors.
// PyTorch's `safetensors.torch.load_file` reads what we write. Writes are atomic (write_atomically).

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace pretrain {

struct named_tensor {
  std::string name;
  std::vector<std::int64_t> shape;
  const float* data = nullptr;  // F32, shape's product elements
};

void write_safetensors(const std::filesystem::path& path, const std::vector<named_tensor>& tensors,
                       const std::map<std::string, std::string>& metadata);

struct safetensors_file {
  struct entry {
    std::vector<std::int64_t> shape;
    std::vector<float> values;
  };
  std::map<std::string, std::string> metadata;
  std::map<std::string, entry> tensors;
};

/// Reads and checks a safetensors file (F32 tensors only); throws user_error on anything malformed.
safetensors_file read_safetensors(const std::filesystem::path& path);

}  // namespace pretrain
