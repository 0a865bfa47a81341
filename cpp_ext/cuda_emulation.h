// Just enough of CUDA for g++ to compile tiling_kernels.cuh for the host, and a launch that runs every
// (block, thread) of the real launch configuration in sequence. Exact for kernels without shared memory,
// barriers or warp intrinsics (ptxas reports 0 barriers for ours; scripts/check_cuda_build.sh checks); their one
// atomic, atomicAdd, is a plain add when one thread runs at a time.
//
// __half is GCC's _Float16, whose conversion from float rounds to nearest even like __float2half_rn on every
// non-NaN value (NaN payloads may differ: tests compare NaNs as equal). Build with -ffp-contract=off, so that
// g++ does not fuse a multiply and an add the device computes apart.
#pragma once

#if defined(__CUDACC__)
#error "cuda_emulation.h is for host compilers; nvcc has the real CUDA"
#endif

#include <cstdint>
#include <mutex>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct uint3 {
    unsigned x, y, z;
};

// The emulated thread's coordinates: set by emulated_launch() before each kernel call.
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

using __half = _Float16;

inline float __half2float(__half h) { return static_cast<float>(h); }
inline __half __float2half_rn(float f) { return static_cast<__half>(f); }

// CUDA's atomicAdd: the old value, the sum stored (the emulated threads run one at a time).
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
    const unsigned long long old = *address;
    *address = old + value;
    return old;
}

namespace cuda_emulation {

constexpr int kSuccess = 0;
constexpr int kInvalidConfiguration = 9;  // cudaErrorInvalidConfiguration

// The limits of every CUDA device since compute capability 3.0.
inline bool launch_fits(const dim3& grid, const dim3& block) {
    const uint64_t threads = uint64_t{block.x} * block.y * block.z;
    return grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && block.x >= 1 && block.y >= 1 && block.z >= 1 &&
           grid.x <= 2147483647u && grid.y <= 65535 && grid.z <= 65535 && block.x <= 1024 && block.y <= 1024 &&
           block.z <= 64 && threads <= 1024;
}

// kernel(args...) once per (block, thread) of the launch, or cudaErrorInvalidConfiguration as the device would.
template <typename... Params, typename... Args>
int emulated_launch(const dim3& grid, const dim3& block, void (*kernel)(Params...), Args... args) {
    if (!launch_fits(grid, block)) return kInvalidConfiguration;
    gridDim = grid;
    blockDim = block;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx)
                for (unsigned tz = 0; tz < block.z; ++tz)
                    for (unsigned ty = 0; ty < block.y; ++ty)
                        for (unsigned tx = 0; tx < block.x; ++tx) {
                            blockIdx = {bx, by, bz};
                            threadIdx = {tx, ty, tz};
                            kernel(args...);
                        }
    return kSuccess;
}

// The stream of every emulated launch, in order (read and cleared by unetrt._tiling_emu.launched_streams()).
struct StreamLog {
    std::mutex mutex;
    std::vector<uintptr_t> streams;
};

inline StreamLog& stream_log() {
    static StreamLog log;
    return log;
}

}  // namespace cuda_emulation

// What `kernel<<<grid, block, 0, stream>>>(args...)` is in tiling_cuda.cu: here the stream is recorded and the
// kernel runs at once (the emulation has one timeline; the fake driver of the tests orders work per stream).
template <typename... Params, typename... Args>
int launch_on_stream(const dim3& grid, const dim3& block, void* stream, void (*kernel)(Params...), Args... args) {
    {
        cuda_emulation::StreamLog& log = cuda_emulation::stream_log();
        std::lock_guard<std::mutex> lock(log.mutex);
        log.streams.push_back(reinterpret_cast<uintptr_t>(stream));
    }
    return cuda_emulation::emulated_launch(grid, block, kernel, args...);
}
