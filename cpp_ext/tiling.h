// Mirror-pad overlap-tile kernels shared by the CPU (tiling_cpu.cpp) and CUDA (tiling_cuda.cu) builds.
//
// Both builds compute every value with the same float operations in the same order, so a CUDA
// result equals the CPU result bit for bit. Validation of user input happens once, in bindings.cpp;
// the functions declared here trust the views they are given.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define UNETRT_HD __host__ __device__ __forceinline__
#else
#define UNETRT_HD inline
#endif

namespace unetrt {

constexpr int kMaxChannels = 4;

enum class DType : int { u8 = 0, f16 = 1, f32 = 2 };

// An image H x W x C with strides in elements (any sign, any order), as numpy allows.
struct ImageView {
    const void* data;
    DType dtype;
    int64_t height, width, channels;
    int64_t stride_y, stride_x, stride_c;
};

// A regular grid of tiles: tile (r, c) starts at (origin_y + r * step_y, origin_x + c * step_x).
// Tiles are numbered row-major; a call handles tiles [first, first + count).
struct Grid {
    int64_t origin_y, origin_x;
    int64_t step_y, step_x;
    int64_t rows, cols;
    int64_t first, count;
};

// extract: out[n, c, y, x] = half_or_float(in[reflect(y0 + y), reflect(x0 + x), src_channel[c]] * mul[c] + add[c]).
struct ExtractParams {
    Grid grid;
    int64_t tile_h, tile_w;
    int channels;
    int src_channel[kMaxChannels];
    float mul[kMaxChannels];
    float add[kMaxChannels];
};

enum class StitchMode : int { crop = 0, blend = 1 };

// stitch: tiles N x K x tile_h x tile_w (contiguous) into acc K x height x width (contiguous float32).
// In blend mode weight (height x width) accumulates window_y[y] * window_x[x] of every tile covering a pixel.
struct StitchParams {
    Grid grid;  // origins of the network *outputs* in image coordinates
    int64_t tile_h, tile_w;
    int64_t classes;
    int64_t height, width;
    StitchMode mode;
    DType tile_dtype;
    const float* window_y;  // blend only, tile_h values
    const float* window_x;  // blend only, tile_w values
};

// finish: optionally acc /= weight (in place), optionally mask = argmax over K, or acc[0] > threshold when binary.
struct FinishParams {
    int64_t classes, height, width;
    bool normalize;      // divide by weight
    bool write_logits;   // store the divided values back into acc
    bool binary;
    float threshold;
};

// Mirror index without repeating the edge pixel (numpy 'reflect', OpenCV BORDER_REFLECT_101); bounces back
// and forth when i lies further out than the image is long.
UNETRT_HD int64_t reflect_index(int64_t i, int64_t n) {
    if (n == 1) return 0;
    const int64_t period = 2 * (n - 1);
    int64_t m = i % period;
    if (m < 0) m += period;
    return m < n ? m : period - m;
}

UNETRT_HD int64_t floor_div(int64_t a, int64_t b) {  // b > 0
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

UNETRT_HD int64_t clamp_index(int64_t i, int64_t lo, int64_t hi) {
    return i < lo ? lo : (i > hi ? hi : i);
}

// Crop mode: tile i owns [start(i), start(i + 1)) with start(i) = origin + i * step + (tile - step) / 2, the middle
// of its overlap with tile i - 1; the first tile owns everything before, the last everything after.
UNETRT_HD int64_t crop_owner(int64_t p, int64_t origin, int64_t step, int64_t tile, int64_t count) {
    return clamp_index(floor_div(p - origin - (tile - step) / 2, step), 0, count - 1);
}

// Tiles i in [*lo, *hi] whose span [origin + i * step, origin + i * step + tile) holds p (empty when *lo > *hi).
UNETRT_HD void covering_tiles(int64_t p, int64_t origin, int64_t step, int64_t tile, int64_t count,
                              int64_t* lo, int64_t* hi) {
    *lo = clamp_index(floor_div(p - origin - tile, step) + 1, 0, count);
    *hi = clamp_index(floor_div(p - origin, step), -1, count - 1);
}

// IEEE single-precision arithmetic without contraction into FMA, so host and device round alike.
#if defined(__CUDA_ARCH__)
UNETRT_HD float mul_rn(float a, float b) { return __fmul_rn(a, b); }
UNETRT_HD float add_rn(float a, float b) { return __fadd_rn(a, b); }
UNETRT_HD float div_rn(float a, float b) { return __fdiv_rn(a, b); }
#else
UNETRT_HD float mul_rn(float a, float b) { return a * b; }
UNETRT_HD float add_rn(float a, float b) { return a + b; }
UNETRT_HD float div_rn(float a, float b) { return a / b; }
#endif

// Host float -> IEEE half, round to nearest even (what numpy's astype(float16) and CUDA's __float2half_rn do).
inline uint16_t float_to_half_bits(float value) {
    uint32_t f;
    std::memcpy(&f, &value, sizeof f);
    const uint32_t sign = f & 0x80000000u;
    f ^= sign;
    uint16_t out;
    if (f >= (127u + 16u) << 23) {
        // Beyond the largest finite half after rounding: Inf, or a quiet NaN.
        out = f > 0x7f800000u ? 0x7e00 : 0x7c00;
    } else if (f < (113u << 23)) {
        // Subnormal half or zero: let the float adder do the rounding by aligning the mantissa.
        const uint32_t magic_bits = ((127u - 15u) + (23u - 10u) + 1u) << 23;
        float magic, x;
        std::memcpy(&magic, &magic_bits, sizeof magic);
        std::memcpy(&x, &f, sizeof x);
        x += magic;
        uint32_t bits;
        std::memcpy(&bits, &x, sizeof bits);
        out = static_cast<uint16_t>(bits - magic_bits);
    } else {
        const uint32_t mantissa_odd = (f >> 13) & 1u;
        f += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu;
        f += mantissa_odd;
        out = static_cast<uint16_t>(f >> 13);
    }
    return static_cast<uint16_t>(out | (sign >> 16));
}

// Host IEEE half -> float (exact).
inline float half_bits_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent == 0) {
        if (mantissa == 0) {
            bits = sign;
        } else {
            int shift = 0;
            while ((mantissa & 0x400u) == 0) {
                mantissa <<= 1;
                ++shift;
            }
            mantissa &= 0x3ffu;
            bits = sign | (static_cast<uint32_t>(127 - 15 + 1 - shift) << 23) | (mantissa << 13);
        }
    } else {
        bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
    }
    float out;
    std::memcpy(&out, &bits, sizeof out);
    return out;
}

