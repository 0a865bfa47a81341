// Mirror-pad overlap-tile kernels shared by the CPU (tiling_cpu.cpp) and CUDA (tiling_kernels.cuh) builds.
//
// Both builds compute every value with the same float operations in the same order, so a CUDA
// result equals the CPU result bit for bit. Validation of user input happens once, in bindings.cpp;
// the functions declared here trust the views they are given.
//
// The emulated CUDA build (tiling_emulated.cpp, module unetrt._tiling_emu) compiles this header again with
// UNETRT_NAMESPACE=unetrt_emulated, so that its inline functions never merge with the CPU build's, and with
// UNETRT_EMULATED_CUDA, which makes store() report every output write to the emulator.
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define UNETRT_HD __host__ __device__ __forceinline__
#else
#define UNETRT_HD inline
#endif

#ifndef UNETRT_NAMESPACE
#define UNETRT_NAMESPACE unetrt
#endif

namespace UNETRT_NAMESPACE {

constexpr int kMaxChannels = 4;

enum class DType : int { u8 = 0, f16 = 1, f32 = 2, u16 = 3 };

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
// channels counts the output channels; a gray image read by a colour model has src_channel[c] = 0 for every c, so
// the gray value is replicated in the kernel and the frame goes to the GPU as one channel. A colour image read by a
// 1-channel model (gray set, channels 1) gives its gray value (gray_value() of the channels src_channel[0], [1] and
// [2]: its R, G and B) in place of in[..., src_channel[0]], so that frame is resized and uploaded in colour.
struct ExtractParams {
    Grid grid;
    int64_t tile_h, tile_w;
    int channels;
    bool gray;
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

// Bilinear resizes (finish_resized, resize_bilinear) take sides up to 2^23 px: every output coordinate x and
// x + 0.5 is then exact in float, so an identity resize maps each pixel onto itself.
constexpr int64_t kMaxResizeSide = int64_t{1} << 23;

// Kernels over image rows launch blocks of 8 rows with gridDim.y <= 65535: at most this many rows per launch.
constexpr int64_t kMaxLaunchRows = int64_t{65535} * 8;

// finish_resized: scores K x src_h x src_w (contiguous), the window rect (y0, x0, h, w) of it resized bilinearly
// onto out_h x out_w, then mask = argmax over K (or value > threshold when binary) and/or probabilities = softmax
// (sigmoid when binary) of the resized values, K x out_h x out_w. weight (src_h x src_w) divides every source value
// before interpolation.
struct FinishResizedParams {
    int64_t classes, src_h, src_w;
    int64_t rect_y, rect_x, rect_h, rect_w;
    int64_t out_h, out_w;
    DType score_dtype;  // f32 or f16
    bool binary;
    float threshold;
    float scale_y, scale_x;  // rect_h / out_h, rect_w / out_w, rounded to float once by the host
};

// resize_bilinear: in src_h x src_w x channels, out out_h x out_w x channels, both contiguous and of one dtype
// (uint8, uint16 or float32: the frame dtypes the path takes, float64 converted to float32 first).
struct ResizeParams {
    int64_t src_h, src_w, out_h, out_w, channels;
    DType dtype;
    float scale_y, scale_x;
};

#if defined(UNETRT_EMULATED_CUDA)
bool record_write(const void* address, int64_t bytes);  // tiling_emulated.cpp
#endif

// Every output element the shared bodies and the CUDA kernels write goes through store(), so that the emulator
// can count the writes (and drop a write outside the outputs instead of corrupting memory); elsewhere it is a
// plain store.
template <typename T>
UNETRT_HD void store(T* address, T value) {
#if defined(UNETRT_EMULATED_CUDA)
    if (!record_write(address, static_cast<int64_t>(sizeof(T)))) return;
#endif
    *address = value;
}

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

// Where output coordinate o of an axis resized from n to m px samples the source (OpenCV INTER_LINEAR, half-pixel
// centres): s = (o + 0.5) * scale - 0.5 with scale = n / m, clamped to [0, n - 1]; i0 = floor(s), i1 the next pixel
// (i0 itself at the last pixel) and frac = s - i0. frac is 0 exactly when s is integral, so an identity resize copies.
struct AxisSample {
    int64_t i0, i1;
    float frac;
};

UNETRT_HD AxisSample axis_sample(int64_t o, int64_t n, float scale) {
    const float s = add_rn(mul_rn(add_rn(static_cast<float>(o), 0.5f), scale), -0.5f);
    AxisSample a{0, 0, 0.0f};
    if (s > 0.0f) {
        const float whole = floorf(s);
        a.i0 = static_cast<int64_t>(whole);
        a.frac = add_rn(s, -whole);
    }
    if (a.i0 >= n - 1) {
        a.i0 = n - 1;
        a.frac = 0.0f;
    }
    a.i1 = a.frac > 0.0f ? a.i0 + 1 : a.i0;
    return a;
}

// a * (1 - f) + b * f, rounded step by step; f == 0 gives a itself (not a + 0 * b, which turns -0 into +0 and
// an infinite b into NaN). one_minus_f is 1 - f, passed in so row loops can table it.
UNETRT_HD float lerp_rn(float a, float b, float f, float one_minus_f) {
    return f == 0.0f ? a : add_rn(mul_rn(a, one_minus_f), mul_rn(b, f));
}

// Argmax step over classes in order: the first maximum wins, and the first NaN beats any number (numpy's argmax).
UNETRT_HD bool beats(float v, float best) { return v > best || (v != v && best == best); }

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
        for (int64_t k = 0; k < p.classes; ++k) store(acc + k * plane + pixel, load(base + k * tile_plane));
        return;
    }
    int64_t r_lo, r_hi, c_lo, c_hi;
    covering_tiles(y, g.origin_y, g.step_y, p.tile_h, g.rows, &r_lo, &r_hi);
    covering_tiles(x, g.origin_x, g.step_x, p.tile_w, g.cols, &c_lo, &c_hi);
    for (int64_t r = r_lo; r <= r_hi; ++r) {
        for (int64_t c = c_lo; c <= c_hi; ++c) {
            const int64_t t = r * g.cols + c;
            if (t < g.first || t >= g.first + g.count) continue;
            const int64_t ty = y - (g.origin_y + r * g.step_y);
            const int64_t tx = x - (g.origin_x + c * g.step_x);
            const float w = mul_rn(p.window_y[ty], p.window_x[tx]);
            // Stored per tile (the same sums as one store at the end): every output changes once per covering tile.
            store(weight + pixel, add_rn(weight[pixel], w));
            const int64_t base = (t - g.first) * p.classes * tile_plane + ty * p.tile_w + tx;
            for (int64_t k = 0; k < p.classes; ++k) {
                float* cell = acc + k * plane + pixel;
                store(cell, add_rn(*cell, mul_rn(w, load(base + k * tile_plane))));
            }
        }
    }
}

