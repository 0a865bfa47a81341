// The real CUDA launchers: tiling_kernels.cuh's StreamLaunch over the one line that launches with <<<>>> on a
// stream. No Python here; bindings.cpp calls the launchers, which return a cudaError_t value instead of throwing
// across the C ABI. tiling_emulated.cpp builds the same launchers over the emulated launch.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

template <typename... Params, typename... Args>
int launch_on_stream(const dim3& grid, const dim3& block, void* stream, void (*kernel)(Params...), Args... args) {
    kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(args...);
    return static_cast<int>(cudaGetLastError());
}

#include "tiling_kernels.cuh"

namespace unetrt {

int extract_tiles_cuda(const ImageView& image, void* out, DType out_dtype, const ExtractParams& params,
                       void* stream) {
    StreamLaunch launch{stream};
    return launch_extract(image, out, out_dtype, params, launch);
}

int stitch_tiles_cuda(const void* tiles, float* acc, float* weight, const StitchParams& params, void* stream) {
    StreamLaunch launch{stream};
    return launch_stitch(tiles, acc, weight, params, launch);
}

int finish_cuda(float* acc, const float* weight, uint8_t* mask, const FinishParams& params, void* stream) {
    StreamLaunch launch{stream};
    return launch_finish(acc, weight, mask, params, launch);
}

int finish_resized_cuda(const void* scores, const float* weight, uint8_t* mask, float* probabilities,
                        const FinishResizedParams& params, void* stream) {
    StreamLaunch launch{stream};
    return launch_finish_resized(scores, weight, mask, probabilities, params, launch);
}

int resize_bilinear_u8_cuda(const uint8_t* in, uint8_t* out, const ResizeParams& params, void* stream) {
    StreamLaunch launch{stream};
    return launch_resize_u8(in, out, params, launch);
}

}  // namespace unetrt
