// CPU kernels: the semantics of tiling.h on a few threads (stitching in scatter form, term for term stitch_pixel()).
#include <algorithm>
#include <type_traits>
#include <thread>
#include <vector>

#include "tiling.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace unetrt {
namespace {

// Runs body(begin, end) over [0, total) split into `threads` contiguous parts.
template <typename Body>
void parallel_for(int64_t total, int threads, const Body& body) {
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threads, total));
    if (parts == 1) {
        body(int64_t{0}, total);
        return;
    }
    std::vector<std::thread> workers;
    workers.reserve(static_cast<size_t>(parts - 1));
    const int64_t chunk = (total + parts - 1) / parts;
    for (int64_t part = 1; part < parts; ++part) {
        const int64_t begin = std::min(total, part * chunk);
        const int64_t end = std::min(total, begin + chunk);
        workers.emplace_back([&body, begin, end] { body(begin, end); });
    }
    body(int64_t{0}, std::min(total, chunk));
    for (auto& worker : workers) worker.join();
}

template <typename T>
inline float to_float(T v) {
    return static_cast<float>(v);
}

// Rows of floats -> halves. F16C (x86) and __fp16 (ARM) round to nearest even exactly as the portable version.
void floats_to_halves_portable(const float* src, uint16_t* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_half_bits(src[i]);
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx,f16c"))) void floats_to_halves_f16c(const float* src, uint16_t* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
    }
    for (; i < n; ++i) dst[i] = float_to_half_bits(src[i]);
}

using HalfRow = void (*)(const float*, uint16_t*, int64_t);

HalfRow pick_floats_to_halves() {
    __builtin_cpu_init();  // needed before __builtin_cpu_supports outside main()
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx") ? floats_to_halves_f16c
                                                                           : floats_to_halves_portable;
}

void floats_to_halves(const float* src, uint16_t* dst, int64_t n) {
    static const HalfRow convert = pick_floats_to_halves();
    convert(src, dst, n);
}
#elif defined(__aarch64__)
void floats_to_halves(const float* src, uint16_t* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const __fp16 h = static_cast<__fp16>(src[i]);
        std::memcpy(dst + i, &h, sizeof h);
    }
}
#else
const auto floats_to_halves = floats_to_halves_portable;
#endif

template <typename In, typename Out>
void extract_typed(const ImageView& image_ref, Out* out, const ExtractParams& params, int threads) {
    // Local copies: stores through Out* must not force the compiler to reload them.
    const ImageView image = image_ref;
    const ExtractParams p = params;
    const Grid g = p.grid;
    const In* base = static_cast<const In*>(image.data);
    const int64_t tile_plane = p.tile_h * p.tile_w;
    // One work item per (tile, row): balances threads even for a single tile.
    parallel_for(g.count * p.tile_h, threads, [&](int64_t begin, int64_t end) {
        std::vector<int64_t> column_offset(static_cast<size_t>(p.tile_w));
        std::vector<float> row_values(static_cast<size_t>(p.tile_w));
        int64_t cached_tile = -1;
        for (int64_t item = begin; item < end; ++item) {
            const int64_t n = item / p.tile_h;
            const int64_t y = item % p.tile_h;
            const int64_t t = g.first + n;
            const int64_t r = t / g.cols;
            const int64_t c = t % g.cols;
            if (n != cached_tile) {
                const int64_t x0 = g.origin_x + c * g.step_x;
                for (int64_t x = 0; x < p.tile_w; ++x)
                    column_offset[static_cast<size_t>(x)] = reflect_index(x0 + x, image.width) * image.stride_x;
                cached_tile = n;
            }
            const int64_t sy = reflect_index(g.origin_y + r * g.step_y + y, image.height);
            const In* row = base + sy * image.stride_y;
            for (int ch = 0; ch < p.channels; ++ch) {
                const In* src = row + p.src_channel[ch] * image.stride_c;
                const float mul = p.mul[ch];
                const float add = p.add[ch];
                Out* dst = out + (n * p.channels + ch) * tile_plane + y * p.tile_w;
                const int64_t* offset = column_offset.data();
                if constexpr (std::is_same_v<Out, float>) {
                    for (int64_t x = 0; x < p.tile_w; ++x) dst[x] = add_rn(mul_rn(to_float(src[offset[x]]), mul), add);
                } else {
                    float* values = row_values.data();
                    for (int64_t x = 0; x < p.tile_w; ++x)
                        values[x] = add_rn(mul_rn(to_float(src[offset[x]]), mul), add);
                    floats_to_halves(values, dst, p.tile_w);
                }
            }
        }
    });
}

template <typename In>
void extract_dispatch_out(const ImageView& image, void* out, DType out_dtype, const ExtractParams& p, int threads) {
    if (out_dtype == DType::f16)
        extract_typed<In, uint16_t>(image, static_cast<uint16_t*>(out), p, threads);
    else
        extract_typed<In, float>(image, static_cast<float*>(out), p, threads);
}

}  // namespace

void extract_tiles_cpu(const ImageView& image, void* out, DType out_dtype, const ExtractParams& params, int threads) {
    if (image.dtype == DType::u8)
        extract_dispatch_out<uint8_t>(image, out, out_dtype, params, threads);
    else
        extract_dispatch_out<float>(image, out, out_dtype, params, threads);
}

