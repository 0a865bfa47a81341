// unetrt._tiling: checks every argument, then calls the CPU kernels (numpy arrays) or the CUDA launchers
// (device pointers as integers). Any bad input raises ValueError before a kernel runs.
//
// Compiled a second time with UNETRT_EMULATED_CUDA, this file is unetrt._tiling_emu: the same numpy functions
// with the same checks, but running the CUDA kernels by emulation (tiling_emulated.cpp), plus a write log.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tiling.h"

#if defined(UNETRT_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

#if defined(UNETRT_EMULATED_CUDA)
#include "tiling_emulated.h"
namespace unetrt = UNETRT_NAMESPACE;
#endif

namespace py = pybind11;
using unetrt::DType;

namespace {

// Every coordinate and size stays far below 2^62 after the products the kernels form.
constexpr int64_t kMaxCoordinate = int64_t{1} << 31;

using Pair = std::array<int64_t, 2>;

template <typename... Parts>
std::string cat(const Parts&... parts) {
    std::ostringstream out;
    (out << ... << parts);
    return out.str();
}

[[noreturn]] void fail(const std::string& message) { throw py::value_error(message); }

std::string shape_text(const std::vector<int64_t>& shape) {
    std::string text = "(";
    for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
    return text + (shape.size() == 1 ? ",)" : ")");
}

const char* dtype_name(DType d) {
    switch (d) {
        case DType::u8: return "uint8";
        case DType::u16: return "uint16";
        case DType::f16: return "float16";
        default: return "float32";
    }
}

int64_t itemsize(DType d) { return d == DType::u8 ? 1 : (d == DType::f32 ? 4 : 2); }

// The array's dtype among those the kernels know, or nullopt; non-native byte order is an error.
std::optional<DType> known_dtype(const py::array& a, const char* what) {
    const py::dtype dt = a.dtype();
    const std::string order = py::str(dt.attr("byteorder"));
    if (order == ">") fail(cat(what, " must be in native byte order, got ", std::string(py::str(dt))));
    const char kind = dt.kind();
    if (kind == 'u' && dt.itemsize() == 1) return DType::u8;
    if (kind == 'u' && dt.itemsize() == 2) return DType::u16;
    if (kind == 'f' && dt.itemsize() == 2) return DType::f16;
    if (kind == 'f' && dt.itemsize() == 4) return DType::f32;
    return std::nullopt;
}

void require_dtype(const py::array& a, const char* what, std::initializer_list<DType> allowed) {
    const std::optional<DType> d = known_dtype(a, what);
    if (d && std::find(allowed.begin(), allowed.end(), *d) != allowed.end()) return;
    std::string names;
    size_t i = 0;
    for (DType x : allowed) {
        if (i > 0) names += i + 1 == allowed.size() ? " or " : ", ";
        names += dtype_name(x);
        ++i;
    }
    fail(cat(what, " dtype must be ", names, ", got ", std::string(py::str(a.dtype()))));
}

DType array_dtype(const py::array& a, const char* what, std::initializer_list<DType> allowed) {
    require_dtype(a, what, allowed);
    return *known_dtype(a, what);
}

std::vector<int64_t> array_shape(const py::array& a) {
    return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

void require_output(const py::array& a, const char* what) {
    if (!a.writeable()) fail(cat(what, " is read-only; pass a writeable array"));
    if (!(a.flags() & py::array::c_style))
        fail(cat(what, " must be C-contiguous; allocate it with np.empty(...) or use np.ascontiguousarray"));
}

void require_contiguous(const py::array& a, const char* what) {
    if (!(a.flags() & py::array::c_style))
        fail(cat(what, " must be C-contiguous; pass np.ascontiguousarray(", what, ")"));
}

void require_shape(const std::vector<int64_t>& got, const std::vector<int64_t>& want, const char* what) {
    if (got != want) fail(cat(what, " must have shape ", shape_text(want), ", got ", shape_text(got)));
}

int resolve_threads(int threads) {
    if (threads < 0) fail(cat("threads must be >= 0 (0 = one per core), got ", threads));
    if (threads > 0) return std::min(threads, 256);
    const unsigned cores = std::thread::hardware_concurrency();
    return static_cast<int>(std::clamp(cores, 1u, 16u));
}

void check_range(int64_t v, const char* what) {
    if (v < -kMaxCoordinate || v > kMaxCoordinate) fail(cat(what, " ", v, " is out of range (|value| <= 2^31)"));
}

// The grid must be well formed, every tile of [first, first + count) must exist, and each tile must overlap
// the image (a tile wholly outside it means a planning error, not something to mirror).
unetrt::Grid make_grid(Pair origin, Pair step, Pair grid, int64_t first, int64_t count, int64_t tile_h,
                       int64_t tile_w, int64_t height, int64_t width) {
    for (int64_t v : origin) check_range(v, "origin");
    for (int64_t v : step) {
        check_range(v, "step");
        if (v < 1) fail(cat("step must be >= 1 in both axes, got (", step[0], ", ", step[1], ")"));
    }
    for (int64_t v : grid) {
        check_range(v, "grid");
        if (v < 1) fail(cat("grid must have >= 1 tile row and column, got (", grid[0], ", ", grid[1], ")"));
    }
    if (tile_h < 1 || tile_w < 1 || tile_h > kMaxCoordinate || tile_w > kMaxCoordinate)
        fail(cat("tile size must be positive, got ", tile_h, " x ", tile_w));
    const int64_t total = grid[0] * grid[1];
    if (first < 0 || count < 1 || first + count > total)
        fail(cat("tiles ", first, "..", first + count - 1, " are out of range: the grid ", grid[0], " x ", grid[1],
                 " has tiles 0..", total - 1));
    const int64_t sizes[2] = {tile_h, tile_w};
    const int64_t extent[2] = {height, width};
    const char* axis[2] = {"rows", "columns"};
    for (int i = 0; i < 2; ++i) {
        const int64_t last = origin[i] + (grid[i] - 1) * step[i];
        check_range(last, "last tile origin");
        if (origin[i] + sizes[i] <= 0 || last >= extent[i])
            fail(cat("the grid reaches outside the image: tile ", axis[i], " span [", origin[i], ", ",
                     last + sizes[i], ") with step ", step[i], " but the image has ", extent[i], " ", axis[i],
                     "; every tile must overlap the image"));
    }
    return unetrt::Grid{origin[0], origin[1], step[0], step[1], grid[0], grid[1], first, count};
}

// Stitching also needs every image pixel covered and no gaps between tiles.
void check_coverage(const unetrt::Grid& g, int64_t tile_h, int64_t tile_w, int64_t height, int64_t width) {
    const int64_t origin[2] = {g.origin_y, g.origin_x};
    const int64_t step[2] = {g.step_y, g.step_x};
    const int64_t count[2] = {g.rows, g.cols};
    const int64_t tile[2] = {tile_h, tile_w};
    const int64_t extent[2] = {height, width};
    const char* axis[2] = {"rows", "columns"};
    for (int i = 0; i < 2; ++i) {
        if (count[i] > 1 && step[i] > tile[i])
            fail(cat("step ", step[i], " is larger than the output tile (", tile[i], ") along ", axis[i],
                     ": pixels between tiles would have no value"));
        if (origin[i] > 0 || origin[i] + (count[i] - 1) * step[i] + tile[i] < extent[i])
            fail(cat("the grid does not cover the image ", axis[i], ": tiles span [", origin[i], ", ",
                     origin[i] + (count[i] - 1) * step[i] + tile[i], ") but the image has ", extent[i], " ",
                     axis[i]));
    }
}

struct Normalisation {
    std::vector<float> mul, add;
};

Normalisation make_normalisation(int64_t channels, double scale, const std::optional<std::vector<double>>& mean,
                                 const std::optional<std::vector<double>>& std_dev) {
    const std::vector<double> m = mean.value_or(std::vector<double>(static_cast<size_t>(channels), 0.0));
    const std::vector<double> s = std_dev.value_or(std::vector<double>(static_cast<size_t>(channels), 1.0));
    if (static_cast<int64_t>(m.size()) != channels || static_cast<int64_t>(s.size()) != channels)
        fail(cat("mean and std need one value per channel (", channels, "), got ", m.size(), " and ", s.size()));
    if (!std::isfinite(scale)) fail(cat("scale must be finite, got ", scale));
    Normalisation n;
    for (size_t c = 0; c < m.size(); ++c) {
        if (!(s[c] > 0.0) || !std::isfinite(s[c]) || !std::isfinite(m[c]))
            fail(cat("std values must be positive and mean values finite, got std[", c, "] = ", s[c], ", mean[",
                     c, "] = ", m[c]));
        // Computed in double and rounded once, as numpy's float32(scale / std) and float32(-mean / std).
        n.mul.push_back(static_cast<float>(scale / s[c]));
        n.add.push_back(static_cast<float>(-m[c] / s[c]));
    }
    return n;
}

unetrt::ExtractParams make_extract_params(const unetrt::ImageView& image, int64_t out_channels, int64_t tile_h,
                                          int64_t tile_w, const unetrt::Grid& grid, bool swap_rb, double scale,
                                          const std::optional<std::vector<double>>& mean,
                                          const std::optional<std::vector<double>>& std_dev) {
    if (image.channels < 1 || image.channels > unetrt::kMaxChannels)
        fail(cat("image must have 1 to ", unetrt::kMaxChannels, " channels, got ", image.channels));
    // A gray image fills every channel of out (a colour model's input): replicated in the kernel, so a gray frame
    // is read (and uploaded) as one channel. A colour image fills a 1-channel out (a 1-channel model's input) with
    // its gray value, computed in the kernel, so a colour frame is resized and uploaded as it is.
    const bool replicate = image.channels == 1;
    const bool to_gray = image.channels >= 3 && out_channels == 1;
    if (out_channels != image.channels && !(replicate && out_channels <= unetrt::kMaxChannels) && !to_gray)
        fail(cat("out has ", out_channels, " channels but the image has ", image.channels,
                 " (a 1-channel image fills any number of channels up to ", unetrt::kMaxChannels,
                 ", an image of 3 or 4 channels fills 1 channel with its gray value)"));
    if (swap_rb && image.channels < 3)
        fail(cat("swap_rb swaps the first and third channel; the image has only ", image.channels));
    const Normalisation norm = make_normalisation(out_channels, scale, mean, std_dev);
    unetrt::ExtractParams p{};
    p.grid = grid;
    p.tile_h = tile_h;
    p.tile_w = tile_w;
    p.channels = static_cast<int>(out_channels);
    p.gray = to_gray;
    // The image's channel for each output channel (the model's R, G, B, ...); for the gray value, its R, G and B.
    const int mapped = to_gray ? 3 : p.channels;
    for (int c = 0; c < mapped; ++c) p.src_channel[c] = replicate ? 0 : ((swap_rb && c < 3) ? 2 - c : c);
    for (int c = 0; c < p.channels; ++c) {
        p.mul[c] = norm.mul[static_cast<size_t>(c)];
        p.add[c] = norm.add[static_cast<size_t>(c)];
    }
    return p;
}

unetrt::StitchMode parse_mode(const std::string& mode) {
    if (mode == "crop") return unetrt::StitchMode::crop;
    if (mode == "blend") return unetrt::StitchMode::blend;
    fail(cat("mode must be 'crop' or 'blend', got '", mode, "'"));
}

// A CUDA launch covers at most kMaxLaunchRows image rows (gridDim.y <= 65535 blocks of 8 rows).
void require_launch_rows(int64_t rows, const char* what) {
    if (rows > unetrt::kMaxLaunchRows)
        fail(cat(what, " of ", rows, " rows needs more than 65535 thread blocks down; the CUDA kernels take at most ",
                 unetrt::kMaxLaunchRows, " rows per call: split it"));
}

int64_t stitch_rows(const unetrt::StitchParams& p) {
    int64_t y_begin, y_end;
    unetrt::stitch_band(p, &y_begin, &y_end);
    return y_end - y_begin;
}

// The kernels behind the numpy functions: the CPU kernels, or in the emulated module the CUDA launchers, checked
// against the launch limits as the *_cuda entry points are.
#if defined(UNETRT_EMULATED_CUDA)
constexpr bool kEmulated = true;

void check_emulated(int err, const char* what) {
    if (err != 0) throw std::runtime_error(cat(what, ": the emulated launch failed with cudaError ", err));
}

void run_extract(const unetrt::ImageView& image, void* out, DType out_dtype, const unetrt::ExtractParams& p, int) {
    check_emulated(unetrt::extract_tiles_cuda(image, out, out_dtype, p, nullptr), "extract_tiles");
}
void run_stitch(const void* tiles, float* acc, float* weight, const unetrt::StitchParams& p, int) {
    check_emulated(unetrt::stitch_tiles_cuda(tiles, acc, weight, p, nullptr), "stitch_tiles");
}
// The finishes count into a counter of their own, as the GPU path's device counter.
int64_t run_finish(float* acc, const float* weight, uint8_t* mask, const unetrt::FinishParams& p, int) {
    unsigned long long nonfinite = 0;
    check_emulated(unetrt::finish_cuda(acc, weight, mask, p, &nonfinite, nullptr), "finish");
    return static_cast<int64_t>(nonfinite);
}
int64_t run_finish_resized(const void* scores, const float* weight, uint8_t* mask, float* probabilities,
                           const unetrt::FinishResizedParams& p, int) {
    unsigned long long nonfinite = 0;
    check_emulated(unetrt::finish_resized_cuda(scores, weight, mask, probabilities, p, &nonfinite, nullptr),
                   "finish_resized");
    return static_cast<int64_t>(nonfinite);
}
void run_resize(const void* in, void* out, const unetrt::ResizeParams& p, int, unetrt::CpuLoops) {
    check_emulated(unetrt::resize_bilinear_cuda(in, out, p, nullptr), "resize_bilinear");
}
#else
constexpr bool kEmulated = false;

void run_extract(const unetrt::ImageView& image, void* out, DType out_dtype, const unetrt::ExtractParams& p,
                 int threads) {
    unetrt::extract_tiles_cpu(image, out, out_dtype, p, threads);
}
void run_stitch(const void* tiles, float* acc, float* weight, const unetrt::StitchParams& p, int threads) {
    unetrt::stitch_tiles_cpu(tiles, acc, weight, p, threads);
}
int64_t run_finish(float* acc, const float* weight, uint8_t* mask, const unetrt::FinishParams& p, int threads) {
    return unetrt::finish_cpu(acc, weight, mask, p, threads);
}
int64_t run_finish_resized(const void* scores, const float* weight, uint8_t* mask, float* probabilities,
                           const unetrt::FinishResizedParams& p, int threads) {
    return unetrt::finish_resized_cpu(scores, weight, mask, probabilities, p, threads);
}
void run_resize(const void* in, void* out, const unetrt::ResizeParams& p, int threads, unetrt::CpuLoops loops) {
    unetrt::resize_bilinear_cpu(in, out, p, threads, loops);
}
#endif

// ---------------------------------------------------------------- CPU entry points (numpy arrays)

unetrt::ImageView image_view(const py::array& image) {
    const DType dtype = array_dtype(image, "image", {DType::u8, DType::u16, DType::f32});
    if (image.ndim() != 2 && image.ndim() != 3)
        fail(cat("image must be H x W or H x W x C, got shape ", shape_text(array_shape(image))));
    unetrt::ImageView v{};
    v.data = image.data();
    v.dtype = dtype;
    v.height = image.shape(0);
    v.width = image.shape(1);
    v.channels = image.ndim() == 3 ? image.shape(2) : 1;
    if (v.height < 1 || v.width < 1) fail(cat("image is empty, shape ", shape_text(array_shape(image))));
    const int64_t size = itemsize(dtype);
    int64_t strides[3] = {image.strides(0), image.strides(1), image.ndim() == 3 ? image.strides(2) : size};
    for (int64_t s : strides)
        if (s % size != 0) fail(cat("image strides must be multiples of the item size (", size, " bytes)"));
    v.stride_y = strides[0] / size;
    v.stride_x = strides[1] / size;
    v.stride_c = strides[2] / size;
    return v;
}

py::array extract_tiles(const py::array& image, py::array out, Pair origin, Pair step, Pair grid, int64_t first,
                        bool swap_rb, double scale, std::optional<std::vector<double>> mean,
                        std::optional<std::vector<double>> std_dev, int threads) {
    const unetrt::ImageView view = image_view(image);
    require_dtype(out, "out", {DType::f32, DType::f16});
    require_output(out, "out");
    if (out.ndim() != 4) fail(cat("out must be N x C x tile_h x tile_w, got shape ", shape_text(array_shape(out))));
    const DType out_dtype = array_dtype(out, "out", {DType::f32, DType::f16});
    const unetrt::Grid g =
        make_grid(origin, step, grid, first, out.shape(0), out.shape(2), out.shape(3), view.height, view.width);
    const unetrt::ExtractParams p =
        make_extract_params(view, out.shape(1), out.shape(2), out.shape(3), g, swap_rb, scale, mean, std_dev);
    if (kEmulated) require_launch_rows(p.tile_h, "a tile");
    const int n_threads = resolve_threads(threads);
    void* data = out.mutable_data();
    {
        py::gil_scoped_release release;
        run_extract(view, data, out_dtype, p, n_threads);
    }
    return out;
}

unetrt::StitchParams make_stitch_params(DType tile_dtype, const std::vector<int64_t>& tiles_shape,
                                        const std::vector<int64_t>& acc_shape, const unetrt::Grid& g,
                                        const std::string& mode) {
    unetrt::StitchParams p{};
    p.grid = g;
    p.tile_h = tiles_shape[2];
    p.tile_w = tiles_shape[3];
    p.classes = tiles_shape[1];
    p.height = acc_shape[1];
    p.width = acc_shape[2];
    p.mode = parse_mode(mode);
    p.tile_dtype = tile_dtype;
    check_coverage(g, p.tile_h, p.tile_w, p.height, p.width);
    return p;
}

void check_stitch_shapes(const std::vector<int64_t>& tiles_shape, const std::vector<int64_t>& acc_shape) {
    if (tiles_shape.size() != 4)
        fail(cat("tiles must be N x K x out_h x out_w, got shape ", shape_text(tiles_shape)));
    if (acc_shape.size() != 3) fail(cat("acc must be K x H x W, got shape ", shape_text(acc_shape)));
    if (tiles_shape[1] != acc_shape[0])
        fail(cat("tiles have ", tiles_shape[1], " classes but acc has ", acc_shape[0]));
    for (int64_t v : tiles_shape)
        if (v < 1) fail(cat("tiles must not be empty, got shape ", shape_text(tiles_shape)));
    for (int64_t v : acc_shape)
        if (v < 1) fail(cat("acc must not be empty, got shape ", shape_text(acc_shape)));
}

void stitch_tiles(const py::array& tiles, py::array acc, std::optional<py::array> weight, Pair origin, Pair step,
                  Pair grid, int64_t first, const std::string& mode, std::optional<py::array> window_y,
                  std::optional<py::array> window_x, int threads) {
    require_dtype(tiles, "tiles", {DType::f32, DType::f16});
    require_contiguous(tiles, "tiles");
    require_dtype(acc, "acc", {DType::f32});
    require_output(acc, "acc");
    const auto tiles_shape = array_shape(tiles);
    const auto acc_shape = array_shape(acc);
    check_stitch_shapes(tiles_shape, acc_shape);
    const unetrt::Grid g = make_grid(origin, step, grid, first, tiles_shape[0], tiles_shape[2], tiles_shape[3],
                                     acc_shape[1], acc_shape[2]);
    unetrt::StitchParams p = make_stitch_params(array_dtype(tiles, "tiles", {DType::f32, DType::f16}), tiles_shape, acc_shape, g, mode);
    float* weight_data = nullptr;
    if (p.mode == unetrt::StitchMode::blend) {
        if (!weight || !window_y || !window_x) fail("mode 'blend' needs weight, window_y and window_x");
        require_dtype(*weight, "weight", {DType::f32});
        require_output(*weight, "weight");
        require_shape(array_shape(*weight), {p.height, p.width}, "weight");
        const std::pair<std::optional<py::array>*, int64_t> windows[2] = {{&window_y, p.tile_h}, {&window_x, p.tile_w}};
        const char* names[2] = {"window_y", "window_x"};
        for (int i = 0; i < 2; ++i) {
            const py::array& w = **windows[i].first;
            require_dtype(w, names[i], {DType::f32});
            require_contiguous(w, names[i]);
            require_shape(array_shape(w), {windows[i].second}, names[i]);
        }
        p.window_y = static_cast<const float*>(window_y->data());
        p.window_x = static_cast<const float*>(window_x->data());
        weight_data = static_cast<float*>(weight->mutable_data());
    }
    if (kEmulated) require_launch_rows(stitch_rows(p), "a band of tiles");
    const int n_threads = resolve_threads(threads);
    const void* tile_data = tiles.data();
    float* acc_data = static_cast<float*>(acc.mutable_data());
    py::gil_scoped_release release;
    run_stitch(tile_data, acc_data, weight_data, p, n_threads);
}

unetrt::FinishParams make_finish_params(const std::vector<int64_t>& acc_shape, bool has_weight, bool has_mask,
                                        bool binary, double threshold, bool write_logits) {
    if (acc_shape.size() != 3) fail(cat("acc must be K x H x W, got shape ", shape_text(acc_shape)));
    for (int64_t v : acc_shape)
        if (v < 1) fail(cat("acc must not be empty, got shape ", shape_text(acc_shape)));
    if (binary && acc_shape[0] != 1) fail(cat("binary models have 1 output channel, acc has ", acc_shape[0]));
    if (!binary && acc_shape[0] > 256) fail(cat("a uint8 mask holds at most 256 classes, acc has ", acc_shape[0]));
    if (!has_mask && !(has_weight && write_logits))
        fail("finish has nothing to do: pass mask, or weight with write_logits=True");
    if (write_logits && !has_weight) fail("write_logits=True needs weight (it stores acc / weight)");
    if (!std::isfinite(threshold)) fail(cat("threshold must be finite, got ", threshold));
    unetrt::FinishParams p{};
    p.classes = acc_shape[0];
    p.height = acc_shape[1];
    p.width = acc_shape[2];
    p.normalize = has_weight;
    p.write_logits = write_logits;
    p.binary = binary;
    p.threshold = static_cast<float>(threshold);
    return p;
}

int64_t finish(py::array acc, std::optional<py::array> weight, std::optional<py::array> mask, bool binary,
               double threshold, bool write_logits, int threads) {
    require_dtype(acc, "acc", {DType::f32});
    require_output(acc, "acc");
    const auto acc_shape = array_shape(acc);
    const unetrt::FinishParams p =
        make_finish_params(acc_shape, weight.has_value(), mask.has_value(), binary, threshold, write_logits);
    const float* weight_data = nullptr;
    uint8_t* mask_data = nullptr;
    if (weight) {
        require_dtype(*weight, "weight", {DType::f32});
        require_contiguous(*weight, "weight");
        require_shape(array_shape(*weight), {p.height, p.width}, "weight");
        weight_data = static_cast<const float*>(weight->data());
    }
    if (mask) {
        require_dtype(*mask, "mask", {DType::u8});
        require_output(*mask, "mask");
        require_shape(array_shape(*mask), {p.height, p.width}, "mask");
        mask_data = static_cast<uint8_t*>(mask->mutable_data());
    }
    const int n_threads = resolve_threads(threads);
    float* acc_data = static_cast<float*>(acc.mutable_data());
    py::gil_scoped_release release;
    return run_finish(acc_data, weight_data, mask_data, p, n_threads);
}

// ---------------------------------------------------------------- resized finish and working-size resize

using Rect = std::array<int64_t, 4>;

void check_resize_side(int64_t v, const char* what) {
    if (v < 1 || v > unetrt::kMaxResizeSide)
        fail(cat(what, " must be 1 to ", unetrt::kMaxResizeSide, " px, got ", v));
}

// Checks the shapes and options of finish_resized (both builds) and fills the kernel parameters.
unetrt::FinishResizedParams make_finish_resized_params(const std::vector<int64_t>& scores_shape, DType score_dtype,
                                                       Pair out_hw, const Rect& rect, bool binary, double threshold) {
    if (score_dtype != DType::f32 && score_dtype != DType::f16)
        fail(cat("scores dtype must be float32 or float16, got ", dtype_name(score_dtype)));
    if (scores_shape.size() != 3) fail(cat("scores must be K x H x W, got shape ", shape_text(scores_shape)));
    for (int64_t v : scores_shape)
        if (v < 1 || v > kMaxCoordinate) fail(cat("scores must not be empty, got shape ", shape_text(scores_shape)));
    const int64_t classes = scores_shape[0];
    if (binary && classes != 1) fail(cat("binary models have 1 output channel, scores have ", classes));
    if (!binary && classes > 256) fail(cat("a uint8 mask holds at most 256 classes, scores have ", classes));
    if (!std::isfinite(threshold)) fail(cat("threshold must be finite, got ", threshold));
    const auto [ry, rx, rh, rw] = rect;
    if (rh < 1 || rw < 1 || ry < 0 || rx < 0 || ry > scores_shape[1] - rh || rx > scores_shape[2] - rw)
        fail(cat("rect (y0, x0, h, w) = (", ry, ", ", rx, ", ", rh, ", ", rw, ") must be non-empty and lie inside ",
                 "the ", scores_shape[1], " x ", scores_shape[2], " scores"));
    check_resize_side(out_hw[0], "output height");
    check_resize_side(out_hw[1], "output width");
    if (rh > unetrt::kMaxResizeSide || rw > unetrt::kMaxResizeSide)
        fail(cat("rect sides must be at most ", unetrt::kMaxResizeSide, " px, got ", rh, " x ", rw));
    unetrt::FinishResizedParams p{};
    p.classes = classes;
    p.src_h = scores_shape[1];
    p.src_w = scores_shape[2];
    p.rect_y = ry;
    p.rect_x = rx;
    p.rect_h = rh;
    p.rect_w = rw;
    p.out_h = out_hw[0];
    p.out_w = out_hw[1];
    p.score_dtype = score_dtype;
    p.binary = binary;
    p.threshold = static_cast<float>(threshold);
    p.scale_y = static_cast<float>(rh) / static_cast<float>(out_hw[0]);
    p.scale_x = static_cast<float>(rw) / static_cast<float>(out_hw[1]);
    return p;
}

int64_t finish_resized(const py::array& scores, std::optional<py::array> mask, const Rect& rect,
                       std::optional<py::array> weight, bool binary, double threshold,
                       std::optional<py::array> probabilities, int threads) {
    const DType score_dtype = array_dtype(scores, "scores", {DType::f32, DType::f16});
    require_contiguous(scores, "scores");
    const auto scores_shape = array_shape(scores);
    if (!mask && !probabilities) fail("finish_resized has nothing to do: pass mask, probabilities or both");
    Pair out_hw{};
    if (mask) {
        require_dtype(*mask, "mask", {DType::u8});
        require_output(*mask, "mask");
        if (mask->ndim() != 2) fail(cat("mask must be H x W, got shape ", shape_text(array_shape(*mask))));
        out_hw = {mask->shape(0), mask->shape(1)};
    } else {
        if (probabilities->ndim() != 3)
            fail(cat("probabilities must be K x H x W, got shape ", shape_text(array_shape(*probabilities))));
        out_hw = {probabilities->shape(1), probabilities->shape(2)};
    }
    const unetrt::FinishResizedParams p =
        make_finish_resized_params(scores_shape, score_dtype, out_hw, rect, binary, threshold);
    const float* weight_data = nullptr;
    if (weight) {
        require_dtype(*weight, "weight", {DType::f32});
        require_contiguous(*weight, "weight");
        require_shape(array_shape(*weight), {p.src_h, p.src_w}, "weight");
        weight_data = static_cast<const float*>(weight->data());
    }
    float* probability_data = nullptr;
    if (probabilities) {
        require_dtype(*probabilities, "probabilities", {DType::f32});
        require_output(*probabilities, "probabilities");
        require_shape(array_shape(*probabilities), {p.classes, p.out_h, p.out_w}, "probabilities");
        probability_data = static_cast<float*>(probabilities->mutable_data());
    }
    uint8_t* mask_data = mask ? static_cast<uint8_t*>(mask->mutable_data()) : nullptr;
    if (kEmulated) require_launch_rows(p.out_h, "an output");
    const int n_threads = resolve_threads(threads);
    const void* score_data = scores.data();
    py::gil_scoped_release release;
    return run_finish_resized(score_data, weight_data, mask_data, probability_data, p, n_threads);
}

// Checks the shapes and dtype of resize_bilinear (both builds): image H x W x C, out h x w x C with C <= 4, uint8,
// uint16 or float32.
unetrt::ResizeParams make_resize_params(const std::vector<int64_t>& image_shape, DType dtype, Pair out_hw) {
    if (dtype != DType::u8 && dtype != DType::u16 && dtype != DType::f32)
        fail(cat("image dtype must be uint8, uint16 or float32, got ", dtype_name(dtype),
                 " (convert float64 frames to float32 first)"));
    if (image_shape.size() != 3)
        fail(cat("image must be H x W or H x W x C, got shape ", shape_text(image_shape)));
    check_resize_side(image_shape[0], "image height");
    check_resize_side(image_shape[1], "image width");
    check_resize_side(out_hw[0], "output height");
    check_resize_side(out_hw[1], "output width");
    if (image_shape[2] < 1 || image_shape[2] > unetrt::kMaxChannels)
        fail(cat("image must have 1 to ", unetrt::kMaxChannels, " channels, got ", image_shape[2]));
    unetrt::ResizeParams p{};
    p.src_h = image_shape[0];
    p.src_w = image_shape[1];
    p.channels = image_shape[2];
    p.dtype = dtype;
    p.out_h = out_hw[0];
    p.out_w = out_hw[1];
    p.scale_y = static_cast<float>(p.src_h) / static_cast<float>(p.out_h);
    p.scale_x = static_cast<float>(p.src_w) / static_cast<float>(p.out_w);
    return p;
}

// The working-size resize on numpy arrays: the host path's (unetrt.device.resize_frame), with the arithmetic of the
// GPU path's resize_bilinear_cuda, so both paths feed the network one image whatever the frame's dtype. `loops`
// picks the CPU build's row loops (the emulated build has one kernel).
py::array resize_bilinear_using(const py::array& image, py::array out, int threads, unetrt::CpuLoops loops) {
    const DType dtype = array_dtype(image, "image", {DType::u8, DType::u16, DType::f32});
    require_contiguous(image, "image");
    if (array_dtype(out, "out", {DType::u8, DType::u16, DType::f32}) != dtype)
        fail(cat("out dtype must be the image's (", dtype_name(dtype), "), got ", std::string(py::str(out.dtype()))));
    require_output(out, "out");
    if (image.ndim() != 2 && image.ndim() != 3)
        fail(cat("image must be H x W or H x W x C, got shape ", shape_text(array_shape(image))));
    std::vector<int64_t> shape = array_shape(image);
    if (shape.size() == 2) shape.push_back(1);
    if (out.ndim() != image.ndim())
        fail(cat("out must have as many dimensions as the image (", image.ndim(), "), got shape ",
                 shape_text(array_shape(out))));
    const unetrt::ResizeParams p = make_resize_params(shape, dtype, {out.shape(0), out.shape(1)});
    if (out.ndim() == 3) require_shape(array_shape(out), {p.out_h, p.out_w, p.channels}, "out");
    if (kEmulated) require_launch_rows(p.out_h, "an output");
    const int n_threads = resolve_threads(threads);
    const void* in_data = image.data();
    void* out_data = out.mutable_data();
    {
        py::gil_scoped_release release;
        run_resize(in_data, out_data, p, n_threads, loops);
    }
    return out;
}

py::array resize_bilinear(const py::array& image, py::array out, int threads) {
    return resize_bilinear_using(image, out, threads, unetrt::CpuLoops::best);
}

#if !defined(UNETRT_EMULATED_CUDA)
// The CPU row loops of resize_bilinear by name, those this CPU runs: the portable ones first, then (on x86 with
// AVX2) the ones resize_bilinear picks.
const std::array<std::pair<const char*, unetrt::CpuLoops>, 2> kResizeVariants = {
    {{"portable", unetrt::CpuLoops::portable}, {"avx2", unetrt::CpuLoops::avx2}}};

std::vector<std::string> resize_variants() {
    std::vector<std::string> names;
    for (const auto& [name, loops] : kResizeVariants)
        if (unetrt::cpu_loops_available(loops)) names.emplace_back(name);
    return names;
}

py::array resize_bilinear_variant(const py::array& image, py::array out, const std::string& variant, int threads) {
    for (const auto& [name, loops] : kResizeVariants)
        if (variant == name && unetrt::cpu_loops_available(loops))
            return resize_bilinear_using(image, out, threads, loops);
    std::string names;
    for (const std::string& name : resize_variants()) names += (names.empty() ? "" : ", ") + name;
    fail(cat("variant must be one this CPU runs (", names, "), got '", variant, "'"));
}
#endif

// ---------------------------------------------------------------- CUDA entry points (device pointers)
// In the emulated module, device pointers are host addresses (the tests' fake GPU memory) and the launchers run the
// emulated kernels at once; the argument checks and the stream plumbing are the CUDA build's.

DType parse_dtype_name(const std::string& name, const char* what) {
    if (name == "uint8") return DType::u8;
    if (name == "uint16") return DType::u16;
    if (name == "float16") return DType::f16;
    if (name == "float32") return DType::f32;
    fail(cat(what, " dtype must be 'uint8', 'uint16', 'float16' or 'float32', got '", name, "'"));
}


void check_pointer_alignment(uintptr_t ptr, int64_t align, const char* what) {
    if (ptr == 0) fail(cat(what, " is a null pointer"));
    if (ptr % static_cast<uintptr_t>(align) != 0)
        fail(cat(what, " must be aligned to ", align, " bytes, got address ", ptr));
}

// cudaMemoryType (driver_types.h).
constexpr int kMemoryTypeHost = 1;
constexpr int kMemoryTypeDevice = 2;
constexpr int kMemoryTypeManaged = 3;

// Whether a kernel may read and write ``ptr``, from what cudaPointerGetAttributes says of it: device and managed
// memory, and page-locked host memory the device reaches at that very address ("devicePointer: The address which
// may be dereferenced on the current device to access the memory or NULL if no such address exists",
// cudaPointerAttributes) - the mapped frames of an integrated GPU (Jetson), which cudaPointerGetAttributes calls
// cudaMemoryTypeHost ("for registered host memory").
void check_kernel_pointer(int type, uintptr_t device_pointer, uintptr_t ptr, const char* what) {
    const bool memory = type == kMemoryTypeDevice || type == kMemoryTypeManaged || type == kMemoryTypeHost;
    if (!memory || device_pointer != ptr)
        fail(cat(what, " is not memory the GPU reads at that address; pass device memory (cudaMalloc, torch.cuda, "
                       "CuPy, pycuda) or page-locked host memory mapped into the device"));
}

#if defined(UNETRT_WITH_CUDA)
constexpr bool kCudaBuilt = true;

[[noreturn]] void cuda_fail(cudaError_t err, const char* what) {
    throw std::runtime_error(cat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"));
}

int cuda_device_count() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky-free error so later calls report their own
        return 0;
    }
    return count;
}

void require_device() {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        cudaGetLastError();
        throw std::runtime_error(cat("no usable CUDA device: ", cudaGetErrorName(err), " (",
                                     cudaGetErrorString(err), "); use the CPU functions (extract_tiles, ...)"));
    }
    if (count == 0) throw std::runtime_error("no CUDA device found; use the CPU functions (extract_tiles, ...)");
}

