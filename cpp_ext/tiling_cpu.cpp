// CPU kernels: the semantics of tiling.h on a few threads (stitching in scatter form, term for term stitch_pixel()).
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <thread>
#include <vector>

#include "tiling.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace UNETRT_NAMESPACE {
namespace {
#if defined(__x86_64__) || defined(__i386__)
// Whether the AVX2 row loops may run here (every loop with an AVX2 variant asks this one probe).
bool cpu_has_avx2() {
    __builtin_cpu_init();  // needed before __builtin_cpu_supports outside main()
    return __builtin_cpu_supports("avx2");
}
#else
bool cpu_has_avx2() { return false; }
#endif


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

// parallel_for with the part number, for bodies that use per-part scratch allocated up front (an allocation
// failing inside a worker thread would terminate the process instead of raising MemoryError).
int64_t part_count(int64_t total, int threads) { return std::max<int64_t>(1, std::min<int64_t>(threads, total)); }

template <typename Body>
void parallel_parts(int64_t total, int threads, const Body& body) {
    const int64_t parts = part_count(total, threads);
    const int64_t chunk = (total + parts - 1) / parts;
    parallel_for(parts, static_cast<int>(parts), [&](int64_t begin, int64_t end) {
        for (int64_t part = begin; part < end; ++part)
            body(part, std::min(total, part * chunk), std::min(total, (part + 1) * chunk));
    });
}

// parallel_parts for bodies that count something (the finishes' NaN or infinite pixels): each part returns its own
// count into a slot of its own, summed once every part has joined, so the threads share no counter.
template <typename Body>
int64_t parallel_count(int64_t total, int threads, const Body& body) {
    std::vector<int64_t> counts(static_cast<size_t>(part_count(total, threads)), 0);
    parallel_parts(total, threads, [&](int64_t part, int64_t begin, int64_t end) {
        counts[static_cast<size_t>(part)] = body(part, begin, end);
    });
    int64_t sum = 0;
    for (const int64_t count : counts) sum += count;
    return sum;
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

// Rows of halves -> floats (exact). F16C where the CPU has it.
void halves_to_floats_portable(const uint16_t* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = half_bits_to_float(src[i]);
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx,f16c"))) void halves_to_floats_f16c(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    for (; i < n; ++i) dst[i] = half_bits_to_float(src[i]);
}

using FloatRow = void (*)(const uint16_t*, float*, int64_t);

FloatRow pick_halves_to_floats() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx") ? halves_to_floats_f16c
                                                                           : halves_to_floats_portable;
}

void halves_to_floats(const uint16_t* src, float* dst, int64_t n) {
    static const FloatRow convert = pick_halves_to_floats();
    convert(src, dst, n);
}
#else
const auto halves_to_floats = halves_to_floats_portable;
#endif

// One row of an interleaved 3-channel uint8 image that needs no mirroring, into three float planes: plane[ch][x] =
// src[3 x + src_channel[ch]] * mul[ch] + add[ch], rounded after the product and after the sum, as extract_typed().
void interleaved_u8_row_portable(const uint8_t* src, const int* src_channel, const float* mul, const float* add,
                                 float* const* plane, int64_t n) {
    for (int ch = 0; ch < 3; ++ch)
        for (int64_t x = 0; x < n; ++x)
            plane[ch][x] = add_rn(mul_rn(to_float(src[3 * x + src_channel[ch]]), mul[ch]), add[ch]);
}

#if defined(__x86_64__) || defined(__i386__)
// 16 pixels (48 bytes) at a time: three byte shuffles per channel gather its 16 values, which are widened to two
// groups of 8 floats; the product and the sum are two instructions, so each rounds as in the portable loop.
__attribute__((target("avx2"))) void interleaved_u8_row_avx2(const uint8_t* src, const int* src_channel,
                                                             const float* mul, const float* add,
                                                             float* const* plane, int64_t n) {
    // shuffle[c][part]: the bytes of channel c (pixel i at byte 3 i + c of the 48) that lie in 16-byte part `part`.
    struct Shuffles {
        alignas(16) int8_t bytes[3][3][16];
    };
    static const Shuffles table = [] {
        Shuffles t{};
        for (int c = 0; c < 3; ++c)
            for (int part = 0; part < 3; ++part)
                for (int i = 0; i < 16; ++i) {
                    const int byte = 3 * i + c - 16 * part;
                    t.bytes[c][part][i] = static_cast<int8_t>(byte >= 0 && byte < 16 ? byte : -1);
                }
        return t;
    }();
    const auto& shuffle = table.bytes;
    __m256 scale[3], offset[3];
    __m128i pick[3][3];
    for (int ch = 0; ch < 3; ++ch) {
        scale[ch] = _mm256_set1_ps(mul[ch]);
        offset[ch] = _mm256_set1_ps(add[ch]);
        for (int part = 0; part < 3; ++part)
            pick[ch][part] = _mm_load_si128(reinterpret_cast<const __m128i*>(shuffle[src_channel[ch]][part]));
    }
    int64_t x = 0;
    for (; x + 16 <= n; x += 16) {
        const uint8_t* bytes = src + 3 * x;
        const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes + 16));
        const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes + 32));
        for (int ch = 0; ch < 3; ++ch) {
            const __m128i values = _mm_or_si128(
                _mm_or_si128(_mm_shuffle_epi8(a, pick[ch][0]), _mm_shuffle_epi8(b, pick[ch][1])),
                _mm_shuffle_epi8(c, pick[ch][2]));
            const __m256 low = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(values));
            const __m256 high = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(values, 8)));
            _mm256_storeu_ps(plane[ch] + x, _mm256_add_ps(_mm256_mul_ps(low, scale[ch]), offset[ch]));
            _mm256_storeu_ps(plane[ch] + x + 8, _mm256_add_ps(_mm256_mul_ps(high, scale[ch]), offset[ch]));
        }
    }
    float* const rest[3] = {plane[0] + x, plane[1] + x, plane[2] + x};
    interleaved_u8_row_portable(src + 3 * x, src_channel, mul, add, rest, n - x);
}

using InterleavedRow = void (*)(const uint8_t*, const int*, const float*, const float*, float* const*, int64_t);

InterleavedRow pick_interleaved_u8_row() {
    return cpu_has_avx2() ? interleaved_u8_row_avx2 : interleaved_u8_row_portable;
}

void interleaved_u8_row(const uint8_t* src, const int* src_channel, const float* mul, const float* add,
                        float* const* plane, int64_t n) {
    static const InterleavedRow convert = pick_interleaved_u8_row();
    convert(src, src_channel, mul, add, plane, n);
}
#else
const auto interleaved_u8_row = interleaved_u8_row_portable;
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
            const int64_t x0 = g.origin_x + c * g.step_x;
            if (n != cached_tile) {
                for (int64_t x = 0; x < p.tile_w; ++x)
                    column_offset[static_cast<size_t>(x)] = reflect_index(x0 + x, image.width) * image.stride_x;
                cached_tile = n;
            }
            const int64_t sy = reflect_index(g.origin_y + r * g.step_y + y, image.height);
            const In* row = base + sy * image.stride_y;
            if constexpr (std::is_same_v<In, uint8_t> && std::is_same_v<Out, float>) {
                // A camera frame's common case: packed BGR bytes and a tile row inside the image (no mirroring).
                if (p.channels == 3 && image.stride_x == 3 && image.stride_c == 1 && x0 >= 0 &&
                    x0 + p.tile_w <= image.width) {
                    float* const planes[3] = {out + (n * 3 + 0) * tile_plane + y * p.tile_w,
                                              out + (n * 3 + 1) * tile_plane + y * p.tile_w,
                                              out + (n * 3 + 2) * tile_plane + y * p.tile_w};
                    interleaved_u8_row(row + x0 * 3, p.src_channel, p.mul, p.add, planes, p.tile_w);
                    continue;
                }
            }
            if (p.gray) {
                // A colour image for a 1-channel model: extract_source()'s gray value of each pixel, normalised.
                Out* dst = out + n * tile_plane + y * p.tile_w;
                float* values = row_values.data();
                for (int64_t x = 0; x < p.tile_w; ++x)
                    values[x] = add_rn(mul_rn(extract_source(row + column_offset[static_cast<size_t>(x)],
                                                             image.stride_c, p, 0),
                                              p.mul[0]),
                                       p.add[0]);
                if constexpr (std::is_same_v<Out, float>)
                    std::memcpy(dst, values, static_cast<size_t>(p.tile_w) * sizeof(float));
                else
                    floats_to_halves(values, dst, p.tile_w);
                continue;
            }
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
    else if (image.dtype == DType::u16)
        extract_dispatch_out<uint16_t>(image, out, out_dtype, params, threads);
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
    int64_t y_begin, y_end;  // only the rows the batch can touch
    stitch_band(params, &y_begin, &y_end);
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