// One output pixel (y, x) of stitching; `load(i)` reads element i of the tile batch as float.
// Blend mode adds the tiles covering the pixel in tile order, so every build sums in the same order.
template <typename Load>
UNETRT_HD void stitch_pixel(int64_t y, int64_t x, const StitchParams& p, const Load& load, float* acc,
                            float* weight) {
    const Grid& g = p.grid;
    const int64_t plane = p.height * p.width;
    const int64_t pixel = y * p.width + x;
    const int64_t tile_plane = p.tile_h * p.tile_w;
    if (p.mode == StitchMode::crop) {
        const int64_t r = crop_owner(y, g.origin_y, g.step_y, p.tile_h, g.rows);
        const int64_t c = crop_owner(x, g.origin_x, g.step_x, p.tile_w, g.cols);
        const int64_t t = r * g.cols + c;
        const int64_t ty = y - (g.origin_y + r * g.step_y);
        const int64_t tx = x - (g.origin_x + c * g.step_x);
        if (t < g.first || t >= g.first + g.count || ty < 0 || ty >= p.tile_h || tx < 0 || tx >= p.tile_w) return;
        const int64_t base = (t - g.first) * p.classes * tile_plane + ty * p.tile_w + tx;
        for (int64_t k = 0; k < p.classes; ++k) acc[k * plane + pixel] = load(base + k * tile_plane);
        return;
    }
    int64_t r_lo, r_hi, c_lo, c_hi;
    covering_tiles(y, g.origin_y, g.step_y, p.tile_h, g.rows, &r_lo, &r_hi);
    covering_tiles(x, g.origin_x, g.step_x, p.tile_w, g.cols, &c_lo, &c_hi);
    float total = weight[pixel];
    for (int64_t r = r_lo; r <= r_hi; ++r) {
        for (int64_t c = c_lo; c <= c_hi; ++c) {
            const int64_t t = r * g.cols + c;
            if (t < g.first || t >= g.first + g.count) continue;
            const int64_t ty = y - (g.origin_y + r * g.step_y);
            const int64_t tx = x - (g.origin_x + c * g.step_x);
            const float w = mul_rn(p.window_y[ty], p.window_x[tx]);
            total = add_rn(total, w);
            const int64_t base = (t - g.first) * p.classes * tile_plane + ty * p.tile_w + tx;
            for (int64_t k = 0; k < p.classes; ++k) {
                float* cell = acc + k * plane + pixel;
                *cell = add_rn(*cell, mul_rn(w, load(base + k * tile_plane)));
            }
        }
    }
    weight[pixel] = total;
}

// One pixel of the finish: divide by the blend weight, then argmax (first maximum, NaN wins, as numpy) or threshold.
UNETRT_HD void finish_pixel(int64_t pixel, float* acc, const float* weight, uint8_t* mask, const FinishParams& p) {
    const int64_t plane = p.height * p.width;
    int64_t best = 0;
    float best_value = 0.0f;
    for (int64_t k = 0; k < p.classes; ++k) {
        float v = acc[k * plane + pixel];
        if (p.normalize) v = div_rn(v, weight[pixel]);
        if (p.write_logits) acc[k * plane + pixel] = v;
        if (k == 0 || v > best_value || (v != v && best_value == best_value)) {
            best = k;
            best_value = v;
        }
    }
    if (mask != nullptr) mask[pixel] = static_cast<uint8_t>(p.binary ? (best_value > p.threshold ? 1 : 0) : best);
}

// CPU kernels (tiling_cpu.cpp); `threads` >= 1. Outputs are contiguous.
void extract_tiles_cpu(const ImageView& image, void* out, DType out_dtype, const ExtractParams& params, int threads);
void stitch_tiles_cpu(const void* tiles, float* acc, float* weight, const StitchParams& params, int threads);
void finish_cpu(float* acc, const float* weight, uint8_t* mask, const FinishParams& params, int threads);

// CUDA launchers (tiling_cuda.cu): asynchronous on `stream`; return a cudaError_t value (0 = success).
int extract_tiles_cuda(const ImageView& image, void* out, DType out_dtype, const ExtractParams& params, void* stream);
int stitch_tiles_cuda(const void* tiles, float* acc, float* weight, const StitchParams& params, void* stream);
int finish_cuda(float* acc, const float* weight, uint8_t* mask, const FinishParams& params, void* stream);

}  // namespace unetrt
