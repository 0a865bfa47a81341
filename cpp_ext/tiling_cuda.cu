// The real CUDA launchers: tiling_kernels.cuh's entry points over the one line that launches with <<<>>> on a
// stream. No Python here; bindings.cpp calls the entry points, which return a cudaError_t value instead of throwing
// across the C ABI. tiling_emulated.cpp builds the same entry points over the emulated launch.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

template <typename... Params, typename... Args>
int launch_on_stream(const dim3& grid, const dim3& block, void* stream, void (*kernel)(Params...), Args... args) {
    kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(args...);
    return static_cast<int>(cudaGetLastError());
}

#include "tiling_kernels.cuh"