void require_device_pointer(uintptr_t ptr, int64_t align, const char* what) {
    check_pointer_alignment(ptr, align, what);
    cudaPointerAttributes attributes{};
    const cudaError_t err = cudaPointerGetAttributes(&attributes, reinterpret_cast<const void*>(ptr));
    if (err != cudaSuccess) {
        cudaGetLastError();
        fail(cat(what, " is not a CUDA pointer (", cudaGetErrorString(err), ")"));
    }
    check_kernel_pointer(static_cast<int>(attributes.type), reinterpret_cast<uintptr_t>(attributes.devicePointer),
                         ptr, what);
}

void check_launch(int err, const char* what) {
    if (err != 0) cuda_fail(static_cast<cudaError_t>(err), what);
}
#elif defined(UNETRT_EMULATED_CUDA)
void require_device() {}

// The tests' stand-in for cudaPointerGetAttributes: a callable(ptr) -> (cudaMemoryType, devicePointer) over the fake
// GPU's memory (set_pointer_attributes); None (the default) takes every pointer for device memory.
py::object& pointer_attributes() {
    static py::object* attributes = new py::object(py::none());  // never destroyed: no Python calls at exit
    return *attributes;
}

void set_pointer_attributes(py::object attributes) { pointer_attributes() = std::move(attributes); }

