#pragma once
// The golden files of tests/golden (written by its generate_*.py scripts) as records: one per line, a key and its
// whitespace-separated values (hex floats, integers, names); lines starting with '#' are comments.

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace qsafe::test {

struct record {
  std::string key;
  std::vector<std::string> values;
  double number(std::size_t i) const { return std::strtod(values.at(i).c_str(), nullptr); }
  int integer(std::size_t i) const { return std::stoi(values.at(i)); }
  template <class T>
  std::vector<T> numbers(std::size_t from = 0) const {
    std::vector<T> out;
    for (std::size_t i = from; i < values.size(); ++i) out.push_back(static_cast<T>(number(i)));
    return out;
  }
};

inline std::vector<record> read_golden(const std::string& name) {
  std::ifstream in(std::string(QSAFE_GOLDEN_DIR) + "/" + name);
  REQUIRE(in.good());  // the golden files are committed next to their generators
  std::vector<record> records;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream tokens(line);
    record r;
    tokens >> r.key;
    for (std::string v; tokens >> v;) r.values.push_back(v);
    REQUIRE(r.key != "error");  // the generator hit an exception: regenerate
    records.push_back(std::move(r));
  }
  return records;
}

}  // namespace qsafe::test
