#pragma once
/// \file qsafe's version (kept equal to the CMake project version).

namespace qsafe {
inline constexpr int version_major = 0;
inline constexpr int version_minor = 1;
inline constexpr int version_patch = 0;
}  // namespace qsafe
