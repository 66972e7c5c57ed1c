#pragma once
// Spreads independent rows over OpenMP threads when asked for and available; each row is computed by exactly
// one thread, so results do not depend on the thread count.

#include <algorithm>

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

// Splits rows [0, rows) into one contiguous block per thread: f(thread, begin, end), thread < team_size(threads,
// rows). The split uses the team OpenMP actually gives (fewer threads inside another parallel region): every row
// is visited whatever the runtime grants.
template <class F>
int for_each_block(int threads, index_t rows, F&& f) {
#if defined(_OPENMP)
  if (threads != 1 && rows > 1) {
    const int team = static_cast<int>(std::min<index_t>(threads > 0 ? threads : omp_get_max_threads(), rows));
    int granted = 1;
#pragma omp parallel num_threads(team)
    {
      const int t = omp_get_thread_num(), size = omp_get_num_threads();
      if (t == 0) granted = size;
      const index_t begin = rows * t / size, end = rows * (t + 1) / size;
      f(t, begin, end);
    }
    return granted;
  }
#else
  (void)threads;
#endif
  f(0, index_t(0), rows);
  return 1;
}

inline int team_size(int threads, index_t rows) {
#if defined(_OPENMP)
  if (threads != 1 && rows > 1) {
    return static_cast<int>(std::min<index_t>(threads > 0 ? threads : omp_get_max_threads(), rows));
  }
#else
  (void)threads;
#endif
  (void)rows;
  return 1;
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
