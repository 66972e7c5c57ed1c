#pragma once
// The (element type x backend) grid every host test runs over: a new backend added here runs every test.

#include <limits>

#include "qsafe/execution.hpp"

namespace qsafe::test {

template <class T, class Policy>
struct config {
  using element = T;
  using policy_type = Policy;
  static constexpr Policy policy{};
  static constexpr T eps = std::numeric_limits<T>::epsilon();
};

}  // namespace qsafe::test

#define QSAFE_HOST_CONFIGS                                                                         \
  (::qsafe::test::config<float, ::qsafe::cpu_t>), (::qsafe::test::config<double, ::qsafe::cpu_t>), \
      (::qsafe::test::config<float, ::qsafe::simd_t>), (::qsafe::test::config<double, ::qsafe::simd_t>)
