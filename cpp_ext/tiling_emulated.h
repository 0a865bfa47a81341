// The emulator's write log (tiling_emulated.cpp), read by the emulated module's bindings.
#pragma once

#include <cstdint>
#include <vector>

#include "tiling.h"

namespace UNETRT_NAMESPACE {

struct WriteRecord {
    uintptr_t address;
    int64_t bytes;
};

// Between start_recording() and stop_recording(), every store() of an emulated kernel is logged.
void start_recording();
std::vector<WriteRecord> stop_recording();

}  // namespace UNETRT_NAMESPACE
