"""Every function of the CPU kernels that uses 256-bit registers clears their upper halves (vzeroupper) before the
baseline (SSE) code after it runs.

With the upper halves left dirty, each SSE instruction afterwards pays for them until the next vzeroupper (Intel,
"AVX State Transitions: Migrating SSE Code to AVX"; AMD's EPYC optimisation guide, "Mixing AVX and SSE"). GCC 12
inserts it before returns and calls, but not before a tail call: resize_row_avx2<float> and confident_labels_avx2
jumped into their portable tail loops with dirty registers, and on a Zen 4 EPYC the extract of a float frame after
its AVX2 resize took 0.23 ms instead of 0.07 ms. Timing is not a test here, so the test reads the machine code."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess

import pytest

from unetrt import _tiling


def functions_using_ymm_without_vzeroupper(disassembly: str) -> list[str]:
    """The functions of an objdump -d listing that name a ymm register but hold no vzeroupper.

    Example:
        >>> listing = "0 <f>:\\n  vaddps %ymm0,%ymm1,%ymm1\\n  ret\\n\\n10 <g>:\\n  vmulps %ymm0,%ymm0,%ymm0\\n"
        >>> functions_using_ymm_without_vzeroupper(listing + "  vzeroupper\\n  ret\\n")
        ['f']
    """
    found: list[str] = []
    name, body = None, []
    for line in [*disassembly.splitlines(), "0 <end>:"]:
        header = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if header:
            text = "\n".join(body)
            if name is not None and "ymm" in text and "vzeroupper" not in text:
                found.append(name)
            name, body = header.group(1), []
        else:
            body.append(line)
    return found


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="AVX is x86's")
def test_no_kernel_leaves_the_upper_halves_dirty() -> None:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    listing = subprocess.run([objdump, "-d", "--no-show-raw-insn", "-C", _tiling.__file__], capture_output=True,
                             text=True, check=True).stdout
    assert "ymm" in listing  # the AVX2 loops are there to check
    assert functions_using_ymm_without_vzeroupper(listing) == []