int64_t finish_cpu(float* acc, const float* weight, uint8_t* mask, const FinishParams& params, int threads) {
    return parallel_count(params.height * params.width, threads,
                          [&params, acc, weight, mask](int64_t, int64_t begin, int64_t end) {
        const FinishParams p = params;  // a local copy: mask stores (uint8_t) may alias anything else
        int64_t count = 0;
        for (int64_t pixel = begin; pixel < end; ++pixel) count += finish_pixel(pixel, acc, weight, mask, p) ? 1 : 0;
        return count;
    });
}

namespace {

// The row loops of finish_resized: portable ones and, on x86 with AVX2, 8-float ones picked once at load time.
// Both compute lerp_rn and beats operation for operation (no FMA: -ffp-contract=off; a select, not a branch,
// so that random class changes cost no mispredictions), so their results are identical.
struct RowLoops {
    // out[x] = lerp_rn(src[i0[x]], src[i1[x]], f[x], g[x]). src holds 8 readable floats past its last index;
    // block_base[b] >= 0 says that block b (x = 8b .. 8b + 7) reads only src[block_base[b] .. + 8).
    void (*lerp_gather)(const float* src, const int32_t* i0, const int32_t* i1, const float* f, const float* g,
                        const int32_t* block_base, float* out, int64_t n);
    // out[x] = lerp_rn(top[x], bottom[x], f, g) for f != 0.
    void (*lerp)(const float* top, const float* bottom, float f, float g, float* out, int64_t n);
    // The running argmax over one class k: where beats(v[x], best_value[x]), k takes over.
    void (*argmax)(const float* v, float* best_value, int32_t* best_class, int32_t k, int64_t n);
    // lerp and argmax in one pass, for when the values are not kept.
    void (*lerp_argmax)(const float* top, const float* bottom, float f, float g, float* best_value,
                        int32_t* best_class, int32_t k, int64_t n);
    // label[x] = the argmax class of source pixel x over `classes` rows `class_stride` floats apart where it is
    // confident (see run_labels), else -1. Returns whether a value is NaN or of magnitude 2^100 or more (infinities
    // included): only then can a blend of the row have a best value that is not finite.
    bool (*confident_labels)(const float* v, int64_t class_stride, int32_t classes, int32_t* label, int64_t n);
    // column_label[x] = label[i0[x]] where label[i1[x]] is the same, else -1. label holds 8 readable values past its
    // last index; block_base as in lerp_gather.
    void (*column_labels)(const int32_t* label, const int32_t* i0, const int32_t* i1, const int32_t* block_base,
                          int32_t* column_label, int64_t n);
    // label[x] = top[x] where bottom[x] is the same, else -1; unsettled[b] = whether block b (x = 8b .. 8b + 7) holds
    // a -1; returns whether no pixel does.
    bool (*settle)(const int32_t* top, const int32_t* bottom, int32_t* label, uint8_t* unsettled, int64_t n);
};

// How many of n floats are NaN or infinite (every exponent bit set), in integer operations that vectorise (n < 2^32).
int64_t count_not_finite(const float* v, int64_t n) {
    uint32_t count = 0;
    for (int64_t i = 0; i < n; ++i) {
        uint32_t bits;
        std::memcpy(&bits, v + i, sizeof bits);
        count += (bits & 0x7f800000u) == 0x7f800000u ? 1u : 0u;
    }
    return count;
}

// A source pixel is confident (run_labels) when no value is NaN, every magnitude is below 2^100 (no overflow in a
// blend), and the argmax leads the runner-up by more than 2^-100 (no underflow matters) and by more than 2^-18 of the
// largest magnitude (64 ulp; a blend's rounding moves two classes' values apart by at most 8 ulp of it).
constexpr float kSettledMagnitude = 0x1p100f;
constexpr float kSettledGap = 0x1p-100f;
constexpr float kSettledRatio = 0x1p-18f;

bool confident_labels_portable(const float* v, int64_t class_stride, int32_t classes, int32_t* label, int64_t n) {
    bool risky = false;
    for (int64_t x = 0; x < n; ++x) {
        float best = v[x];
        float runner_up = -std::numeric_limits<float>::infinity();
        float magnitude = std::fabs(best);
        int32_t l = best != best ? -1 : 0;
        for (int32_t k = 1; k < classes; ++k) {
            const float value = v[k * class_stride + x];
            const bool better = value > best;
            runner_up = better ? best : (value > runner_up ? value : runner_up);
            best = better ? value : best;
            l = value != value ? -1 : (better && l >= 0 ? k : l);
            const float a = std::fabs(value);
            magnitude = a > magnitude ? a : magnitude;
        }
        const float gap = add_rn(best, -runner_up);
        const bool confident = l >= 0 && magnitude < kSettledMagnitude && gap > kSettledGap &&
                               gap > magnitude * kSettledRatio;
        label[x] = confident ? l : -1;
        risky = risky || l < 0 || !(magnitude < kSettledMagnitude);  // l < 0: a NaN
    }
    return risky;
}

void column_labels_portable(const int32_t* label, const int32_t* i0, const int32_t* i1, const int32_t*,
                            int32_t* column_label, int64_t n) {
    for (int64_t x = 0; x < n; ++x) column_label[x] = label[i0[x]] == label[i1[x]] ? label[i0[x]] : -1;
}

bool settle_portable(const int32_t* top, const int32_t* bottom, int32_t* label, uint8_t* unsettled, int64_t n) {
    bool all = true;
    for (int64_t x = 0; x < n; ++x) {
        if (x % 8 == 0) unsettled[x / 8] = 0;
        const bool settled = top[x] >= 0 && top[x] == bottom[x];
        label[x] = settled ? top[x] : -1;
        unsettled[x / 8] = static_cast<uint8_t>(unsettled[x / 8] | (settled ? 0 : 1));
        all = all && settled;
    }
    return all;
}

void lerp_gather_portable(const float* src, const int32_t* i0, const int32_t* i1, const float* f, const float* g,
                          const int32_t*, float* out, int64_t n) {
    for (int64_t x = 0; x < n; ++x) out[x] = lerp_rn(src[i0[x]], src[i1[x]], f[x], g[x]);
}

void lerp_portable(const float* top, const float* bottom, float f, float g, float* out, int64_t n) {
    for (int64_t x = 0; x < n; ++x) out[x] = add_rn(mul_rn(top[x], g), mul_rn(bottom[x], f));
}

void argmax_portable(const float* v, float* best_value, int32_t* best_class, int32_t k, int64_t n) {
    for (int64_t x = 0; x < n; ++x) {
        const bool better = beats(v[x], best_value[x]);
        best_value[x] = better ? v[x] : best_value[x];
        best_class[x] = better ? k : best_class[x];
    }
}

void lerp_argmax_portable(const float* top, const float* bottom, float f, float g, float* best_value,
                          int32_t* best_class, int32_t k, int64_t n) {
    for (int64_t x = 0; x < n; ++x) {
        const float v = add_rn(mul_rn(top[x], g), mul_rn(bottom[x], f));
        const bool better = beats(v, best_value[x]);
        best_value[x] = better ? v : best_value[x];
        best_class[x] = better ? k : best_class[x];
    }
}

#if defined(__x86_64__) || defined(__i386__)
#define UNETRT_AVX2 __attribute__((target("avx2")))

UNETRT_AVX2 inline __m256 lerp8(__m256 a, __m256 b, __m256 f, __m256 g) {
    const __m256 blend = _mm256_add_ps(_mm256_mul_ps(a, g), _mm256_mul_ps(b, f));
    return _mm256_blendv_ps(blend, a, _mm256_cmp_ps(f, _mm256_setzero_ps(), _CMP_EQ_OQ));
}

// beats(v, b) on 8 lanes: v > b, or v is NaN and b is not.
UNETRT_AVX2 inline __m256 beats8(__m256 v, __m256 b) {
    const __m256 nan_over_number =
        _mm256_and_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q), _mm256_cmp_ps(b, b, _CMP_ORD_Q));
    return _mm256_or_ps(_mm256_cmp_ps(v, b, _CMP_GT_OQ), nan_over_number);
}

