// CUDA kernels: the semantics of tiling.h, one thread per output pixel. No Python here; bindings.cpp calls the
// launchers, which return a cudaError_t value instead of throwing across the C ABI.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "tiling.h"

namespace unetrt {
namespace {

constexpr int kBlockX = 32;
constexpr int kBlockY = 8;

template <typename T>
__device__ __forceinline__ float load_as_float(const T* p) {
    return static_cast<float>(*p);
}
template <>
__device__ __forceinline__ float load_as_float<__half>(const __half* p) {
    return __half2float(*p);
}

template <typename Out>
__device__ __forceinline__ void store_from_float(Out* p, float v);
template <>
__device__ __forceinline__ void store_from_float<float>(float* p, float v) {
    *p = v;
}
template <>
__device__ __forceinline__ void store_from_float<__half>(__half* p, float v) {
    *p = __float2half_rn(v);
}

// blockIdx.z = tile in the batch; x and y = pixel in the tile; every channel of that pixel per thread.
template <typename In, typename Out>
__global__ void extract_kernel(ImageView image, Out* __restrict__ out, ExtractParams p) {
    const int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t y = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y;
    const int64_t n = blockIdx.z;
    if (x >= p.tile_w || y >= p.tile_h) return;
    const Grid& g = p.grid;
    const int64_t t = g.first + n;
    const int64_t r = t / g.cols;
    const int64_t c = t % g.cols;
    const int64_t sy = reflect_index(g.origin_y + r * g.step_y + y, image.height);
    const int64_t sx = reflect_index(g.origin_x + c * g.step_x + x, image.width);
    const In* pixel = static_cast<const In*>(image.data) + sy * image.stride_y + sx * image.stride_x;
    const int64_t tile_plane = p.tile_h * p.tile_w;
    Out* dst = out + n * p.channels * tile_plane + y * p.tile_w + x;
    for (int ch = 0; ch < p.channels; ++ch) {
        const float v = load_as_float(pixel + p.src_channel[ch] * image.stride_c);
        store_from_float(dst + ch * tile_plane, add_rn(mul_rn(v, p.mul[ch]), p.add[ch]));
    }
}

template <typename T>
struct DeviceLoad {
    const T* data;
    __device__ float operator()(int64_t i) const { return load_as_float(data + i); }
};

template <typename T>
__global__ void stitch_kernel(const T* __restrict__ tiles, float* acc, float* weight, StitchParams p,
                              int64_t y_begin) {
    const int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t y = y_begin + static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y;
    if (x >= p.width || y >= p.height) return;
    stitch_pixel(y, x, p, DeviceLoad<T>{tiles}, acc, weight);
}

__global__ void finish_kernel(float* acc, const float* weight, uint8_t* mask, FinishParams p) {
    const int64_t total = p.height * p.width;
    for (int64_t pixel = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; pixel < total;
         pixel += static_cast<int64_t>(gridDim.x) * blockDim.x)
        finish_pixel(pixel, acc, weight, mask, p);
}

template <typename T>
struct ScoreLoad {
    const T* scores;
    const float* weight;  // nullptr: not normalised
    int64_t src_h, src_w;
    __device__ float operator()(int64_t k, int64_t y, int64_t x) const {
        const float v = load_as_float(scores + (k * src_h + y) * src_w + x);
        return weight == nullptr ? v : div_rn(v, weight[y * src_w + x]);
    }
};

template <typename T>
__global__ void finish_resized_kernel(const T* __restrict__ scores, const float* __restrict__ weight,
                                      uint8_t* __restrict__ mask, float* __restrict__ probabilities,
                                      FinishResizedParams p) {
    const int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t y = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y;
    if (x >= p.out_w || y >= p.out_h) return;
    finish_resized_pixel(y, x, p, ScoreLoad<T>{scores, weight, p.src_h, p.src_w}, mask, probabilities);
}

__global__ void resize_u8_kernel(const uint8_t* __restrict__ in, uint8_t* __restrict__ out, ResizeParams p) {
    const int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t y = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y;
    if (x >= p.out_w || y >= p.out_h) return;
    resize_u8_pixel(y, x, in, out, p);
}

unsigned blocks(int64_t total, int per_block) { return static_cast<unsigned>((total + per_block - 1) / per_block); }

template <typename In>
void launch_extract(const ImageView& image, void* out, DType out_dtype, const ExtractParams& p, cudaStream_t s) {
    const dim3 block(kBlockX, kBlockY);
    const dim3 grid(blocks(p.tile_w, kBlockX), blocks(p.tile_h, kBlockY), static_cast<unsigned>(p.grid.count));
    if (out_dtype == DType::f16)
        extract_kernel<In, __half><<<grid, block, 0, s>>>(image, static_cast<__half*>(out), p);
    else
        extract_kernel<In, float><<<grid, block, 0, s>>>(image, static_cast<float*>(out), p);
}

}  // namespace

int extract_tiles_cuda(const ImageView& image, void* out, DType out_dtype, const ExtractParams& params,
                       void* stream) {
    const auto s = static_cast<cudaStream_t>(stream);
    if (image.dtype == DType::u8)
        launch_extract<uint8_t>(image, out, out_dtype, params, s);
    else if (image.dtype == DType::u16)
        launch_extract<uint16_t>(image, out, out_dtype, params, s);
    else
        launch_extract<float>(image, out, out_dtype, params, s);
    return static_cast<int>(cudaGetLastError());
}

int stitch_tiles_cuda(const void* tiles, float* acc, float* weight, const StitchParams& params, void* stream) {
    const Grid& g = params.grid;
    const int64_t first_row = g.first / g.cols;
    const int64_t last_row = (g.first + g.count - 1) / g.cols;
    const int64_t y_begin = g.origin_y + first_row * g.step_y > 0 ? g.origin_y + first_row * g.step_y : 0;
    const int64_t y_stop = g.origin_y + last_row * g.step_y + params.tile_h;
    const int64_t y_end = y_stop < params.height ? y_stop : params.height;
    if (y_end <= y_begin) return 0;
    const dim3 block(kBlockX, kBlockY);
    const dim3 grid(blocks(params.width, kBlockX), blocks(y_end - y_begin, kBlockY));
    const auto s = static_cast<cudaStream_t>(stream);
    if (params.tile_dtype == DType::f16)
        stitch_kernel<__half><<<grid, block, 0, s>>>(static_cast<const __half*>(tiles), acc, weight, params, y_begin);
    else
        stitch_kernel<float><<<grid, block, 0, s>>>(static_cast<const float*>(tiles), acc, weight, params, y_begin);
    return static_cast<int>(cudaGetLastError());
}

int finish_cuda(float* acc, const float* weight, uint8_t* mask, const FinishParams& params, void* stream) {
    const int threads = 256;
    const int64_t needed = (params.height * params.width + threads - 1) / threads;
    const unsigned grid = static_cast<unsigned>(needed < 65535 * 8 ? needed : 65535 * 8);
    finish_kernel<<<grid, threads, 0, static_cast<cudaStream_t>(stream)>>>(acc, weight, mask, params);
    return static_cast<int>(cudaGetLastError());
}

int finish_resized_cuda(const void* scores, const float* weight, uint8_t* mask, float* probabilities,
                        const FinishResizedParams& params, void* stream) {
    const dim3 block(kBlockX, kBlockY);
    const dim3 grid(blocks(params.out_w, kBlockX), blocks(params.out_h, kBlockY));
    const auto s = static_cast<cudaStream_t>(stream);
    if (params.score_dtype == DType::f16)
        finish_resized_kernel<__half><<<grid, block, 0, s>>>(static_cast<const __half*>(scores), weight, mask,
                                                              probabilities, params);
    else
        finish_resized_kernel<float><<<grid, block, 0, s>>>(static_cast<const float*>(scores), weight, mask,
                                                             probabilities, params);
    return static_cast<int>(cudaGetLastError());
}

int resize_bilinear_u8_cuda(const uint8_t* in, uint8_t* out, const ResizeParams& params, void* stream) {
    const dim3 block(kBlockX, kBlockY);
    const dim3 grid(blocks(params.out_w, kBlockX), blocks(params.out_h, kBlockY));
    resize_u8_kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(in, out, params);
    return static_cast<int>(cudaGetLastError());
}

}  // namespace unetrt
