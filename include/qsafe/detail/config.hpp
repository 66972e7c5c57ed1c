#pragma once
// Annotations that let the small policy structs run in CUDA kernels too; empty in host-only translation units.

#if defined(__CUDACC__)
#define QSAFE_HOST_DEVICE __host__ __device__
#else
#define QSAFE_HOST_DEVICE
#endif