UNETRT_AVX2 inline void argmax8(__m256 v, float* best_value, int32_t* best_class, __m256 k) {
    const __m256 b = _mm256_loadu_ps(best_value);
    const __m256 better = beats8(v, b);
    _mm256_storeu_ps(best_value, _mm256_blendv_ps(b, v, better));
    const __m256 c = _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(best_class)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(best_class), _mm256_castps_si256(_mm256_blendv_ps(c, k, better)));
}

// Gathers are slow on many x86 cores; where the 8 outputs of a block read within 8 consecutive source floats
// (any upscale, mild downscales) one load and two in-register permutes replace them.
UNETRT_AVX2 void lerp_gather_avx2(const float* src, const int32_t* i0, const int32_t* i1, const float* f,
                                  const float* g, const int32_t* block_base, float* out, int64_t n) {
    int64_t x = 0;
    for (; x + 8 <= n; x += 8) {
        const __m256i j0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(i0 + x));
        const __m256i j1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(i1 + x));
        const int32_t base = block_base[x / 8];
        __m256 a, b;
        if (base >= 0) {
            const __m256 window = _mm256_loadu_ps(src + base);
            const __m256i offset = _mm256_set1_epi32(base);
            a = _mm256_permutevar8x32_ps(window, _mm256_sub_epi32(j0, offset));
            b = _mm256_permutevar8x32_ps(window, _mm256_sub_epi32(j1, offset));
        } else {
            a = _mm256_i32gather_ps(src, j0, 4);
            b = _mm256_i32gather_ps(src, j1, 4);
        }
        _mm256_storeu_ps(out + x, lerp8(a, b, _mm256_loadu_ps(f + x), _mm256_loadu_ps(g + x)));
    }
    lerp_gather_portable(src, i0 + x, i1 + x, f + x, g + x, nullptr, out + x, n - x);
}

UNETRT_AVX2 void lerp_avx2(const float* top, const float* bottom, float f, float g, float* out, int64_t n) {
    const __m256 f8 = _mm256_set1_ps(f), g8 = _mm256_set1_ps(g);
    int64_t x = 0;
    for (; x + 8 <= n; x += 8)
        _mm256_storeu_ps(out + x, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(top + x), g8),
                                                _mm256_mul_ps(_mm256_loadu_ps(bottom + x), f8)));
    lerp_portable(top + x, bottom + x, f, g, out + x, n - x);
}

UNETRT_AVX2 void argmax_avx2(const float* v, float* best_value, int32_t* best_class, int32_t k, int64_t n) {
    const __m256 k8 = _mm256_castsi256_ps(_mm256_set1_epi32(k));
    int64_t x = 0;
    for (; x + 8 <= n; x += 8) argmax8(_mm256_loadu_ps(v + x), best_value + x, best_class + x, k8);
    argmax_portable(v + x, best_value + x, best_class + x, k, n - x);
}

UNETRT_AVX2 void lerp_argmax_avx2(const float* top, const float* bottom, float f, float g, float* best_value,
                                  int32_t* best_class, int32_t k, int64_t n) {
    const __m256 f8 = _mm256_set1_ps(f), g8 = _mm256_set1_ps(g);
    const __m256 k8 = _mm256_castsi256_ps(_mm256_set1_epi32(k));
    int64_t x = 0;
    for (; x + 8 <= n; x += 8) {
        const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(top + x), g8),
                                       _mm256_mul_ps(_mm256_loadu_ps(bottom + x), f8));
        argmax8(v, best_value + x, best_class + x, k8);
    }
    lerp_argmax_portable(top + x, bottom + x, f, g, best_value + x, best_class + x, k, n - x);
}

// The running state of confident_labels_portable() on 8 lanes. best and runner_up follow the portable loop's
// selects exactly (max_ps(a, b) is a > b ? a : b, NaN giving b, as its `>` tests); the smallest value stands in for
// the largest magnitude (without NaN, max |v| = max(best, -smallest), and a NaN makes the pixel unconfident anyway);
// and a NaN anywhere sets the label to -1 at the end, as the portable loop's sticky -1 does.
struct ConfidentLanes {
    __m256 best, runner_up, smallest, nan;
    __m256i label;

    UNETRT_AVX2 explicit ConfidentLanes(__m256 first)
        : best(first), runner_up(_mm256_set1_ps(-std::numeric_limits<float>::infinity())), smallest(first),
          nan(_mm256_cmp_ps(first, first, _CMP_UNORD_Q)), label(_mm256_setzero_si256()) {}

    UNETRT_AVX2 void step(__m256 value, __m256i k) {
        const __m256 better = _mm256_cmp_ps(value, best, _CMP_GT_OQ);
        runner_up = _mm256_blendv_ps(_mm256_max_ps(value, runner_up), best, better);
        best = _mm256_max_ps(value, best);
        smallest = _mm256_min_ps(value, smallest);
        label = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(label), _mm256_castsi256_ps(k), better));
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(value, value, _CMP_UNORD_Q));
    }

    // The confident label of each lane, or -1; ORs into *risky the lanes with a NaN or a magnitude of 2^100 or more.
    UNETRT_AVX2 __m256i labels(__m256* risky) const {
        const __m256 magnitude = _mm256_max_ps(best, _mm256_xor_ps(smallest, _mm256_set1_ps(-0.0f)));
        *risky = _mm256_or_ps(*risky, _mm256_or_ps(nan, _mm256_cmp_ps(magnitude, _mm256_set1_ps(kSettledMagnitude),
                                                                      _CMP_NLT_UQ)));
        const __m256 gap = _mm256_sub_ps(best, runner_up);  // b - r is b + (-r), as add_rn(best, -runner_up)
        const __m256 confident = _mm256_andnot_ps(
            nan, _mm256_and_ps(_mm256_and_ps(_mm256_cmp_ps(magnitude, _mm256_set1_ps(kSettledMagnitude), _CMP_LT_OQ),
                                             _mm256_cmp_ps(gap, _mm256_set1_ps(kSettledGap), _CMP_GT_OQ)),
                               _mm256_cmp_ps(gap, _mm256_mul_ps(magnitude, _mm256_set1_ps(kSettledRatio)),
                                             _CMP_GT_OQ)));
        return _mm256_castps_si256(
            _mm256_blendv_ps(_mm256_castsi256_ps(_mm256_set1_epi32(-1)), _mm256_castsi256_ps(label), confident));
    }
};

// Two groups of 8 pixels at a time: each class step of one group waits on the previous step's max (a chain of
// dependent instructions), so two independent chains keep the core busy; 16 floats are also one cache line of each
// class plane, read whole before the 11 planes (4 KiB-aligned apart, one L1 set) can evict it.
UNETRT_AVX2 bool confident_labels_avx2(const float* v, int64_t class_stride, int32_t classes, int32_t* label,
                                       int64_t n) {
    __m256 risky = _mm256_setzero_ps();
    int64_t x = 0;
    for (; x + 16 <= n; x += 16) {
        ConfidentLanes low(_mm256_loadu_ps(v + x)), high(_mm256_loadu_ps(v + x + 8));
        for (int32_t k = 1; k < classes; ++k) {
            const float* plane = v + k * class_stride + x;
            const __m256i kk = _mm256_set1_epi32(k);
            low.step(_mm256_loadu_ps(plane), kk);
            high.step(_mm256_loadu_ps(plane + 8), kk);
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(label + x), low.labels(&risky));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(label + x + 8), high.labels(&risky));
    }
    for (; x + 8 <= n; x += 8) {
        ConfidentLanes lanes(_mm256_loadu_ps(v + x));
        for (int32_t k = 1; k < classes; ++k) lanes.step(_mm256_loadu_ps(v + k * class_stride + x), _mm256_set1_epi32(k));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(label + x), lanes.labels(&risky));
    }
    const bool any = _mm256_movemask_ps(risky) != 0;
    // GCC 12 puts no vzeroupper before a tail call: the portable loop and the SSE code after it would run with the
    // upper halves dirty, each of their instructions paying for them (tests/cpp_ext/test_avx_state.py).
    _mm256_zeroupper();
    return confident_labels_portable(v + x, class_stride, classes, label + x, n - x) || any;
}