void require_device_pointer(uintptr_t ptr, int64_t align, const char* what) {
    check_pointer_alignment(ptr, align, what);
    if (pointer_attributes().is_none()) return;
    const auto [type, device_pointer] = pointer_attributes()(ptr).cast<std::pair<int, uintptr_t>>();
    check_kernel_pointer(type, device_pointer, ptr, what);
}

void check_launch(int err, const char* what) {
    if (err != 0) throw std::runtime_error(cat(what, ": the emulated launch failed with cudaError ", err));
}
#else
constexpr bool kCudaBuilt = false;

int cuda_device_count() { return 0; }

[[noreturn]] void require_device() {
    throw std::runtime_error(
        "unetrt._tiling was built without CUDA; reinstall on a machine with nvcc (UNETRT_CUDA=1 pip install .) "
        "or use the CPU functions (extract_tiles, ...)");
}

void require_device_pointer(uintptr_t, int64_t, const char*) {}
void check_launch(int, const char*) {}
#endif

void extract_tiles_cuda(uintptr_t image_ptr, Pair image_hw, int64_t channels, std::array<int64_t, 3> image_strides,
                        const std::string& image_dtype, uintptr_t out_ptr, std::array<int64_t, 4> out_shape,
                        const std::string& out_dtype, Pair origin, Pair step, Pair grid, int64_t first, bool swap_rb,
                        double scale, std::optional<std::vector<double>> mean,
                        std::optional<std::vector<double>> std_dev, uintptr_t stream) {
    unetrt::ImageView view{};
    view.dtype = parse_dtype_name(image_dtype, "image");
    if (view.dtype == DType::f16) fail("image dtype must be uint8, uint16 or float32, got float16");
    const DType out_type = parse_dtype_name(out_dtype, "out");
    if (out_type == DType::u8 || out_type == DType::u16)
        fail(cat("out dtype must be float32 or float16, got ", dtype_name(out_type)));
    view.height = image_hw[0];
    view.width = image_hw[1];
    view.channels = channels;
    if (view.height < 1 || view.width < 1 || view.height > kMaxCoordinate || view.width > kMaxCoordinate)
        fail(cat("image must be at least 1 x 1, got ", view.height, " x ", view.width));
    const int64_t size = itemsize(view.dtype);
    for (int64_t s : image_strides) {
        check_range(s, "image stride");
        if (s % size != 0) fail(cat("image strides must be multiples of the item size (", size, " bytes)"));
    }
    view.stride_y = image_strides[0] / size;
    view.stride_x = image_strides[1] / size;
    view.stride_c = image_strides[2] / size;
    for (int64_t v : out_shape)
        if (v < 1) fail(cat("out shape must be positive, got ", shape_text({out_shape.begin(), out_shape.end()})));
    if (out_shape[0] > 65535) fail(cat("at most 65535 tiles per call, got ", out_shape[0], "; split the batch"));
    const unetrt::Grid g =
        make_grid(origin, step, grid, first, out_shape[0], out_shape[2], out_shape[3], view.height, view.width);
    const unetrt::ExtractParams p =
        make_extract_params(view, out_shape[1], out_shape[2], out_shape[3], g, swap_rb, scale, mean, std_dev);
    require_launch_rows(p.tile_h, "a tile");
    require_device();
    require_device_pointer(image_ptr, size, "image_ptr");
    require_device_pointer(out_ptr, itemsize(out_type), "out_ptr");
    view.data = reinterpret_cast<const void*>(image_ptr);
    py::gil_scoped_release release;
    check_launch(unetrt::extract_tiles_cuda(view, reinterpret_cast<void*>(out_ptr), out_type, p,
                                            reinterpret_cast<void*>(stream)),
                 "extract_tiles_cuda launch failed");
}

