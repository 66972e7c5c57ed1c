#pragma once
// Fresh random inputs per run, with the seed printed on failure (Catch's INFO) and replayable through the
// environment variable QSAFE_TEST_SEED.

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>

namespace qsafe::test {

inline std::uint64_t fresh_seed() {
  if (const char* env = std::getenv("QSAFE_TEST_SEED")) return std::stoull(env);
  std::random_device device;
  return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}

struct rng {
  std::uint64_t seed;
  std::mt19937_64 engine;
  explicit rng(std::uint64_t s) : seed(s), engine(s) {}

  double normal(double mean = 0.0, double sd = 1.0) { return std::normal_distribution<double>(mean, sd)(engine); }
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(engine); }
  long integer(long lo, long hi) { return std::uniform_int_distribution<long>(lo, hi)(engine); }
  bool coin(double p = 0.5) { return std::bernoulli_distribution(p)(engine); }
};

}  // namespace qsafe::test

// Declares `rng` seeded freshly and records the seed in every assertion's failure message.
#define QSAFE_TEST_RNG(name)                            \
  ::qsafe::test::rng name(::qsafe::test::fresh_seed()); \
  INFO("replay with QSAFE_TEST_SEED=" << name.seed)
