#pragma once
// Inputs for the doc snippets: the snippets show the API, these only feed them.
#include <cstddef>
#include <random>
#include <vector>

namespace qsafe::test {

inline std::vector<float> normal_values(std::size_t n, unsigned seed) {
  std::mt19937 engine(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(engine);
  return v;
}

}  // namespace qsafe::test