void stitch_tiles_cuda(uintptr_t tiles_ptr, std::array<int64_t, 4> tiles_shape, const std::string& tiles_dtype,
                       uintptr_t acc_ptr, std::array<int64_t, 3> acc_shape, uintptr_t weight_ptr, Pair origin,
                       Pair step, Pair grid, int64_t first, const std::string& mode, uintptr_t window_y_ptr,
                       uintptr_t window_x_ptr, uintptr_t stream) {
    const DType tile_type = parse_dtype_name(tiles_dtype, "tiles");
    if (tile_type == DType::u8 || tile_type == DType::u16)
        fail(cat("tiles dtype must be float32 or float16, got ", dtype_name(tile_type)));
    const std::vector<int64_t> ts(tiles_shape.begin(), tiles_shape.end());
    const std::vector<int64_t> as(acc_shape.begin(), acc_shape.end());
    check_stitch_shapes(ts, as);
    const unetrt::Grid g = make_grid(origin, step, grid, first, ts[0], ts[2], ts[3], as[1], as[2]);
    unetrt::StitchParams p = make_stitch_params(tile_type, ts, as, g, mode);
    if (p.mode == unetrt::StitchMode::blend && (weight_ptr == 0 || window_y_ptr == 0 || window_x_ptr == 0))
        fail("mode 'blend' needs weight_ptr, window_y_ptr and window_x_ptr");
    require_launch_rows(stitch_rows(p), "a band of tiles");
    require_device();
    require_device_pointer(tiles_ptr, itemsize(tile_type), "tiles_ptr");
    require_device_pointer(acc_ptr, 4, "acc_ptr");
    if (p.mode == unetrt::StitchMode::blend) {
        require_device_pointer(weight_ptr, 4, "weight_ptr");
        require_device_pointer(window_y_ptr, 4, "window_y_ptr");
        require_device_pointer(window_x_ptr, 4, "window_x_ptr");
        p.window_y = reinterpret_cast<const float*>(window_y_ptr);
        p.window_x = reinterpret_cast<const float*>(window_x_ptr);
    }
    py::gil_scoped_release release;
    check_launch(unetrt::stitch_tiles_cuda(reinterpret_cast<const void*>(tiles_ptr),
                                           reinterpret_cast<float*>(acc_ptr),
                                           p.mode == unetrt::StitchMode::blend ? reinterpret_cast<float*>(weight_ptr)
                                                                               : nullptr,
                                           p, reinterpret_cast<void*>(stream)),
                 "stitch_tiles_cuda launch failed");
}