UNETRT_AVX2 void column_labels_avx2(const int32_t* label, const int32_t* i0, const int32_t* i1,
                                    const int32_t* block_base, int32_t* column_label, int64_t n) {
    const __m256i none = _mm256_set1_epi32(-1);
    int64_t x = 0;
    for (; x + 8 <= n; x += 8) {
        const __m256i j0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(i0 + x));
        const __m256i j1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(i1 + x));
        const int32_t base = block_base[x / 8];
        __m256i a, b;
        if (base >= 0) {
            const __m256i window = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(label + base));
            const __m256i offset = _mm256_set1_epi32(base);
            a = _mm256_permutevar8x32_epi32(window, _mm256_sub_epi32(j0, offset));
            b = _mm256_permutevar8x32_epi32(window, _mm256_sub_epi32(j1, offset));
        } else {
            a = _mm256_i32gather_epi32(label, j0, 4);
            b = _mm256_i32gather_epi32(label, j1, 4);
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(column_label + x),
                            _mm256_blendv_epi8(none, a, _mm256_cmpeq_epi32(a, b)));
    }
    column_labels_portable(label, i0 + x, i1 + x, nullptr, column_label + x, n - x);
}

UNETRT_AVX2 bool settle_avx2(const int32_t* top, const int32_t* bottom, int32_t* label, uint8_t* unsettled,
                             int64_t n) {
    const __m256i none = _mm256_set1_epi32(-1);
    __m256i all = none;
    int64_t x = 0;
    for (; x + 8 <= n; x += 8) {
        const __m256i t = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(top + x));
        const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bottom + x));
        const __m256i settled = _mm256_and_si256(_mm256_cmpgt_epi32(t, none), _mm256_cmpeq_epi32(t, b));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(label + x), _mm256_blendv_epi8(none, t, settled));
        unsettled[x / 8] = _mm256_movemask_epi8(settled) == -1 ? 0 : 1;
        all = _mm256_and_si256(all, settled);
    }
    const bool rest = settle_portable(top + x, bottom + x, label + x, unsettled + x / 8, n - x);
    return rest && _mm256_movemask_epi8(all) == -1;
}

RowLoops pick_row_loops() {
    if (cpu_has_avx2())
        return {lerp_gather_avx2,      lerp_avx2,          argmax_avx2, lerp_argmax_avx2,
                confident_labels_avx2, column_labels_avx2, settle_avx2};
    return {lerp_gather_portable,      lerp_portable,          argmax_portable, lerp_argmax_portable,
            confident_labels_portable, column_labels_portable, settle_portable};
}
#else
RowLoops pick_row_loops() {
    return {lerp_gather_portable,      lerp_portable,          argmax_portable, lerp_argmax_portable,
            confident_labels_portable, column_labels_portable, settle_portable};
}
#endif

const RowLoops& row_loops() {
    static const RowLoops loops = pick_row_loops();
    return loops;
}

// Row form of finish_resized_pixel() for one band of output rows. Each source row is converted, divided by the
// weight and interpolated horizontally once per class and kept while consecutive output rows sample it; each
// output row is then a vertical blend of two such rows and a running argmax, all over contiguous rows of floats.
// Every value goes through the same lerp_rn/beats steps as the per-pixel form, so the results are identical.
class FinishResizedRows {
   public:
    // Scratch floats one band needs: the source row, two cached rows of interpolated classes, the softmax sums, the
    // best values, and every class of one source row (converted or divided, for the labels).
    static int64_t scratch_size(const FinishResizedParams& p) {
        return p.rect_w + kSourcePadding + 2 * p.classes * p.out_w + 2 * p.out_w + p.classes * p.rect_w;
    }

    // Scratch int32 one band needs: the class numbers of one row, its settled labels, the confident labels of a
    // source row, the two cached rows of column labels, which blocks each cached row of classes holds, and (as
    // bytes) which blocks of a row are unsettled.
    static int64_t label_scratch_size(const FinishResizedParams& p) {
        return 2 * p.out_w + p.rect_w + kSourcePadding + 2 * p.out_w + 2 * blocks(p) + (blocks(p) + 3) / 4;
    }

    // Blocks of output columns (the last one may be short).
    static int64_t blocks(const FinishResizedParams& p) { return (p.out_w + kBlock - 1) / kBlock; }

    // The horizontal samples of every output column, as row loops take them.
    struct Columns {
        std::vector<int32_t> i0, i1, block_base;
        std::vector<float> frac, one_minus_frac;
    };

    static Columns columns(const FinishResizedParams& p) {
        Columns c;
        for (int64_t x = 0; x < p.out_w; ++x) {
            const AxisSample a = axis_sample(x, p.rect_w, p.scale_x);
            c.i0.push_back(static_cast<int32_t>(a.i0));
            c.i1.push_back(static_cast<int32_t>(a.i1));
            c.frac.push_back(a.frac);
            c.one_minus_frac.push_back(add_rn(1.0f, -a.frac));
        }
        // Indices grow with x, so a block's span is [i0 of its first, i1 of its last].
        for (int64_t x = 0; x + 8 <= p.out_w; x += 8) {
            const int32_t lo = c.i0[static_cast<size_t>(x)], hi = c.i1[static_cast<size_t>(x + 7)];
            c.block_base.push_back(hi - lo < 8 ? lo : -1);
        }
        return c;
    }

    FinishResizedRows(const FinishResizedParams& p, const void* scores, const float* weight, const Columns& columns,
                      float* scratch, int32_t* label_scratch)
        : p_(p), scores_(scores), weight_(weight), columns_(columns) {
        source_ = scratch;
        rows_[0] = source_ + p.rect_w + kSourcePadding;
        rows_[1] = rows_[0] + p.classes * p.out_w;
        total_ = rows_[1] + p.classes * p.out_w;
        best_value_ = total_ + p.out_w;
        source_classes_ = best_value_ + p.out_w;
        best_class_ = label_scratch;
        row_label_ = best_class_ + p.out_w;
        // kSourcePadding more labels, for the 8-value loads of column_labels.
        source_label_ = row_label_ + p.out_w;
        column_label_[0] = source_label_ + p.rect_w + kSourcePadding;
        column_label_[1] = column_label_[0] + p.out_w;
        interpolated_[0] = column_label_[1] + p.out_w;
        interpolated_[1] = interpolated_[0] + blocks(p);
        unsettled_ = reinterpret_cast<uint8_t*>(interpolated_[1] + blocks(p));
    }

    // Rows [y_begin, y_end) of the mask and/or probabilities; returns how many of their pixels have a best resized
    // value that is not finite (finish_resized_pixel's result).
    int64_t run(int64_t y_begin, int64_t y_end, uint8_t* mask, float* probabilities) {
        nonfinite_ = 0;
        if (mask != nullptr && probabilities == nullptr && !p_.binary && p_.classes > 1) {
            y_begin = run_labels(y_begin, y_end, mask);
        }
        const int64_t plane = p_.out_h * p_.out_w;
        const int64_t w = p_.out_w;
        for (int64_t y = y_begin; y < y_end; ++y) {
            const AxisSample sy = axis_sample(y, p_.rect_h, p_.scale_y);
            const float gy = add_rn(1.0f, -sy.frac);
            const float* top = interpolated_rows(sy.i0, sy.i1);
            const float* bottom = interpolated_rows(sy.i1, sy.i0);
            float* best_value = best_value_;
            int32_t* best_class = best_class_;
            for (int64_t k = 0; k < p_.classes; ++k) {
                const float* h0 = top + k * w;
                const float* h1 = bottom + k * w;
                const int32_t kk = static_cast<int32_t>(k);
                if (probabilities == nullptr && k > 0) {
                    if (sy.frac == 0.0f) loops_.argmax(h0, best_value, best_class, kk, w);
                    else loops_.lerp_argmax(h0, h1, sy.frac, gy, best_value, best_class, kk, w);
                    continue;
                }
                float* v = probabilities != nullptr ? probabilities + k * plane + y * w : best_value;
                if (sy.frac == 0.0f) std::memcpy(v, h0, static_cast<size_t>(w) * sizeof(float));
                else loops_.lerp(h0, h1, sy.frac, gy, v, w);
                if (k == 0) {
                    if (v != best_value) std::memcpy(best_value, v, static_cast<size_t>(w) * sizeof(float));
                    std::fill(best_class, best_class + w, 0);
                } else {
                    loops_.argmax(v, best_value, best_class, kk, w);
                }
            }
            nonfinite_ += finish_row(best_value, best_class, mask == nullptr ? nullptr : mask + y * w);
            if (probabilities != nullptr) to_probabilities(probabilities + y * w, plane);
        }
        return nonfinite_;
    }

