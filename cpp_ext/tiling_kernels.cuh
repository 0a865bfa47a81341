// CUDA kernels and their launch configuration, shared by the real launchers (tiling_cuda.cu, nvcc) and the
// emulated ones (tiling_emulated.cpp, g++ under cuda_emulation.h), with the entry points of tiling.h. Only the
// launch itself differs: <<<>>> on a GPU or a loop over every (block, thread) in emulation. The kernels use no
// shared memory, barriers or warp intrinsics, and one atomic only: the finishes' atomicAdd of 1 to the count of
// non-finite pixels, made by a thread that meets one (a sum, whose order does not matter), so the emulation is exact.
//
// Before including this header, the including file provides __half, __half2float, __float2half_rn, dim3,
// threadIdx, blockIdx, blockDim and gridDim (cuda_fp16.h and the CUDA runtime, or cuda_emulation.h), and
// launch_on_stream(grid, block, stream, kernel, args...) -> error code: the one line that differs, `<<<>>>` on a
// GPU or the emulated loop (which also records the stream, so the tests see which stream every launch got), and
// atomicAdd on unsigned long long (the finishes' count of non-finite pixels, its one atomic).
#pragma once

#include "tiling.h"

namespace UNETRT_NAMESPACE {

constexpr unsigned kBlockX = 32;
constexpr unsigned kBlockY = 8;
constexpr unsigned kFinishThreads = 256;
constexpr int64_t kMaxGridY = 65535;

// Grid and block of one launch; y_begin is the first image row of a row band (stitching).
struct LaunchConfig {
    dim3 grid, block;
    int64_t y_begin;
    bool empty;  // nothing to do: launch nothing
};


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
    store(p, v);
}
template <>
__device__ __forceinline__ void store_from_float<__half>(__half* p, float v) {
    store(p, __float2half_rn(v));
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
        const float v = extract_source(pixel, image.stride_c, p, ch);
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

// The count of non-finite pixels costs nothing where the scores are finite: only a thread that meets such a pixel
// touches the counter (nullptr: not counted).
__device__ __forceinline__ void count_nonfinite(bool nonfinite, unsigned long long* counter) {
    if (nonfinite && counter != nullptr) atomicAdd(counter, 1ULL);
}

__global__ void finish_kernel(float* acc, const float* weight, uint8_t* mask, FinishParams p,
                              unsigned long long* nonfinite) {
    const int64_t total = p.height * p.width;
    for (int64_t pixel = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; pixel < total;
         pixel += static_cast<int64_t>(gridDim.x) * blockDim.x)
        count_nonfinite(finish_pixel(pixel, acc, weight, mask, p), nonfinite);
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
                                      FinishResizedParams p, unsigned long long* nonfinite) {
    const int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t y = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y;
    if (x >= p.out_w || y >= p.out_h) return;
    count_nonfinite(
        finish_resized_pixel(y, x, p, ScoreLoad<T>{scores, weight, p.src_h, p.src_w}, mask, probabilities),
        nonfinite);
}

template <typename T>
__global__ void resize_kernel(const T* __restrict__ in, T* __restrict__ out, ResizeParams p) {
    const int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t y = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y;
    if (x >= p.out_w || y >= p.out_h) return;
    resize_pixel(y, x, in, out, p);
}

// ---------------------------------------------------------------- launch configuration (host)

inline unsigned blocks(int64_t total, unsigned per_block) {
    return static_cast<unsigned>((total + per_block - 1) / per_block);
}

// A 32 x 8 block per image patch over width x rows (rows <= kMaxLaunchRows, checked by the bindings).
inline LaunchConfig image_config(int64_t width, int64_t rows, int64_t depth = 1) {
    return {dim3(blocks(width, kBlockX), blocks(rows, kBlockY), static_cast<unsigned>(depth)),
            dim3(kBlockX, kBlockY), 0, false};
}

inline LaunchConfig extract_config(const ExtractParams& p) { return image_config(p.tile_w, p.tile_h, p.grid.count); }

// Stitching launches over the band of image rows the batch's tiles can touch.
inline LaunchConfig stitch_config(const StitchParams& p) {
    int64_t y_begin, y_end;
    stitch_band(p, &y_begin, &y_end);
    if (y_end <= y_begin) return {dim3(), dim3(), 0, true};
    LaunchConfig c = image_config(p.width, y_end - y_begin);
    c.y_begin = y_begin;
    return c;
}

// A grid-stride loop: at most 65535 * 8 blocks of 256 threads, each covering several pixels on huge images.
inline LaunchConfig finish_config(const FinishParams& p) {
    const int64_t needed = blocks(p.height * p.width, kFinishThreads);
    const int64_t cap = kMaxGridY * 8;
    return {dim3(static_cast<unsigned>(needed < cap ? needed : cap)), dim3(kFinishThreads), 0, false};
}

inline LaunchConfig finish_resized_config(const FinishResizedParams& p) { return image_config(p.out_w, p.out_h); }

inline LaunchConfig resize_config(const ResizeParams& p) { return image_config(p.out_w, p.out_h); }

// ---------------------------------------------------------------- the entry points of tiling.h
//
// Defined here, once, for both builds: each TU that includes this header (tiling_cuda.cu, tiling_emulated.cpp)
// compiles them in its own namespace. Every kernel of one call goes on the caller's stream; each returns a
// cudaError_t value (0 = success).

template <typename... Params, typename... Args>
int launch(const LaunchConfig& c, void* stream, void (*kernel)(Params...), Args... args) {
    return launch_on_stream(c.grid, c.block, stream, kernel, args...);
}

template <typename In>
int extract_tiles_from(const ImageView& image, void* out, DType out_dtype, const ExtractParams& p, void* stream) {
    const LaunchConfig c = extract_config(p);
    if (out_dtype == DType::f16)
        return launch(c, stream, extract_kernel<In, __half>, image, static_cast<__half*>(out), p);
    return launch(c, stream, extract_kernel<In, float>, image, static_cast<float*>(out), p);
}

int extract_tiles_cuda(const ImageView& image, void* out, DType out_dtype, const ExtractParams& params,
                       void* stream) {
    if (image.dtype == DType::u8) return extract_tiles_from<uint8_t>(image, out, out_dtype, params, stream);
    if (image.dtype == DType::u16) return extract_tiles_from<uint16_t>(image, out, out_dtype, params, stream);
    return extract_tiles_from<float>(image, out, out_dtype, params, stream);
}

int stitch_tiles_cuda(const void* tiles, float* acc, float* weight, const StitchParams& params, void* stream) {
    const LaunchConfig c = stitch_config(params);
    if (c.empty) return 0;
    if (params.tile_dtype == DType::f16)
        return launch(c, stream, stitch_kernel<__half>, static_cast<const __half*>(tiles), acc, weight, params,
                      c.y_begin);
    return launch(c, stream, stitch_kernel<float>, static_cast<const float*>(tiles), acc, weight, params,
                  c.y_begin);
}

int finish_cuda(float* acc, const float* weight, uint8_t* mask, const FinishParams& params,
                unsigned long long* nonfinite, void* stream) {
    return launch(finish_config(params), stream, finish_kernel, acc, weight, mask, params, nonfinite);
}

int finish_resized_cuda(const void* scores, const float* weight, uint8_t* mask, float* probabilities,
                        const FinishResizedParams& params, unsigned long long* nonfinite, void* stream) {
    const LaunchConfig c = finish_resized_config(params);
    if (params.score_dtype == DType::f16)
        return launch(c, stream, finish_resized_kernel<__half>, static_cast<const __half*>(scores), weight, mask,
                      probabilities, params, nonfinite);
    return launch(c, stream, finish_resized_kernel<float>, static_cast<const float*>(scores), weight, mask,
                  probabilities, params, nonfinite);
}

template <typename T>
int resize_from(const void* in, void* out, const ResizeParams& p, void* stream) {
    return launch(resize_config(p), stream, resize_kernel<T>, static_cast<const T*>(in), static_cast<T*>(out), p);
}

int resize_bilinear_cuda(const void* in, void* out, const ResizeParams& params, void* stream) {
    if (params.dtype == DType::u8) return resize_from<uint8_t>(in, out, params, stream);
    if (params.dtype == DType::u16) return resize_from<uint16_t>(in, out, params, stream);
    return resize_from<float>(in, out, params, stream);
}

}  // namespace UNETRT_NAMESPACE