void finish_cuda(uintptr_t acc_ptr, std::array<int64_t, 3> acc_shape, uintptr_t weight_ptr, uintptr_t mask_ptr,
                 bool binary, double threshold, bool write_logits, uintptr_t nonfinite_ptr, uintptr_t stream) {
    const unetrt::FinishParams p = make_finish_params({acc_shape.begin(), acc_shape.end()}, weight_ptr != 0,
                                                      mask_ptr != 0, binary, threshold, write_logits);
    require_device();
    require_device_pointer(acc_ptr, 4, "acc_ptr");
    if (weight_ptr != 0) require_device_pointer(weight_ptr, 4, "weight_ptr");
    if (mask_ptr != 0) require_device_pointer(mask_ptr, 1, "mask_ptr");
    if (nonfinite_ptr != 0) require_device_pointer(nonfinite_ptr, 8, "nonfinite_ptr");
    py::gil_scoped_release release;
    check_launch(unetrt::finish_cuda(reinterpret_cast<float*>(acc_ptr), reinterpret_cast<const float*>(weight_ptr),
                                     reinterpret_cast<uint8_t*>(mask_ptr), p,
                                     reinterpret_cast<unsigned long long*>(nonfinite_ptr),
                                     reinterpret_cast<void*>(stream)),
                 "finish_cuda launch failed");
}