// Whether a score is NaN or infinite.
UNETRT_HD bool not_finite(float v) { return !(fabsf(v) <= 3.40282347e38f); }

// A pixel's result means nothing when the score it is decided on, the argmax's best value (a binary model's one
// score), is not finite: a NaN in any class (NaN wins the argmax), +inf in any class (it beats every number, as an
// FP16 engine's activations overflow past 65504 first; NaN follows from inf - inf), or -inf where it wins (every class
// -inf, or a binary score; the softmax is then NaN). A -inf in a class that loses says "never this class": the
// argmax and the softmax (exp(-inf) = 0) take it exactly, and heads that mask classes so are legitimate, so it does
// not count. Checking the best value alone costs one test per pixel, not one per class (docs/api.md#errors).

// One pixel of the finish: divide by the blend weight, then argmax (first maximum, NaN wins, as numpy) or threshold.
// Returns whether the best value is not finite (above): the callers count those pixels, and the frame path refuses
// the frame, so that such a mask never goes out in silence.
UNETRT_HD bool finish_pixel(int64_t pixel, float* acc, const float* weight, uint8_t* mask, const FinishParams& p) {
    const int64_t plane = p.height * p.width;
    int64_t best = 0;
    float best_value = 0.0f;
    for (int64_t k = 0; k < p.classes; ++k) {
        float v = acc[k * plane + pixel];
        if (p.normalize) v = div_rn(v, weight[pixel]);
        if (p.write_logits) store(acc + k * plane + pixel, v);
        if (k == 0 || v > best_value || (v != v && best_value == best_value)) {
            best = k;
            best_value = v;
        }
    }
    if (mask != nullptr)
        store(mask + pixel, static_cast<uint8_t>(p.binary ? (best_value > p.threshold ? 1 : 0) : best));
    return not_finite(best_value);
}

// The BT.601 luma of one colour pixel, the gray value a 1-channel model reads from a colour frame (OpenCV's
// COLOR_BGR2GRAY: 0.299 R + 0.587 G + 0.114 B). Integers as cvtColor computes them (checked against OpenCV 5.1.0):
// weights 9798, 19235 and 3735 of 2^15 (the three rounded to 15 bits; they sum to 2^15), the sum rounded half up, so
// the gray value of a uint8 or uint16 pixel is cvtColor's bit for bit, and every step is exact in 32-bit integers
// (65535 * 2^15 + 2^14 < 2^32). Floats: G + 0.299 (R - G) + 0.114 (B - G) in float32, which gives a pixel whose three channels are
// equal (a gray picture stored as colour) exactly that value, as the integer form does; cvtColor's float sum is up
// to an ulp away from it.
UNETRT_HD uint32_t gray_fixed_point(uint32_t r, uint32_t g, uint32_t b) {
    return (r * 9798u + g * 19235u + b * 3735u + (1u << 14)) >> 15;
}

