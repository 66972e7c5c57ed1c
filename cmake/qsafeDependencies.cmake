# The library's dependencies, found the same way by the build tree and by the installed qsafeConfig.cmake.
include(CMakeFindDependencyMacro)
find_dependency(Eigen3 3.3 NO_MODULE)
find_dependency(xsimd 8)
if(NOT TARGET xtl)
  # Debian's xsimd 8 config links a target named xtl without finding it; xsimd uses no xtl code by default.
  add_library(xtl INTERFACE IMPORTED)
endif()
if(QSAFE_USE_OPENMP)
  find_package(OpenMP COMPONENTS CXX QUIET)
endif()
