// The CUDA tests' runner: Catch2, unless no CUDA device is usable, then a clear message and exit code 77, which
// CTest reports as "Skipped" (SKIP_RETURN_CODE), never as a pass.

#define CATCH_CONFIG_RUNNER
#include <cuda_runtime_api.h>

#include <catch2/catch.hpp>
#include <cstdio>

int main(int argc, char* argv[]) {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no usable CUDA device (cudaGetDeviceCount: %s, %d devices); the GPU tests did not run\n",
                status == cudaSuccess ? "ok" : cudaGetErrorString(status), devices);
    return 77;
  }
  cudaDeviceProp properties{};
  if (cudaGetDeviceProperties(&properties, 0) == cudaSuccess) {
    std::printf("CUDA device 0: %s (sm_%d%d, %d SMs)\n", properties.name, properties.major, properties.minor,
                properties.multiProcessorCount);
  }
  return Catch::Session().run(argc, argv);
}
