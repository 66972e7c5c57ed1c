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

// The threads for_each_block asks OpenMP for: at most one per row.
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

// Splits rows [0, rows) into one contiguous block per thread: f(thread, begin, end), thread < team_size(threads,
// rows). The split uses the team OpenMP actually gives (fewer threads inside another parallel region): every row
// is visited whatever the runtime grants.
template <class F>
void for_each_block(int threads, index_t rows, F&& f) {
#if defined(_OPENMP)
  if (const int team = team_size(threads, rows); team > 1) {
#pragma omp parallel num_threads(team)
    {
      const int t = omp_get_thread_num(), size = omp_get_num_threads();
      f(t, rows * t / size, rows * (t + 1) / size);
    }
    return;
  }
#else
  (void)threads;
#endif
  f(0, index_t(0), rows);
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
