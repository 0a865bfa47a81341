"""unetrt.cpu: what the host CPU offers."""

from __future__ import annotations

import pytest

from unetrt.cpu import int8_products_saturate, usable_cores


@pytest.mark.parametrize(("flags", "saturates"), [
    ("fpu sse sse2 avx avx2 fma", True),  # AMD Zen 3, Intel Haswell to Coffee Lake: vpmaddubsw into int16
    ("sse2 avx2 avx512f avx512bw", True),  # Skylake-SP: AVX-512 without VNNI
    ("sse2 avx2 avx512f avx512_vnni", False),
    ("sse2 avx2 avx_vnni", False),
    ("sse2 avx2 avx512f avx512_vnni amx_int8 amx_tile", False),
    ("fp asimd asimddp", False),  # ARM: no such kernels to saturate
])
def test_int8_products_saturate_without_vnni_on_x86(flags: str, saturates: bool) -> None:
    assert int8_products_saturate(f"processor\t: 0\nflags\t\t: {flags}\n") is saturates


def test_without_flags_it_cannot_tell_and_does_not_refuse() -> None:
    assert int8_products_saturate("processor\t: 0\n") is False


def test_usable_cores_is_at_least_one() -> None:
    assert usable_cores() >= 1