UNETRT_HD float gray_value(uint8_t r, uint8_t g, uint8_t b) { return static_cast<float>(gray_fixed_point(r, g, b)); }

UNETRT_HD float gray_value(uint16_t r, uint16_t g, uint16_t b) {
    return static_cast<float>(gray_fixed_point(r, g, b));
}

UNETRT_HD float gray_value(float r, float g, float b) {
    return add_rn(add_rn(g, mul_rn(0.299f, add_rn(r, -g))), mul_rn(0.114f, add_rn(b, -g)));
}

// The value output channel ch of the extract reads at `pixel` (channels stride_c elements apart), before the
// normalisation: that channel's, or the pixel's gray value for a 1-channel model of a colour image.
template <typename T>
UNETRT_HD float extract_source(const T* pixel, int64_t stride_c, const ExtractParams& p, int ch) {
    if (p.gray)
        return gray_value(pixel[p.src_channel[0] * stride_c], pixel[p.src_channel[1] * stride_c],
                          pixel[p.src_channel[2] * stride_c]);
    return static_cast<float>(pixel[p.src_channel[ch] * stride_c]);
}

// A resized value as the image's dtype: integers rounded half up and clamped to their range (every integer up to
// 65535 and its half are exact in float), floats as they are. Specialised below for each dtype a frame has.
template <typename T>
UNETRT_HD T resized_as(float v);

template <>
UNETRT_HD uint8_t resized_as<uint8_t>(float v) {
    const float r = add_rn(v, 0.5f);
    return static_cast<uint8_t>(r >= 255.0f ? 255.0f : (r <= 0.0f ? 0.0f : r));
}

template <>
UNETRT_HD uint16_t resized_as<uint16_t>(float v) {
    const float r = add_rn(v, 0.5f);
    return static_cast<uint16_t>(r >= 65535.0f ? 65535.0f : (r <= 0.0f ? 0.0f : r));
}

template <>
UNETRT_HD float resized_as<float>(float v) {
    return v;
}

// One output pixel of the working-size resize of an image of uint8, uint16 or float32: per channel the bilinear
// value in float32 (horizontal lerps of the two source rows, then the vertical lerp), stored as the image's dtype.
template <typename T>
UNETRT_HD void resize_pixel(int64_t y, int64_t x, const T* in, T* out, const ResizeParams& p) {
    const AxisSample sy = axis_sample(y, p.src_h, p.scale_y);
    const AxisSample sx = axis_sample(x, p.src_w, p.scale_x);
    const float gy = add_rn(1.0f, -sy.frac);
    const float gx = add_rn(1.0f, -sx.frac);
    const T* row0 = in + sy.i0 * p.src_w * p.channels;
    const T* row1 = in + sy.i1 * p.src_w * p.channels;
    T* dst = out + (y * p.out_w + x) * p.channels;
    for (int64_t c = 0; c < p.channels; ++c) {
        const float top = lerp_rn(static_cast<float>(row0[sx.i0 * p.channels + c]),
                                  static_cast<float>(row0[sx.i1 * p.channels + c]), sx.frac, gx);
        const float bottom = lerp_rn(static_cast<float>(row1[sx.i0 * p.channels + c]),
                                     static_cast<float>(row1[sx.i1 * p.channels + c]), sx.frac, gx);
        store(dst + c, resized_as<T>(lerp_rn(top, bottom, sy.frac, gy)));
    }
}

// The bilinear samples of one output pixel of finish_resized, in source coordinates.
struct ResizedSample {
    int64_t y0, y1, x0, x1;
    float fy, gy, fx, gx;  // fractions and 1 - fractions
};

UNETRT_HD ResizedSample resized_sample(int64_t y, int64_t x, const FinishResizedParams& p) {
    const AxisSample sy = axis_sample(y, p.rect_h, p.scale_y);
    const AxisSample sx = axis_sample(x, p.rect_w, p.scale_x);
    return {p.rect_y + sy.i0, p.rect_y + sy.i1, p.rect_x + sx.i0, p.rect_x + sx.i1,
            sy.frac, add_rn(1.0f, -sy.frac), sx.frac, add_rn(1.0f, -sx.frac)};
}

// Class k's resized value: horizontal lerps of the two source rows, then the vertical lerp.
template <typename Load>
UNETRT_HD float resized_value(int64_t k, const ResizedSample& s, const Load& load) {
    const float top = lerp_rn(load(k, s.y0, s.x0), load(k, s.y0, s.x1), s.fx, s.gx);
    const float bottom = lerp_rn(load(k, s.y1, s.x0), load(k, s.y1, s.x1), s.fx, s.gx);
    return lerp_rn(top, bottom, s.fy, s.gy);
}