void finish_resized_cuda(uintptr_t scores_ptr, std::array<int64_t, 3> scores_shape, const std::string& scores_dtype,
                         uintptr_t mask_ptr, Pair mask_hw, const Rect& rect, uintptr_t weight_ptr,
                         uintptr_t probabilities_ptr, bool binary, double threshold, uintptr_t nonfinite_ptr,
                         uintptr_t stream) {
    const DType score_type = parse_dtype_name(scores_dtype, "scores");
    const unetrt::FinishResizedParams p = make_finish_resized_params({scores_shape.begin(), scores_shape.end()},
                                                                     score_type, mask_hw, rect, binary, threshold);
    if (mask_ptr == 0 && probabilities_ptr == 0)
        fail("finish_resized_cuda has nothing to do: pass mask_ptr, probabilities_ptr or both");
    require_launch_rows(p.out_h, "an output");
    require_device();
    require_device_pointer(scores_ptr, itemsize(score_type), "scores_ptr");
    if (mask_ptr != 0) require_device_pointer(mask_ptr, 1, "mask_ptr");
    if (weight_ptr != 0) require_device_pointer(weight_ptr, 4, "weight_ptr");
    if (probabilities_ptr != 0) require_device_pointer(probabilities_ptr, 4, "probabilities_ptr");
    if (nonfinite_ptr != 0) require_device_pointer(nonfinite_ptr, 8, "nonfinite_ptr");
    py::gil_scoped_release release;
    check_launch(unetrt::finish_resized_cuda(reinterpret_cast<const void*>(scores_ptr),
                                             reinterpret_cast<const float*>(weight_ptr),
                                             reinterpret_cast<uint8_t*>(mask_ptr),
                                             reinterpret_cast<float*>(probabilities_ptr), p,
                                             reinterpret_cast<unsigned long long*>(nonfinite_ptr),
                                             reinterpret_cast<void*>(stream)),
                 "finish_resized_cuda launch failed");
}

void resize_bilinear_cuda(uintptr_t image_ptr, std::array<int64_t, 3> image_shape, const std::string& image_dtype,
                          uintptr_t out_ptr, Pair out_hw, uintptr_t stream) {
    const DType dtype = parse_dtype_name(image_dtype, "image");
    const unetrt::ResizeParams p = make_resize_params({image_shape.begin(), image_shape.end()}, dtype, out_hw);
    require_launch_rows(p.out_h, "an output");
    require_device();
    require_device_pointer(image_ptr, itemsize(dtype), "image_ptr");
    require_device_pointer(out_ptr, itemsize(dtype), "out_ptr");
    py::gil_scoped_release release;
    check_launch(unetrt::resize_bilinear_cuda(reinterpret_cast<const void*>(image_ptr),
                                              reinterpret_cast<void*>(out_ptr), p, reinterpret_cast<void*>(stream)),
                 "resize_bilinear_cuda launch failed");
}

#if defined(UNETRT_EMULATED_CUDA)
// ---------------------------------------------------------------- the emulator's write log

