#pragma once
// Little-endian byte streams for the serialized states (histogram::to_bytes): fixed-width integers and IEEE floats
// by their bit patterns, the same bytes on every host; the reader fails with the function and argument named.

#include <bit>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qsafe/detail/check.hpp"

namespace qsafe::detail {

class byte_writer {
 public:
  void u8(std::uint8_t v) { out_.push_back(v); }
  void u32(std::uint32_t v) { put(v, 4); }
  void u64(std::uint64_t v) { put(v, 8); }
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  template <class F>
  void real(F v) {
    if constexpr (sizeof(F) == 4) {
      u32(std::bit_cast<std::uint32_t>(v));
    } else {
      u64(std::bit_cast<std::uint64_t>(v));
    }
  }
  void text(std::string_view s) {
    u32(static_cast<std::uint32_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
  }
  std::vector<std::uint8_t> take() { return std::move(out_); }

 private:
  void put(std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  std::vector<std::uint8_t> out_;
};

class byte_reader {
 public:
  byte_reader(std::span<const std::uint8_t> in, std::string_view function, std::string_view argument)
      : in_(in), function_(function), argument_(argument) {}

  std::uint8_t u8() { return static_cast<std::uint8_t>(get(1)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(get(4)); }
  std::uint64_t u64() { return get(8); }
  std::int64_t i64() { return static_cast<std::int64_t>(u64()); }
  template <class F>
  F real() {
    if constexpr (sizeof(F) == 4) {
      return std::bit_cast<F>(u32());
    } else {
      return std::bit_cast<F>(u64());
    }
  }
  std::string text() {
    const std::uint32_t size = u32();
    need(size);
    std::string s(reinterpret_cast<const char*>(in_.data() + at_), size);
    at_ += size;
    return s;
  }
  // Fails unless `count` items of `size` bytes remain (before allocating for them).
  void need(std::uint64_t count, std::uint64_t size = 1) const {
    if (size != 0 && count > (in_.size() - at_) / size) fail("ends early (truncated, or not what to_bytes wrote)");
  }
  void finish() const {
    if (at_ != in_.size()) fail("has " + std::to_string(in_.size() - at_) + " byte(s) after the end of the state");
  }
  [[noreturn]] void fail(const std::string& what) const { detail::fail(function_, argument_, what); }

 private:
  std::uint64_t get(int bytes) {
    need(static_cast<std::uint64_t>(bytes));
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= static_cast<std::uint64_t>(in_[at_ + static_cast<std::size_t>(i)]) << (8 * i);
    at_ += static_cast<std::size_t>(bytes);
    return v;
  }
  std::span<const std::uint8_t> in_;
  std::size_t at_ = 0;
  std::string_view function_, argument_;
};

}  // namespace qsafe::detail
