#include "checkpoint.hpp"

#include <cstring>
#include <nlohmann/json.hpp>

#include "config.hpp"
#include "data.hpp"
#include "fmt/core.h"

namespace pretrain {

void write_safetensors(const std::filesystem::path& path, const std::vector<named_tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = metadata;
  std::int64_t offset = 0;
  for (const named_tensor& t : tensors) {
    std::int64_t n = 1;
    for (std::int64_t s : t.shape) n *= s;
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + 4 * n}}};
    offset += 4 * n;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // align the data to 8 bytes, as the reference writer does
  std::string bytes(8 + h.size() + static_cast<std::size_t>(offset), '\0');
  const std::uint64_t hlen = h.size();
  for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<char>((hlen >> (8 * i)) & 0xff);
  std::memcpy(bytes.data() + 8, h.data(), h.size());
  char* out = bytes.data() + 8 + h.size();
  for (const named_tensor& t : tensors) {
    std::int64_t n = 1;
    for (std::int64_t s : t.shape) n *= s;
    std::memcpy(out, t.data, static_cast<std::size_t>(n) * 4);
    out += n * 4;
  }
  write_atomically(path, bytes);
}

safetensors_file read_safetensors(const std::filesystem::path& path) {
  const std::string bytes = read_file(path);
  auto bad = [&](const std::string& why) {
    return user_error(fmt::format("checkpoint '{}' is corrupt: {}", path.string(), why));
  };
  if (bytes.size() < 8) throw bad("shorter than its 8-byte header length");
  std::uint64_t hlen = 0;
  for (int i = 0; i < 8; ++i) hlen |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  if (hlen > bytes.size() - 8) throw bad("header length exceeds the file");
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, hlen), nullptr, false);
  if (header.is_discarded() || !header.is_object()) throw bad("header is not a JSON object");
  const std::size_t data_start = 8 + hlen, data_size = bytes.size() - data_start;
  safetensors_file file;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) throw bad("__metadata__ is not an object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) throw bad("metadata value '" + k + "' is not a string");
        file.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (!value.is_object() || value.value("dtype", "") != "F32" || !value.contains("shape") ||
        !value.contains("data_offsets")) {
      throw bad("tensor '" + key + "' is not an F32 entry with shape and data_offsets");
    }
    safetensors_file::entry e;
    std::int64_t n = 1;
    for (const auto& s : value["shape"]) {
      if (!s.is_number_integer() || s.get<std::int64_t>() < 0) throw bad("tensor '" + key + "' has a bad shape");
      e.shape.push_back(s.get<std::int64_t>());
      n *= e.shape.back();
    }
    const auto& off = value["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      throw bad("tensor '" + key + "' has bad data_offsets");
    }
    const auto begin = off[0].get<std::uint64_t>(), end = off[1].get<std::uint64_t>();
    if (begin > end || end > data_size || end - begin != static_cast<std::uint64_t>(n) * 4) {
      throw bad("tensor '" + key + "' data_offsets do not match its shape or the file size");
    }
    e.values.resize(static_cast<std::size_t>(n));
    std::memcpy(e.values.data(), bytes.data() + data_start + begin, static_cast<std::size_t>(n) * 4);
    file.tensors.emplace(key, std::move(e));
  }
  return file;
}

}  // namespace pretrain