// One output pixel (y, x) of finish_resized; `load(k, sy, sx)` reads the source score as float, already divided by
// the weight. The argmax (or threshold) is finish_pixel's, and so is the result: whether the best resized value is
// not finite. Probabilities: softmax over K with the maximum
// subtracted (exp(v - max), summed in class order, each divided by the sum), or the sigmoid when binary; the
// values are recomputed in each pass so that every output element is written once.
template <typename Load>
UNETRT_HD bool finish_resized_pixel(int64_t y, int64_t x, const FinishResizedParams& p, const Load& load,
                                    uint8_t* mask, float* probabilities) {
    const ResizedSample s = resized_sample(y, x, p);
    const int64_t plane = p.out_h * p.out_w;
    const int64_t pixel = y * p.out_w + x;
    int64_t best = 0;
    float best_value = 0.0f;
    for (int64_t k = 0; k < p.classes; ++k) {
        const float v = resized_value(k, s, load);
        if (k == 0 || beats(v, best_value)) {
            best = k;
            best_value = v;
        }
    }
    const bool nonfinite = not_finite(best_value);
    if (mask != nullptr)
        store(mask + pixel, static_cast<uint8_t>(p.binary ? (best_value > p.threshold ? 1 : 0) : best));
    if (probabilities == nullptr) return nonfinite;
    if (p.binary) {
        store(probabilities + pixel, div_rn(1.0f, add_rn(1.0f, expf(-best_value))));
        return nonfinite;
    }
    float total = 0.0f;
    for (int64_t k = 0; k < p.classes; ++k) total = add_rn(total, expf(add_rn(resized_value(k, s, load), -best_value)));
    for (int64_t k = 0; k < p.classes; ++k)
        store(probabilities + k * plane + pixel,
              div_rn(expf(add_rn(resized_value(k, s, load), -best_value)), total));
    return nonfinite;
}

// The band [*y_begin, *y_end) of image rows the batch of a stitch can touch (empty when *y_end <= *y_begin).
inline void stitch_band(const StitchParams& p, int64_t* y_begin, int64_t* y_end) {
    const Grid& g = p.grid;
    const int64_t first_row = g.first / g.cols;
    const int64_t last_row = (g.first + g.count - 1) / g.cols;
    const int64_t top = g.origin_y + first_row * g.step_y;
    const int64_t bottom = g.origin_y + last_row * g.step_y + p.tile_h;
    *y_begin = top > 0 ? top : 0;
    *y_end = bottom < p.height ? bottom : p.height;
}

// CPU kernels (tiling_cpu.cpp); `threads` >= 1. Outputs are contiguous. The finishes return how many output pixels
// had a best value that is not finite (finish_pixel's result).
void extract_tiles_cpu(const ImageView& image, void* out, DType out_dtype, const ExtractParams& params, int threads);
void stitch_tiles_cpu(const void* tiles, float* acc, float* weight, const StitchParams& params, int threads);
int64_t finish_cpu(float* acc, const float* weight, uint8_t* mask, const FinishParams& params, int threads);
int64_t finish_resized_cpu(const void* scores, const float* weight, uint8_t* mask, float* probabilities,
                           const FinishResizedParams& params, int threads);
// The row loops resize_bilinear_cpu runs: the portable ones (every CPU), the AVX2 ones (the CPU must have AVX2:
// cpu_loops_available), or the best this CPU has, picked once. Every choice gives the same image bit for bit; the
// tests run them side by side.
enum class CpuLoops : int { best = 0, portable = 1, avx2 = 2 };
bool cpu_loops_available(CpuLoops loops);
void resize_bilinear_cpu(const void* in, void* out, const ResizeParams& params, int threads,
                         CpuLoops loops = CpuLoops::best);

// CUDA launchers (defined in tiling_kernels.cuh, built by tiling_cuda.cu): asynchronous on `stream`; return a
// cudaError_t value (0 = success). The finishes add the count of output pixels whose best value is not finite to the
// device counter *nonfinite (nullptr: not counted); the caller zeroes it on the stream first.
int extract_tiles_cuda(const ImageView& image, void* out, DType out_dtype, const ExtractParams& params, void* stream);
int stitch_tiles_cuda(const void* tiles, float* acc, float* weight, const StitchParams& params, void* stream);
int finish_cuda(float* acc, const float* weight, uint8_t* mask, const FinishParams& params,
                unsigned long long* nonfinite, void* stream);
int finish_resized_cuda(const void* scores, const float* weight, uint8_t* mask, float* probabilities,
                        const FinishResizedParams& params, unsigned long long* nonfinite, void* stream);
int resize_bilinear_cuda(const void* in, void* out, const ResizeParams& params, void* stream);

}  // namespace UNETRT_NAMESPACE