void record_writes(const std::vector<py::array>& arrays) {
    std::vector<unetrt::Region> regions;
    for (const py::array& a : arrays) {
        require_contiguous(a, "array");
        regions.push_back({reinterpret_cast<uintptr_t>(a.data()), static_cast<int64_t>(a.nbytes()),
                           static_cast<int64_t>(a.itemsize())});
    }
    unetrt::start_recording(std::move(regions));
}

// Writes per element of each recorded array, shaped as it, and the stray writes (not performed).
std::pair<std::vector<py::array_t<int32_t>>, int64_t> write_counts(const std::vector<py::array>& arrays) {
    unetrt::WriteCounts counts = unetrt::stop_recording();
    if (counts.per_region.size() != arrays.size())
        fail(cat("write_counts needs the ", counts.per_region.size(), " arrays given to record_writes, got ",
                 arrays.size()));
    std::vector<py::array_t<int32_t>> shaped;
    for (size_t i = 0; i < arrays.size(); ++i) {
        if (static_cast<size_t>(arrays[i].size()) != counts.per_region[i].size())
            fail(cat("write_counts: array ", i, " is not the one given to record_writes"));
        shaped.emplace_back(std::vector<py::ssize_t>(arrays[i].shape(), arrays[i].shape() + arrays[i].ndim()),
                            counts.per_region[i].data());
    }
    return {shaped, counts.stray};
}
#endif

}  // namespace

#if !defined(UNETRT_WITH_CUDA) && !defined(UNETRT_EMULATED_CUDA)
namespace unetrt {
// Never called: every CUDA entry point raises in require_device() first. Defined so the module links.
int extract_tiles_cuda(const ImageView&, void*, DType, const ExtractParams&, void*) { return 1; }
int stitch_tiles_cuda(const void*, float*, float*, const StitchParams&, void*) { return 1; }
int finish_cuda(float*, const float*, uint8_t*, const FinishParams&, unsigned long long*, void*) { return 1; }
int finish_resized_cuda(const void*, const float*, uint8_t*, float*, const FinishResizedParams&, unsigned long long*,
                        void*) {
    return 1;
}
int resize_bilinear_cuda(const void*, void*, const ResizeParams&, void*) { return 1; }
}  // namespace unetrt
#endif

