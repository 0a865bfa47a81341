// The emulator's write log (tiling_emulated.cpp), read by the emulated module's bindings.
#pragma once

#include <cstdint>
#include <vector>

#include "tiling.h"

namespace UNETRT_NAMESPACE {

// A writeable region: an output array.
struct Region {
    uintptr_t begin;
    int64_t bytes, itemsize;
};

// Between start_recording() and stop_recording(), every store() of an emulated kernel is counted per element of
// the given regions; a store that is no whole element of one is not performed and counts as stray.
struct WriteCounts {
    std::vector<std::vector<int32_t>> per_region;
    int64_t stray = 0;
};

void start_recording(std::vector<Region> regions);
WriteCounts stop_recording();

// The stream of every emulated launch since the last call, in order; forgets them.
std::vector<uintptr_t> take_launched_streams();

}  // namespace UNETRT_NAMESPACE
