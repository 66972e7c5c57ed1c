#pragma once
// Spreads independent rows over OpenMP threads when asked for and available; each row is computed by exactly
// one thread, so results do not depend on the thread count.

#include "qsafe/matrix_view.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace qsafe::detail {

template <class F>
void for_each_row(int threads, index_t rows, F&& f) {
#if defined(_OPENMP)
  if (threads != 1 && rows > 1) {
    const int team = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel for num_threads(team) schedule(static)
    for (index_t r = 0; r < rows; ++r) f(r);
    return;
  }
#else
  (void)threads;
#endif
  for (index_t r = 0; r < rows; ++r) f(r);
}

}  // namespace qsafe::detail

#include "qsafe/execution.hpp"

namespace qsafe::detail {

inline int thread_count(cpu_t) {
  return 1;
}
inline int thread_count(simd_t policy) {
  return policy.threads;
}

}  // namespace qsafe::detail