#if defined(UNETRT_EMULATED_CUDA)
PYBIND11_MODULE(_tiling_emu, m) {
    m.doc() = "The CUDA kernels of unetrt._tiling run by emulation on the CPU, on numpy arrays, for tests.";
    m.def("record_writes", &record_writes, py::arg("arrays"),
          R"doc(Count, from now on, every element the emulated kernels write into these C-contiguous arrays; a
write anywhere else is not performed and counts as stray. Read the counts with write_counts(the same arrays).)doc");
    m.def("write_counts", &write_counts, py::arg("arrays"),
          R"doc(Stop counting; per array, how often each element was written, and the number of stray writes.

Returns:
    (list of int32 arrays shaped as the given ones, number of stray writes).)doc");
#else
PYBIND11_MODULE(_tiling, m) {
    m.doc() = "Mirror-pad overlap-tile kernels: extract tiles, stitch network outputs, finish to a mask.";
    m.attr("cuda_built") = kCudaBuilt;
    m.def("cuda_device_count", &cuda_device_count,
          "Number of CUDA devices usable by this module (0 without a CUDA build, driver or GPU).");
#endif

    m.def("extract_tiles", &extract_tiles, py::arg("image"), py::arg("out"), py::kw_only(), py::arg("origin"),
          py::arg("step"), py::arg("grid"), py::arg("first") = 0, py::arg("swap_rb") = false,
          py::arg("scale") = 1.0 / 255.0, py::arg("mean") = py::none(), py::arg("std") = py::none(),
          py::arg("threads") = 0,
          R"doc(Cut mirror-padded, normalised CHW tiles out of one image (CPU).

out[n, c, y, x] = image[reflect(oy + y), reflect(ox + x), c'] * float32(scale / std[c]) + float32(-mean[c] / std[c]),
where tile first + n of the row-major grid starts at (oy, ox) = origin + (row, col) * step, reflect mirrors
without repeating the edge pixel, and c' swaps channels 0 and 2 when swap_rb is set; a 1-channel image fills every
channel of out (c' = 0: a gray frame for a colour model, replicated here rather than before the call), and an image
of 3 or 4 channels fills a 1-channel out with its BT.601 gray value (a colour frame for a 1-channel model: cvtColor's
COLOR_RGB2GRAY, or COLOR_BGR2GRAY with swap_rb; bit for bit for uint8 and uint16, G + 0.299 (R - G) + 0.114 (B - G)
for float32).

Args:
    image: H x W or H x W x C (C <= 4) uint8, uint16 or float32, any strides.
    out: N x C x tile_h x tile_w float32 or float16, C-contiguous, writeable; N tiles are written; C is the
        image's channels, any C <= 4 for a 1-channel image, or 1 for an image of 3 or 4 channels.
    origin, step, grid: (y, x) of tile 0's corner (may be negative), the tile step and (rows, cols).
    first: index of the first tile to extract.
    swap_rb: BGR <-> RGB. scale, mean, std: normalisation. threads: 0 = one per core.

Returns:
    out.

Raises:
    ValueError: on a wrong dtype, shape, stride or a grid reaching outside the image or past its last tile.)doc");

    m.def("stitch_tiles", &stitch_tiles, py::arg("tiles"), py::arg("acc"), py::arg("weight") = py::none(),
          py::kw_only(), py::arg("origin"), py::arg("step"), py::arg("grid"), py::arg("first") = 0,
          py::arg("mode") = "crop", py::arg("window_y") = py::none(), py::arg("window_x") = py::none(),
          py::arg("threads") = 0,
          R"doc(Write network outputs N x K x out_h x out_w into the K x H x W result (CPU).

'crop': each tile writes only its core, split at the middle of its overlaps. 'blend': acc += w * tile and
weight += w with w = window_y[y] * window_x[x], in tile order; divide with finish(). origin is where output tile 0
starts in image coordinates (for 'valid' networks, the input origin plus the context margin).

Raises:
    ValueError: on wrong dtypes or shapes, or a grid that leaves pixels uncovered or ends past its last tile.)doc");

    m.def("finish", &finish, py::arg("acc"), py::arg("weight") = py::none(), py::arg("mask") = py::none(),
          py::kw_only(), py::arg("binary") = false, py::arg("threshold") = 0.0, py::arg("write_logits") = false,
          py::arg("threads") = 0,
          R"doc(Normalise blended logits and/or reduce them to an H x W uint8 mask (CPU).

Per pixel: v = acc / weight (when weight is given; stored back when write_logits), then mask = argmax over K
(first maximum) or, when binary, v > threshold.

Returns:
    How many pixels have a best value (the argmax's, or the binary value) that is NaN or infinite: a NaN or +inf in
    any class, -inf where it wins. Their mask means nothing; the frame path refuses them.

Raises:
    ValueError: on wrong dtypes or shapes, or nothing to do.)doc");

    m.def("finish_resized", &finish_resized, py::arg("scores"), py::arg("mask") = py::none(), py::kw_only(),
          py::arg("rect"), py::arg("weight") = py::none(), py::arg("binary") = false, py::arg("threshold") = 0.0,
          py::arg("probabilities") = py::none(), py::arg("threads") = 0,
          R"doc(Resize network scores bilinearly to the output size and reduce them to a mask, in one pass (CPU).

The rect (y0, x0, h, w) of the K x Hs x Ws scores (the valid area left after cropping the padding) maps onto the
whole H x W output. Each source value is divided by weight (when given) at its source pixel, then resized with
OpenCV INTER_LINEAR semantics (sx = (x + 0.5) * w / W - 0.5, clamped to the edge; h == H and w == W copies
exactly). mask = argmax over K (first maximum, a NaN wins), or for binary models (K == 1) value > threshold, with
the threshold in logit space. probabilities = softmax over K (sigmoid when binary) of the resized values; they
match the CUDA twin to a few float32 ulp (expf differs), the mask matches it bit for bit.

Args:
    scores: K x Hs x Ws float32 or float16, C-contiguous.
    mask: H x W uint8, C-contiguous, writeable; its shape sets the output size. None for probabilities only.
    rect: (y0, x0, h, w) inside the scores.
    weight: Hs x Ws float32 blend weight, or None.
    binary, threshold: threshold the single channel instead of the argmax.
    probabilities: K x H x W float32 output, or None. threads: 0 = one per core.

Returns:
    How many output pixels have a best resized value (the argmax's, or the binary value) that is NaN or infinite: a NaN
    or +inf in any class, -inf where it wins (a -inf that loses is an exact "never this class"). Their mask and
    probabilities mean nothing, and the frame path refuses such a frame (unetrt.NonFiniteScoresError).

Raises:
    ValueError: on a wrong dtype, shape or rect, or neither mask nor probabilities.

Example:
    >>> import numpy as np
    >>> scores = np.zeros((3, 192, 256), np.float32)
    >>> scores[2, :, 128:] = 1.0  # class 2 scores highest on the right half
    >>> mask = np.empty((360, 480), np.uint8)
    >>> finish_resized(scores, mask, rect=(0, 0, 192, 256))
    0
    >>> int(mask[0, 0]), int(mask[0, -1])
    (0, 2))doc");

    m.def("resize_bilinear", &resize_bilinear, py::arg("image"), py::arg("out"), py::kw_only(),
          py::arg("threads") = 0,
          R"doc(An H x W x C (or H x W) uint8, uint16 or float32 image resized bilinearly to out's size (OpenCV
INTER_LINEAR's half-pixel centres), on the CPU (in unetrt._tiling_emu: resize_bilinear_cuda's kernel, emulated).

Computed in float32 as resize_bilinear_cuda computes it, bit for bit: the host path's working-size image is the GPU
path's. Integer images are rounded half up and clamped to their range (cv2.resize rounds uint8 in fixed point, up to
one level away); float32 images are stored as computed.

Args:
    image: H x W x C (C <= 4) or H x W uint8, uint16 or float32, C-contiguous.
    out: h x w x C (or h x w) of the image's dtype, C-contiguous, writeable. threads: 0 = one per core.

Returns:
    out.

Raises:
    ValueError: on a wrong dtype or shape.

Example:
    >>> import numpy as np
    >>> frame = np.full((360, 480, 3), 7, np.uint8)
    >>> small = resize_bilinear(frame, np.empty((192, 256, 3), np.uint8))
    >>> small.shape, int(small.max())
    ((192, 256, 3), 7))doc");
#if !defined(UNETRT_EMULATED_CUDA)
    m.def("resize_variants", &resize_variants,
          R"doc(For tests: the names of the CPU row loops resize_bilinear can run on this CPU, the portable ones
('portable', built for the compiler's baseline) first, then those for an instruction set the CPU has ('avx2');
resize_bilinear runs the last.)doc");
    m.def("resize_bilinear_variant", &resize_bilinear_variant, py::arg("image"), py::arg("out"), py::arg("variant"),
          py::kw_only(), py::arg("threads") = 0,
          R"doc(For tests: resize_bilinear with the row loops `variant` names (one of resize_variants()). Every
variant gives the same image bit for bit.

Raises:
    ValueError: on a wrong dtype or shape, or a variant this CPU does not run.)doc");
#endif
#if defined(UNETRT_EMULATED_CUDA)
    m.def("set_pointer_attributes", &set_pointer_attributes, py::arg("attributes"),
          R"doc(What the *_cuda entry points take for cudaPointerGetAttributes: a callable(ptr) -> (cudaMemoryType,
devicePointer), or None (the default) to take every pointer for device memory.)doc");
    m.def("launched_streams", &unetrt::take_launched_streams,
          R"doc(The stream of every emulated kernel launch since the last call, in order (and forget them).)doc");
#endif
    m.def("extract_tiles_cuda", &extract_tiles_cuda, py::arg("image_ptr"), py::arg("image_hw"), py::arg("channels"),
          py::arg("image_strides"), py::arg("image_dtype"), py::arg("out_ptr"), py::arg("out_shape"),
          py::arg("out_dtype"), py::kw_only(), py::arg("origin"), py::arg("step"), py::arg("grid"),
          py::arg("first") = 0, py::arg("swap_rb") = false, py::arg("scale") = 1.0 / 255.0,
          py::arg("mean") = py::none(), py::arg("std") = py::none(), py::arg("stream") = 0,
          R"doc(extract_tiles on the GPU, asynchronous on `stream` (a cudaStream_t as int, 0 = default stream).

image_strides are in bytes (row, pixel, channel), as numpy, CuPy and __cuda_array_interface__ give them;
out is a contiguous N x C x tile_h x tile_w device buffer of out_dtype ('float32' or 'float16').

Raises:
    ValueError: on bad shapes, strides, dtypes, grids or pointers that are not device memory.
    RuntimeError: without a CUDA build or device, or when the launch fails.)doc");

    m.def("stitch_tiles_cuda", &stitch_tiles_cuda, py::arg("tiles_ptr"), py::arg("tiles_shape"),
          py::arg("tiles_dtype"), py::arg("acc_ptr"), py::arg("acc_shape"), py::arg("weight_ptr") = 0,
          py::kw_only(), py::arg("origin"), py::arg("step"), py::arg("grid"), py::arg("first") = 0,
          py::arg("mode") = "crop", py::arg("window_y_ptr") = 0, py::arg("window_x_ptr") = 0,
          py::arg("stream") = 0,
          R"doc(stitch_tiles on the GPU; all buffers contiguous device memory (windows: float32 device arrays).

Raises:
    ValueError: on bad shapes, dtypes, grids or pointers. RuntimeError: without a CUDA device or on launch failure.)doc");

    m.def("finish_cuda", &finish_cuda, py::arg("acc_ptr"), py::arg("acc_shape"), py::arg("weight_ptr") = 0,
          py::arg("mask_ptr") = 0, py::kw_only(), py::arg("binary") = false, py::arg("threshold") = 0.0,
          py::arg("write_logits") = false, py::arg("nonfinite_ptr") = 0, py::arg("stream") = 0,
          R"doc(finish on the GPU; pointers of 0 mean 'not given'. finish's count (pixels whose best value is NaN or
infinite) is added to the uint64 at nonfinite_ptr (zero it on the stream first).

Raises:
    ValueError: on bad shapes or pointers. RuntimeError: without a CUDA device or on launch failure.)doc");

    m.def("finish_resized_cuda", &finish_resized_cuda, py::arg("scores_ptr"), py::arg("scores_shape"),
          py::arg("scores_dtype"), py::arg("mask_ptr"), py::arg("mask_hw"), py::kw_only(), py::arg("rect"),
          py::arg("weight_ptr") = 0, py::arg("probabilities_ptr") = 0, py::arg("binary") = false,
          py::arg("threshold") = 0.0, py::arg("nonfinite_ptr") = 0, py::arg("stream") = 0,
          R"doc(finish_resized on the GPU, asynchronous on `stream`; contiguous device buffers, 0 = 'not given'.
finish_resized's count (output pixels whose best resized value is NaN or infinite) is added to the uint64 at
nonfinite_ptr (zero it on the stream first: only a thread that meets such a pixel touches it).

mask_hw is the output size (also when mask_ptr is 0 and only probabilities_ptr, K x H x W float32, is written).

Raises:
    ValueError: on bad shapes, dtypes, rects or pointers. RuntimeError: without a CUDA device or on launch failure.)doc");

    m.def("resize_bilinear_cuda", &resize_bilinear_cuda, py::arg("image_ptr"), py::arg("image_shape"),
          py::arg("image_dtype"), py::arg("out_ptr"), py::arg("out_hw"), py::kw_only(), py::arg("stream") = 0,
          R"doc(resize_bilinear on the GPU: contiguous H x W x C image_dtype ('uint8', 'uint16' or 'float32') to
out_h x out_w x C of that dtype, on `stream`.

Raises:
    ValueError: on bad shapes, dtypes or pointers. RuntimeError: without a CUDA device or on launch failure.)doc");
}