namespace {

// The span [lo, hi) of image coordinates tile `index` owns in crop mode: the inverse of crop_owner().
void crop_core(int64_t index, int64_t origin, int64_t step, int64_t tile, int64_t count, int64_t* lo, int64_t* hi) {
    const int64_t half_overlap = (tile - step) / 2;
    *lo = index == 0 ? INT64_MIN / 4 : origin + index * step + half_overlap;
    *hi = index == count - 1 ? INT64_MAX / 4 : origin + (index + 1) * step + half_overlap;
}

// Scatter form of stitch_pixel(): each thread owns a band of image rows and adds the tiles into it in tile
// order, so every pixel sums the same terms in the same order as the per-pixel (CUDA) form.
template <typename Load>
void stitch_rows(const StitchParams& params, const Load& load, float* acc, float* weight, int64_t y_begin,
                 int64_t y_end) {
    const StitchParams p = params;
    const Grid g = p.grid;
    const int64_t plane = p.height * p.width;
    const int64_t tile_plane = p.tile_h * p.tile_w;
    for (int64_t t = g.first; t < g.first + g.count; ++t) {
        const int64_t r = t / g.cols;
        const int64_t c = t % g.cols;
        const int64_t ty0 = g.origin_y + r * g.step_y;
        const int64_t tx0 = g.origin_x + c * g.step_x;
        int64_t ylo = ty0, yhi = ty0 + p.tile_h, xlo = tx0, xhi = tx0 + p.tile_w;
        if (p.mode == StitchMode::crop) {
            int64_t lo, hi;
            crop_core(r, g.origin_y, g.step_y, p.tile_h, g.rows, &lo, &hi);
            ylo = std::max(ylo, lo);
            yhi = std::min(yhi, hi);
            crop_core(c, g.origin_x, g.step_x, p.tile_w, g.cols, &lo, &hi);
            xlo = std::max(xlo, lo);
            xhi = std::min(xhi, hi);
        }
        ylo = std::max(ylo, y_begin);
        yhi = std::min(yhi, y_end);
        xlo = std::max<int64_t>(xlo, 0);
        xhi = std::min(xhi, p.width);
        if (ylo >= yhi || xlo >= xhi) continue;
        const int64_t tile_base = (t - g.first) * p.classes * tile_plane;
        for (int64_t y = ylo; y < yhi; ++y) {
            const int64_t src_row = tile_base + (y - ty0) * p.tile_w - tx0;
            const int64_t dst_row = y * p.width;
            if (p.mode == StitchMode::crop) {
                for (int64_t k = 0; k < p.classes; ++k) {
                    float* dst = acc + k * plane + dst_row;
                    const int64_t src = src_row + k * tile_plane;
                    for (int64_t x = xlo; x < xhi; ++x) dst[x] = load(src + x);
                }
                continue;
            }
            const float wy = p.window_y[y - ty0];
            const float* wx = p.window_x - tx0;
            float* weight_row = weight + dst_row;
            for (int64_t x = xlo; x < xhi; ++x) weight_row[x] = add_rn(weight_row[x], mul_rn(wy, wx[x]));
            for (int64_t k = 0; k < p.classes; ++k) {
                float* dst = acc + k * plane + dst_row;
                const int64_t src = src_row + k * tile_plane;
                for (int64_t x = xlo; x < xhi; ++x) dst[x] = add_rn(dst[x], mul_rn(mul_rn(wy, wx[x]), load(src + x)));
            }
        }
    }
}

}  // namespace

void stitch_tiles_cpu(const void* tiles, float* acc, float* weight, const StitchParams& params, int threads) {
    const Grid& g = params.grid;
    // Only the rows the batch can touch.
    const int64_t first_row = g.first / g.cols;
    const int64_t last_row = (g.first + g.count - 1) / g.cols;
    const int64_t y_begin = std::max<int64_t>(0, g.origin_y + first_row * g.step_y);
    const int64_t y_end = std::min<int64_t>(params.height, g.origin_y + last_row * g.step_y + params.tile_h);
    if (y_end <= y_begin) return;
    auto run = [&](const auto& load) {
        parallel_for(y_end - y_begin, threads, [&](int64_t begin, int64_t end) {
            stitch_rows(params, load, acc, weight, y_begin + begin, y_begin + end);
        });
    };
    if (params.tile_dtype == DType::f16) {
        const uint16_t* data = static_cast<const uint16_t*>(tiles);
        run([data](int64_t i) { return half_bits_to_float(data[i]); });
    } else {
        const float* data = static_cast<const float*>(tiles);
        run([data](int64_t i) { return data[i]; });
    }
}

void finish_cpu(float* acc, const float* weight, uint8_t* mask, const FinishParams& params, int threads) {
    parallel_for(params.height * params.width, threads, [&, acc, weight, mask](int64_t begin, int64_t end) {
        const FinishParams p = params;  // a local copy: mask stores (uint8_t) may alias anything else
        for (int64_t pixel = begin; pixel < end; ++pixel) finish_pixel(pixel, acc, weight, mask, p);
    });
}

}  // namespace unetrt