   private:
    // The mask row `out` (nullptr: none) from one row's argmax; returns how many of the row's pixels have a best
    // value that is not finite (finish_resized_pixel's result), counted over the best values the argmax left in L1.
    int64_t finish_row(const float* best_value, const int32_t* best_class, uint8_t* out) const {
        const int64_t w = p_.out_w;
        const int64_t count = count_not_finite(best_value, w);
        if (out == nullptr) return count;
        if (p_.binary) {
            const float threshold = p_.threshold;
            for (int64_t x = 0; x < w; ++x) out[x] = best_value[x] > threshold ? 1 : 0;
        } else {
            for (int64_t x = 0; x < w; ++x) out[x] = static_cast<uint8_t>(best_class[x]);
        }
        return count;
    }

    // The source row holds this many more floats, so that an 8-float load at its last pixel stays inside.
    static constexpr int64_t kSourcePadding = 8;
    // Output pixels go in blocks of this many: a block with one unsettled pixel is computed class by class whole.
    static constexpr int64_t kBlock = 8;
    // run_labels gives up on a band after this many rows when more than this share of their blocks was unsettled.
    static constexpr int64_t kProbeRows = 16;
    static constexpr float kMostlyUnsettled = 0.3f;

    // The mask alone (argmax over K, no probabilities). An output pixel is a blend, with non-negative weights w_i,
    // of the four source pixels around it. A resized value (two rounded lerps of 3 roundings each) lies within
    // 4.01 ulp-units of sum_i w_i |s_i| of the exact blend, so two classes' resized values lie within
    // 8.02 u sum_i w_i M_i of their exact difference, M_i the largest magnitude at source pixel i. Where the four
    // source pixels are confident (confident_labels: no NaN, the argmax c leads every other class by more than
    // 2^-18 = 64 u of M_i, more than 2^-100, with M_i below 2^100) and share c, the exact difference of c and any
    // class is at least sum_i w_i lead_i > 64 u sum_i w_i M_i: c's resized value is above every other class's,
    // and the argmax is c, exactly as finish_resized_pixel() computes it; the pixel is settled without
    // interpolating its classes. The other pixels (class borders, near ties, NaN, infinities, huge or tiny values)
    // go through the class loop, in blocks. The labels cost a pass over the scores: when, after kProbeRows rows,
    // more than kMostlyUnsettled of the blocks held an unsettled pixel (noisy scores: a border everywhere), the rest
    // of the band goes through the plain class loop of run(); returns the first row left for it, and adds the rows'
    // pixels whose best value is not finite to nonfinite_ (all in unsettled blocks: confident pixels are finite).
    int64_t run_labels(int64_t y_begin, int64_t y_end, uint8_t* mask) {
        const int64_t w = p_.out_w;
        int64_t blocks_seen = 0, blocks_unsettled = 0;
        for (int64_t y = y_begin; y < y_end; ++y) {
            if (y - y_begin == kProbeRows && static_cast<float>(blocks_unsettled) > kMostlyUnsettled * blocks_seen)
                return y;
            const AxisSample sy = axis_sample(y, p_.rect_h, p_.scale_y);
            const int top = summarized_row(sy.i0, sy.i1);
            const int bottom = summarized_row(sy.i1, sy.i0);
            const bool all_settled =
                loops_.settle(column_label_[top], column_label_[bottom], row_label_, unsettled_, w);
            blocks_seen += blocks(p_);
            if (!all_settled) blocks_unsettled += argmax_unsettled_blocks(sy, risky_[top] || risky_[bottom]);
            // A local: the uint8 stores may alias anything, a member would be read again at every pixel.
            const int32_t* label = row_label_;
            uint8_t* out = mask + y * w;
            for (int64_t x = 0; x < w; ++x) out[x] = static_cast<uint8_t>(label[x]);
        }
        return y_end;
    }

    // The class loop of run() over the blocks of row_label_ that hold an unsettled pixel, whose labels it replaces
    // (the settled pixels among them get the label they had); returns how many blocks that was. Where the two source
    // rows are `risky` (confident_labels), adds the pixels whose best value is not finite to nonfinite_; elsewhere
    // none can be, and finite scores pay nothing for the count.
    int64_t argmax_unsettled_blocks(const AxisSample& sy, bool risky) {
        const int64_t w = p_.out_w;
        int64_t count = 0;
        const float gy = add_rn(1.0f, -sy.frac);
        int64_t x = 0;
        while (x < w) {
            if (!unsettled_[x / kBlock]) {
                x += kBlock;
                continue;
            }
            int64_t end = x + kBlock;
            while (end < w && unsettled_[end / kBlock]) end += kBlock;
            end = std::min(end, w);
            const int64_t n = end - x;
            count += (n + kBlock - 1) / kBlock;
            // Only these columns of the two source rows are interpolated (where no earlier row needed them).
            const float* top = interpolated_columns(sy.i0, sy.i1, x, end);
            const float* bottom = interpolated_columns(sy.i1, sy.i0, x, end);
            float* best_value = best_value_ + x;
            int32_t* best_class = row_label_ + x;
            if (sy.frac == 0.0f) std::memcpy(best_value, top + x, static_cast<size_t>(n) * sizeof(float));
            else loops_.lerp(top + x, bottom + x, sy.frac, gy, best_value, n);
            std::fill(best_class, best_class + n, 0);
            for (int64_t k = 1; k < p_.classes; ++k) {
                const float* h0 = top + k * w + x;
                const int32_t kk = static_cast<int32_t>(k);
                if (sy.frac == 0.0f) loops_.argmax(h0, best_value, best_class, kk, n);
                else loops_.lerp_argmax(h0, bottom + k * w + x, sy.frac, gy, best_value, best_class, kk, n);
            }
            if (risky) nonfinite_ += count_not_finite(best_value, n);
            x = end;
        }
        return count;
    }

    // The slot (0 or 1) holding the column labels of source row `row`, computed into the slot not holding `keep`.
    int summarized_row(int64_t row, int64_t keep) {
        for (int i = 0; i < 2; ++i)
            if (summarized_[i] == row) return i;
        const int slot = summarized_[0] == keep ? 1 : 0;
        summarized_[slot] = row;
        risky_[slot] = summarize_source_row(row);
        loops_.column_labels(source_label_, columns_.i0.data(), columns_.i1.data(), columns_.block_base.data(),
                             column_label_[slot], p_.out_w);
        return slot;
    }

    // The confident label of each pixel of source row `row` (divided by the weight, as interpolated), or -1; returns
    // whether the row is risky (confident_labels).
    bool summarize_source_row(int64_t row) {
        const int64_t n = p_.rect_w;
        const int32_t classes = static_cast<int32_t>(p_.classes);
        if (p_.score_dtype == DType::f32 && weight_ == nullptr) {
            const float* scores = static_cast<const float*>(scores_) + (p_.rect_y + row) * p_.src_w + p_.rect_x;
            return loops_.confident_labels(scores, p_.src_h * p_.src_w, classes, source_label_, n);
        }
        for (int64_t k = 0; k < p_.classes; ++k)
            std::memcpy(source_classes_ + k * n, load_source_row(k, row, false), static_cast<size_t>(n) * 4);
        return loops_.confident_labels(source_classes_, n, classes, source_label_, n);
    }

    // The horizontally interpolated rows (K x out_w) of source row `row`, computed into the slot not holding `keep`.
    const float* interpolated_rows(int64_t row, int64_t keep) { return interpolated_columns(row, keep, 0, p_.out_w); }

