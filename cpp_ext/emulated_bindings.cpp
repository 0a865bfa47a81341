// unetrt._tiling_emu: bindings.cpp compiled a second time, with UNETRT_EMULATED_CUDA and the unetrt_emulated
// namespace set by setup.py; a file of its own so that its object never overwrites the CPU build's.
#include "bindings.cpp"
