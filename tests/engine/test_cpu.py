"""unetrt.cpu: what the host CPU offers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from unetrt.cpu import MAX_THREADS, check_threads, int8_products_saturate, usable_cores


@pytest.mark.parametrize(("flags", "saturates"), [
    ("fpu sse sse2 avx avx2 fma", True),  # AMD Zen 3, Intel Haswell to Coffee Lake: vpmaddubsw into int16
    ("sse2 avx2 avx512f avx512bw", True),  # Skylake-SP: AVX-512 without VNNI
    ("fpu sse sse2 ssse3 sse4_1 sse4_2", True),  # Atom (Goldmont): no AVX2, pmaddubsw into int16 all the same
    ("sse2 avx2 avx512f avx512_vnni", False),
    ("sse2 avx2 avx_vnni", False),
    ("sse2 avx2 avx512f avx512_vnni amx_int8 amx_tile", False),
    ("sse2 avx2 amx_int8 amx_tile", False),  # AMX's int8 tile products add in int32, whatever else is listed
    ("fp asimd asimddp", False),  # ARM: no such kernels to saturate
])
def test_int8_products_saturate_without_vnni_on_x86(flags: str, saturates: bool) -> None:
    assert int8_products_saturate(f"processor\t: 0\nflags\t\t: {flags}\n") is saturates


def test_without_flags_it_cannot_tell_and_does_not_refuse() -> None:
    assert int8_products_saturate("processor\t: 0\n") is False


def test_usable_cores_is_at_least_one() -> None:
    assert usable_cores() >= 1


def test_without_proc_cpuinfo_it_cannot_tell_and_does_not_refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(self: Path) -> str:
        raise FileNotFoundError(str(self))  # a system without /proc (a macOS or a sandboxed process)

    monkeypatch.setattr(Path, "read_text", unreadable)
    assert int8_products_saturate() is False


def test_usable_cores_follows_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    # A container or taskset limit of 3 cores on a 64-core host: lanes and thread budgets are sized by 3.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 7}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert usable_cores() == 3


@pytest.mark.parametrize("threads", [None, 1, 7, MAX_THREADS])
def test_thread_counts_from_1_to_the_cap_pass(threads: int | None) -> None:
    check_threads(threads)


@pytest.mark.parametrize("threads", [0, MAX_THREADS + 1, True, 2.0])
def test_other_thread_counts_are_refused_naming_the_value(threads: object) -> None:
    words = rf"threads must be an integer from 1 to {MAX_THREADS} .*got {re.escape(repr(threads))}$"
    with pytest.raises(ValueError, match=words):
        check_threads(threads)