    // The horizontally interpolated rows (K x out_w) of source row `row`, valid at least in the output columns
    // [x_begin, x_end) (x_begin a block's first column): the blocks of them not computed yet are computed into the
    // slot holding `row`, or else into the one not holding `keep`.
    const float* interpolated_columns(int64_t row, int64_t keep, int64_t x_begin, int64_t x_end) {
        int slot = cached_[0] == row ? 0 : (cached_[1] == row ? 1 : -1);
        if (slot < 0) {
            slot = cached_[0] == keep ? 1 : 0;
            cached_[slot] = row;
            std::fill(interpolated_[slot], interpolated_[slot] + blocks(p_), 0);
        }
        int32_t* done = interpolated_[slot];
        const int64_t block_end = (x_end + kBlock - 1) / kBlock;
        for (int64_t block = x_begin / kBlock; block < block_end;) {
            if (done[block]) {
                ++block;
                continue;
            }
            int64_t stop = block + 1;
            while (stop < block_end && !done[stop]) ++stop;
            const int64_t x = block * kBlock;
            const int64_t n = std::min(stop * kBlock, p_.out_w) - x;
            for (int64_t k = 0; k < p_.classes; ++k)
                loops_.lerp_gather(load_source_row(k, row, true), columns_.i0.data() + x, columns_.i1.data() + x,
                                   columns_.frac.data() + x, columns_.one_minus_frac.data() + x,
                                   columns_.block_base.data() + block, rows_[slot] + k * p_.out_w + x, n);
            std::fill(done + block, done + stop, 1);
            block = stop;
        }
        return rows_[slot];
    }

    // Class k of source row `row` of the rect as floats, divided by the weight: the scores themselves where they are
    // such floats (with kSourcePadding more readable past the row's end when `padded`), else a copy in source_.
    const float* load_source_row(int64_t k, int64_t row, bool padded) {
        const int64_t src_row = (k * p_.src_h + p_.rect_y + row) * p_.src_w + p_.rect_x;
        const int64_t readable = p_.rect_w + (padded ? kSourcePadding : 0);
        const bool direct = p_.score_dtype == DType::f32 && weight_ == nullptr;
        if (direct && src_row + readable <= p_.classes * p_.src_h * p_.src_w)
            return static_cast<const float*>(scores_) + src_row;
        float* src = source_;
        if (p_.score_dtype == DType::f16)
            halves_to_floats(static_cast<const uint16_t*>(scores_) + src_row, src, p_.rect_w);
        else
            std::memcpy(src, static_cast<const float*>(scores_) + src_row, static_cast<size_t>(p_.rect_w) * 4);
        if (weight_ != nullptr) {
            const float* wrow = weight_ + (p_.rect_y + row) * p_.src_w + p_.rect_x;
            for (int64_t x = 0; x < p_.rect_w; ++x) src[x] = div_rn(src[x], wrow[x]);
        }
        return src;
    }

    // Softmax over K (sigmoid when binary) of one output row, in place, in class order as finish_resized_pixel().
    void to_probabilities(float* row, int64_t plane) {
        const int64_t w = p_.out_w;
        if (p_.binary) {
            for (int64_t x = 0; x < w; ++x) row[x] = div_rn(1.0f, add_rn(1.0f, expf(-best_value_[x])));
            return;
        }
        float* total = total_;
        std::fill(total, total + w, 0.0f);
        for (int64_t k = 0; k < p_.classes; ++k) {
            float* v = row + k * plane;
            for (int64_t x = 0; x < w; ++x) {
                v[x] = expf(add_rn(v[x], -best_value_[x]));
                total[x] = add_rn(total[x], v[x]);
            }
        }
        for (int64_t k = 0; k < p_.classes; ++k) {
            float* v = row + k * plane;
            for (int64_t x = 0; x < w; ++x) v[x] = div_rn(v[x], total[x]);
        }
    }

    const FinishResizedParams p_;
    const void* scores_;
    const float* weight_;
    const Columns& columns_;
    const RowLoops& loops_ = row_loops();
    float* source_;
    float* rows_[2];
    float* total_;  // softmax denominators of one row
    float* best_value_;
    float* source_classes_;  // K x rect_w: one source row converted or divided, for confident_labels
    int32_t* best_class_;
    int32_t* row_label_;  // the settled label of each output pixel of a row, -1 where the class loop decides
    int32_t* source_label_;
    int32_t* column_label_[2];
    int32_t* interpolated_[2];  // per block of output columns: whether rows_[slot] holds it
    uint8_t* unsettled_;        // per block of output columns of a row: whether it holds an unsettled pixel
    int64_t nonfinite_ = 0;  // pixels of run()'s rows whose best value is not finite
    int64_t cached_[2] = {-1, -1};
    int64_t summarized_[2] = {-1, -1};
    bool risky_[2] = {false, false};  // whether the source row of each slot of column labels is risky
};

}  // namespace

int64_t finish_resized_cpu(const void* scores, const float* weight, uint8_t* mask, float* probabilities,
                           const FinishResizedParams& params, int threads) {
    const FinishResizedRows::Columns columns = FinishResizedRows::columns(params);
    const int64_t per_part = FinishResizedRows::scratch_size(params);
    const int64_t labels_per_part = FinishResizedRows::label_scratch_size(params);
    const int64_t parts = part_count(params.out_h, threads);
    std::vector<float> scratch(static_cast<size_t>(parts * per_part));
    std::vector<int32_t> labels(static_cast<size_t>(parts * labels_per_part));
    return parallel_count(params.out_h, threads, [&](int64_t part, int64_t begin, int64_t end) {
        FinishResizedRows rows(params, scores, weight, columns, scratch.data() + part * per_part,
                               labels.data() + part * labels_per_part);
        return rows.run(begin, end, mask, probabilities);
    });
}

namespace {

// resize_pixel() in row form, term for term: the CUDA kernel's arithmetic, so the host path's working-size image is
// the GPU path's bit for bit, for every frame dtype. Each output row lerps its two source rows horizontally, then
// vertically, in one loop over the row's values; the samples of every output value (offsets and fractions) are
// tabled once per call. For integer images lerp_rn's f == 0 case is dropped: for values 0..65535, a * 1 + b * 0 is
// a exactly, and the loop without a branch vectorises. A float image keeps it (a * 1 + b * 0 turns -0 into +0, and an
// infinite b into NaN).
//
// An integer image's source rows are converted to float first, each once while consecutive output rows use it (a
// contiguous loop the compiler vectorises), so that the lerps read floats: static_cast<float> of a value is the
// same float there as inside resize_pixel(). Reading and converting each sampled value inside the lerp loop (as
// until 2026-12-07) kept that loop scalar: a uint16 frame's 480x360 -> 224x168 resize took 0.31 ms, not 0.19.
//
// The two loops (row conversion, row lerps) come in a portable form, built for the baseline of the target (SSE2 on
// x86-64), and on x86 in an AVX2 form picked at load time where the CPU has AVX2 (whose row loop widens a colour
// integer image's values itself, unconverted); both do the same float operations in the same order on every value
// (no FMA: -ffp-contract=off, and the AVX2 form has mul and add intrinsics only), so their images are identical.

// The horizontal samples of every value of an output row (pixel x, channel c at value x * channels + c).
struct ResizeColumns {
    int64_t channels, source_values;  // values of a source row
    std::vector<int32_t> off0, off1;  // offsets of the two source values in a source row
    std::vector<float> frac, one_minus_frac;
};

// Offsets fit in int32: a row holds at most kMaxResizeSide * kMaxChannels = 2^25 values.
ResizeColumns resize_columns(const ResizeParams& p) {
    const size_t n = static_cast<size_t>(p.out_w * p.channels);
    ResizeColumns c{p.channels, p.src_w * p.channels, std::vector<int32_t>(n), std::vector<int32_t>(n),
                    std::vector<float>(n), std::vector<float>(n)};
    for (int64_t x = 0; x < p.out_w; ++x) {
        const AxisSample sx = axis_sample(x, p.src_w, p.scale_x);
        for (int64_t ch = 0; ch < p.channels; ++ch) {
            const size_t i = static_cast<size_t>(x * p.channels + ch);
            c.off0[i] = static_cast<int32_t>(sx.i0 * p.channels + ch);
            c.off1[i] = static_cast<int32_t>(sx.i1 * p.channels + ch);
            c.frac[i] = sx.frac;
            c.one_minus_frac[i] = add_rn(1.0f, -sx.frac);
        }
    }
    return c;
}

// The loops of one dtype T: a source row as floats (integer images), and one output row (columns.off0.size()
// values) from its two source rows: dst[i] = resize_pixel()'s value i of the row. `row` reads the image's rows
// src0 and src1 themselves where reads_rows(channels), else the two rows as floats, row0 and row1 (an integer image's
// converted by to_floats; a float image's are src0 and src1). stage holds 4 + columns.off0.size() floats of scratch.
template <typename T>
struct ResizeLoops {
    void (*to_floats)(const T* src, float* dst, int64_t n);
    bool (*reads_rows)(int64_t channels);
    void (*row)(const T* src0, const T* src1, const float* row0, const float* row1, const ResizeColumns& columns,
                float fy, float gy, float* stage, T* dst);
};

template <typename T>
void to_floats_portable(const T* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

// n values of an output row, their samples at off0, off1, fx and gx, from source rows of S (floats, or the image's
// own values: static_cast<float> of a value is the same float either way). Pointers as parameters, not read from a
// ResizeColumns: GCC 12 then vectorises the integer images' loop (0.22 ms, not 0.61, for a uint8 frame's
// 480x360 -> 224x168).
template <typename T, typename S>
void resize_values_portable(const S* row0, const S* row1, const int32_t* off0, const int32_t* off1,
                            const float* fx, const float* gx, float fy, float gy, T* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const float a0 = static_cast<float>(row0[off0[i]]), b0 = static_cast<float>(row0[off1[i]]);
        const float a1 = static_cast<float>(row1[off0[i]]), b1 = static_cast<float>(row1[off1[i]]);
        if constexpr (std::is_floating_point_v<T>) {
            dst[i] = lerp_rn(lerp_rn(a0, b0, fx[i], gx[i]), lerp_rn(a1, b1, fx[i], gx[i]), fy, gy);
        } else {
            const float top = add_rn(mul_rn(a0, gx[i]), mul_rn(b0, fx[i]));
            const float bottom = add_rn(mul_rn(a1, gx[i]), mul_rn(b1, fx[i]));
            dst[i] = resized_as<T>(add_rn(mul_rn(top, gy), mul_rn(bottom, fy)));
        }
    }
}

// Values [begin, end) of an output row.
template <typename T, typename S>
void resize_range_portable(const S* row0, const S* row1, const ResizeColumns& c, float fy, float gy, T* dst,
                           int64_t begin, int64_t end) {
    const size_t at = static_cast<size_t>(begin);
    resize_values_portable(row0, row1, c.off0.data() + at, c.off1.data() + at, c.frac.data() + at,
                           c.one_minus_frac.data() + at, fy, gy, dst + begin, end - begin);
}

bool reads_no_rows(int64_t) { return false; }

template <typename T>
void resize_row_portable(const T*, const T*, const float* row0, const float* row1, const ResizeColumns& c, float fy,
                         float gy, float*, T* dst) {
    resize_range_portable(row0, row1, c, fy, gy, dst, 0, static_cast<int64_t>(c.off0.size()));
}

#if defined(__x86_64__) || defined(__i386__)
// The 8 bytes at p in the low half (an unaligned load: _mm_load_sd reads through a double*, which UBSan takes for
// a misaligned double).
UNETRT_AVX2 inline __m128i load_low8(const void* p) { return _mm_loadl_epi64(static_cast<const __m128i*>(p)); }

// 8 source values as floats: exact, as static_cast<float> of each.
template <typename T>
UNETRT_AVX2 inline __m256 load8_as_floats(const T* src) {
    if constexpr (std::is_same_v<T, uint8_t>)
        return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src))));
    else if constexpr (std::is_same_v<T, uint16_t>)
        return _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src))));
    else
        return _mm256_loadu_ps(src);
}

