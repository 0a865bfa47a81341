// The CUDA kernels of tiling_kernels.cuh compiled by g++ and run by emulation (cuda_emulation.h), in namespace
// unetrt_emulated. bindings.cpp, compiled again with UNETRT_EMULATED_CUDA, exposes them on numpy arrays as the
// module unetrt._tiling_emu, so that CI without a GPU runs the very kernel code the GPU runs.
#include <atomic>
#include <mutex>
#include <vector>

#include "cuda_emulation.h"
#include "tiling_kernels.cuh"
#include "tiling_emulated.h"

namespace UNETRT_NAMESPACE {
namespace {

struct WriteLog {
    std::mutex mutex;
    std::atomic<bool> recording{false};  // read without the lock on every store
    std::vector<Region> regions;
    WriteCounts counts;
};

WriteLog& write_log() {
    static WriteLog log;
    return log;
}

}  // namespace

bool record_write(const void* address, int64_t bytes) {
    WriteLog& log = write_log();
    if (!log.recording.load(std::memory_order_relaxed)) return true;
    std::lock_guard<std::mutex> lock(log.mutex);
    const auto a = reinterpret_cast<uintptr_t>(address);
    for (size_t i = 0; i < log.regions.size(); ++i) {
        const Region& r = log.regions[i];
        if (a < r.begin || a >= r.begin + static_cast<uintptr_t>(r.bytes)) continue;
        if (bytes != r.itemsize || (a - r.begin) % static_cast<uintptr_t>(r.itemsize) != 0) break;
        ++log.counts.per_region[i][(a - r.begin) / static_cast<uintptr_t>(r.itemsize)];
        return true;
    }
    ++log.counts.stray;
    return false;
}

void start_recording(std::vector<Region> regions) {
    WriteLog& log = write_log();
    std::lock_guard<std::mutex> lock(log.mutex);
    log.counts = WriteCounts{};
    for (const Region& r : regions) log.counts.per_region.emplace_back(static_cast<size_t>(r.bytes / r.itemsize), 0);
    log.regions = std::move(regions);
    log.recording = true;
}

WriteCounts stop_recording() {
    WriteLog& log = write_log();
    std::lock_guard<std::mutex> lock(log.mutex);
    log.recording = false;
    log.regions.clear();
    return std::move(log.counts);
}

std::vector<uintptr_t> take_launched_streams() {
    cuda_emulation::StreamLog& log = cuda_emulation::stream_log();
    std::lock_guard<std::mutex> lock(log.mutex);
    std::vector<uintptr_t> streams;
    streams.swap(log.streams);
    return streams;
}

}  // namespace UNETRT_NAMESPACE