template <typename T>
UNETRT_AVX2 void to_floats_avx2(const T* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8_as_floats(src + i));
    to_floats_portable(src + i, dst + i, n - i);
}

// resized_as<T> on 8 lanes, stored: v + 0.5 clamped to [0, max] (max_ps and min_ps select as the scalar form's
// comparisons do for every number; the values of an integer image are never NaN), then truncated, as the cast.
template <typename T>
UNETRT_AVX2 inline void store8_resized(T* dst, __m256 v) {
    if constexpr (std::is_floating_point_v<T>) {
        _mm256_storeu_ps(dst, v);
    } else {
        constexpr float kTop = std::is_same_v<T, uint8_t> ? 255.0f : 65535.0f;
        const __m256 r = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, _mm256_set1_ps(0.5f)), _mm256_setzero_ps()),
                                       _mm256_set1_ps(kTop));
        const __m256i whole = _mm256_cvttps_epi32(r);
        // In range already: the saturating packs only narrow.
        const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(whole), _mm256_extracti128_si256(whole, 1));
        if constexpr (std::is_same_v<T, uint8_t>)
            _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packus_epi16(words, words));
        else
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), words);
    }
}

// The horizontal lerp of 8 lanes, then the vertical one: resize_values_portable()'s value before resized_as<T>.
template <typename T>
UNETRT_AVX2 inline __m256 bilinear8(__m256 a0, __m256 b0, __m256 a1, __m256 b1, __m256 f, __m256 g, __m256 fy,
                                    __m256 gy) {
    if constexpr (std::is_floating_point_v<T>)
        return lerp8(lerp8(a0, b0, f, g), lerp8(a1, b1, f, g), fy, gy);
    const __m256 top = _mm256_add_ps(_mm256_mul_ps(a0, g), _mm256_mul_ps(b0, f));
    const __m256 bottom = _mm256_add_ps(_mm256_mul_ps(a1, g), _mm256_mul_ps(b1, f));
    return _mm256_add_ps(_mm256_mul_ps(top, gy), _mm256_mul_ps(bottom, fy));
}

// low in lanes 0-3, high in 4-7.
UNETRT_AVX2 inline __m256 broadcast2x4(float low, float high) {
    return _mm256_insertf128_ps(_mm256_set1_ps(low), _mm_set1_ps(high), 1);
}

// Two pieces of 4 source values as one vector of floats (exact): `low` in lanes 0-3, `high` in 4-7.
template <typename S>
UNETRT_AVX2 inline __m256 load2x4(const S* low, const S* high) {
    if constexpr (std::is_same_v<S, uint8_t>) {
        int32_t first, second;  // memcpy: the bytes lie at any alignment
        std::memcpy(&first, low, sizeof first);
        std::memcpy(&second, high, sizeof second);
        return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_insert_epi32(_mm_cvtsi32_si128(first), second, 1)));
    } else if constexpr (std::is_same_v<S, uint16_t>) {
        const __m128d words =
            _mm_loadh_pd(_mm_castsi128_pd(load_low8(low)), reinterpret_cast<const double*>(high));
        return _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm_castpd_si128(words)));
    } else {
        return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(low)), _mm_loadu_ps(high), 1);
    }
}

// The two floats at `first`, then the two at `second` (8-byte loads).
UNETRT_AVX2 inline __m128 two_pairs(const float* first, const float* second) {
    return _mm_loadh_pi(_mm_castsi128_ps(load_low8(first)), reinterpret_cast<const __m64*>(second));
}

// The two floats at row + i, row + j, row + k and row + l, in that order.
UNETRT_AVX2 inline __m256 pairs4(const float* row, int32_t i, int32_t j, int32_t k, int32_t l) {
    return _mm256_insertf128_ps(_mm256_castps128_ps256(two_pairs(row + i, row + j)), two_pairs(row + k, row + l), 1);
}

// Without gathers (slow on many x86 cores, and on a downscale of more than 2x the 16 samples of 8 values lie
// further apart than one 8-float permute reaches): output pixel x reads its two source pixels i0 and i0 + 1 as
// 2 x channels consecutive values at off0[x * channels]. Where frac is 0, i1 is i0 and the second pixel's values are
// multiplied by 0 (any finite value gives a * 1 + 0 = a, the portable loop's a * 1 + a * 0) or, in a float image,
// not selected (lerp8), so the pixel after i0 may stand in for it as long as it lies in the row.
//
// One channel: 8 pixels at a time from the rows as floats, each source pair loaded as 8 bytes, the pairs split into
// the a and b lanes by two shuffles. 2 to 4 channels: 2 pixels at a time from the image's rows themselves, each
// source pixel loaded as 4 values (its channels, then those of the next pixel, unused) and widened to floats in
// registers (an integer image's rows are not converted first: at the camera downscale the conversion took a quarter
// of the loop's time), the result stored 4 floats per pixel into stage at x * channels, each store's spare lanes
// overwritten by the next. Values past the last such pixel (where 4 values or the pair would read past the row) go
// through the portable loop.
bool reads_colour_rows(int64_t channels) { return channels > 1; }

// The values of stage (floats before resized_as<T>) the one-channel loop computes from the rows as floats; returns
// how many.
template <typename T>
UNETRT_AVX2 int64_t gray_values_avx2(const float* row0, const float* row1, const ResizeColumns& c, float fy, float gy,
                                     float* stage) {
    // Locals: the stores into stage may alias anything, a member would be read again at every pixel.
    const int64_t n = static_cast<int64_t>(c.off0.size());
    const int64_t source_values = c.source_values;
    const int32_t* off0 = c.off0.data();
    const float* fx = c.frac.data();
    const float* gx = c.one_minus_frac.data();
    const __m256 fy8 = _mm256_set1_ps(fy), gy8 = _mm256_set1_ps(gy);
    int64_t done = 0;
    for (; done + 8 <= n && off0[done + 7] + 2 <= source_values; done += 8) {
        const int32_t* at = off0 + done;
        const __m256 p0 = pairs4(row0, at[0], at[1], at[4], at[5]);  // a0 b0 a1 b1 | a4 b4 a5 b5
        const __m256 q0 = pairs4(row0, at[2], at[3], at[6], at[7]);  // a2 b2 a3 b3 | a6 b6 a7 b7
        const __m256 p1 = pairs4(row1, at[0], at[1], at[4], at[5]);
        const __m256 q1 = pairs4(row1, at[2], at[3], at[6], at[7]);
        const __m256 v = bilinear8<T>(_mm256_shuffle_ps(p0, q0, 0x88), _mm256_shuffle_ps(p0, q0, 0xdd),
                                      _mm256_shuffle_ps(p1, q1, 0x88), _mm256_shuffle_ps(p1, q1, 0xdd),
                                      _mm256_loadu_ps(fx + done), _mm256_loadu_ps(gx + done), fy8, gy8);
        _mm256_storeu_ps(stage + done, v);
    }
    return done;
}

// The values of stage the 2-to-4-channel loop computes from the image's rows; returns how many.
template <typename T>
UNETRT_AVX2 int64_t colour_values_avx2(const T* src0, const T* src1, const ResizeColumns& c, float fy, float gy,
                                       float* stage) {
    const int64_t n = static_cast<int64_t>(c.off0.size());
    const int64_t channels = c.channels;
    const int64_t source_values = c.source_values;
    const int32_t* off0 = c.off0.data();
    const float* fx = c.frac.data();
    const float* gx = c.one_minus_frac.data();
    const __m256 fy8 = _mm256_set1_ps(fy), gy8 = _mm256_set1_ps(gy);
    const T* next0 = src0 + channels;  // the pixel after each source pixel
    const T* next1 = src1 + channels;
    int64_t x = 0;
    for (; (x + 2) * channels <= n; x += 2) {
        const int32_t s0 = off0[x * channels], s1 = off0[(x + 1) * channels];
        if (s1 + channels + 4 > source_values) break;
        const __m256 f = broadcast2x4(fx[x * channels], fx[(x + 1) * channels]);
        const __m256 g = broadcast2x4(gx[x * channels], gx[(x + 1) * channels]);
        const __m256 v = bilinear8<T>(load2x4(src0 + s0, src0 + s1), load2x4(next0 + s0, next0 + s1),
                                      load2x4(src1 + s0, src1 + s1), load2x4(next1 + s0, next1 + s1), f, g, fy8,
                                      gy8);
        _mm_storeu_ps(stage + x * channels, _mm256_castps256_ps128(v));
        _mm_storeu_ps(stage + (x + 1) * channels, _mm256_extractf128_ps(v, 1));
    }
    return x * channels;
}

template <typename T>
UNETRT_AVX2 void resize_row_avx2(const T* src0, const T* src1, const float* row0, const float* row1,
                                 const ResizeColumns& c, float fy, float gy, float* stage, T* dst) {
    const int64_t n = static_cast<int64_t>(c.off0.size());
    const bool gray = c.channels == 1;
    const int64_t done = gray ? gray_values_avx2<T>(row0, row1, c, fy, gy, stage)
                              : colour_values_avx2(src0, src1, c, fy, gy, stage);
    int64_t i = 0;
    for (; i + 8 <= done; i += 8) store8_resized(dst + i, _mm256_loadu_ps(stage + i));
    for (; i < done; ++i) dst[i] = resized_as<T>(stage[i]);
    // As in confident_labels_avx2: the SSE code after the tail call (a float frame's extract: 0.23 ms, not 0.07, on
    // a Zen 4 EPYC) would run with the upper halves dirty.
    _mm256_zeroupper();
    if (gray)
        resize_range_portable(row0, row1, c, fy, gy, dst, done, n);
    else
        resize_range_portable(src0, src1, c, fy, gy, dst, done, n);
}

#endif

// The loops `loops` names (best: AVX2 where the CPU has it, picked once).
template <typename T>
ResizeLoops<T> resize_loops(CpuLoops loops) {
    static const bool avx2 = cpu_has_avx2();
    if (loops == CpuLoops::best) loops = avx2 ? CpuLoops::avx2 : CpuLoops::portable;
#if defined(__x86_64__) || defined(__i386__)
    if (loops == CpuLoops::avx2) return {to_floats_avx2<T>, reads_colour_rows, resize_row_avx2<T>};
#endif
    return {to_floats_portable<T>, reads_no_rows, resize_row_portable<T>};
}

template <typename T>
void resize_typed(const T* in, T* out, const ResizeParams& params, int threads, CpuLoops which) {
    constexpr bool kInteger = !std::is_floating_point_v<T>;
    const ResizeLoops<T> loops = resize_loops<T>(which);
    const int64_t row_values = params.out_w * params.channels;
    const int64_t source_values = params.src_w * params.channels;
    // Allocated here, not in a worker, whose failed allocation would end the process.
    const ResizeColumns columns = resize_columns(params);
    const int64_t parts = part_count(params.out_h, threads);
    // Per part: two source rows as floats (integer images whose rows the row loop does not read itself).
    const bool convert = kInteger && !loops.reads_rows(params.channels);
    std::vector<float> converted(convert ? static_cast<size_t>(parts * 2 * source_values) : 0);
    // Per part: the row loop's scratch.
    std::vector<float> stages(static_cast<size_t>(parts * (row_values + 4)));
    parallel_parts(params.out_h, threads, [&](int64_t part, int64_t begin, int64_t end) {
        const ResizeParams p = params;  // a local copy: stores through T* may alias anything else
        const int64_t n = row_values;
        float* slots = convert ? converted.data() + part * 2 * source_values : nullptr;
        float* stage = stages.data() + part * (row_values + 4);
        int64_t slot_row[2] = {-1, -1};
        // Source row r as floats in one of the two slots, converting it unless a slot holds it already; the slot
        // holding row `keep` (the other row of the same output row) is left alone.
        const auto float_row = [&](int64_t r, int64_t keep) -> const float* {
            for (int k = 0; k < 2; ++k)
                if (slot_row[k] == r) return slots + k * source_values;
            const int k = slot_row[0] == keep ? 1 : 0;
            float* dst = slots + k * source_values;
            loops.to_floats(in + r * source_values, dst, source_values);
            slot_row[k] = r;
            return dst;
        };
        for (int64_t y = begin; y < end; ++y) {
            const AxisSample sy = axis_sample(y, p.src_h, p.scale_y);
            const T* src0 = in + sy.i0 * source_values;
            const T* src1 = in + sy.i1 * source_values;
            const float* row0 = nullptr;
            const float* row1 = nullptr;
            if constexpr (kInteger) {
                if (convert) {
                    row0 = float_row(sy.i0, sy.i1);
                    row1 = float_row(sy.i1, sy.i0);
                }
            } else {
                row0 = src0;
                row1 = src1;
            }
            loops.row(src0, src1, row0, row1, columns, sy.frac, add_rn(1.0f, -sy.frac), stage, out + y * n);
        }
    });
}

}  // namespace

bool cpu_loops_available(CpuLoops loops) {
    return loops == CpuLoops::best || loops == CpuLoops::portable || (loops == CpuLoops::avx2 && cpu_has_avx2());
}

void resize_bilinear_cpu(const void* in, void* out, const ResizeParams& params, int threads, CpuLoops loops) {
    if (params.dtype == DType::u8)
        resize_typed(static_cast<const uint8_t*>(in), static_cast<uint8_t*>(out), params, threads, loops);
    else if (params.dtype == DType::u16)
        resize_typed(static_cast<const uint16_t*>(in), static_cast<uint16_t*>(out), params, threads, loops);
    else
        resize_typed(static_cast<const float*>(in), static_cast<float*>(out), params, threads, loops);
}

}  // namespace UNETRT_NAMESPACE
