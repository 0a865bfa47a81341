"""Run a command as on a CPU without AMX: the same cores, with the Linux kernel's AMX permission refused.

On Linux a process must ask the kernel for AMX's tile state (``arch_prctl(ARCH_REQ_XCOMP_PERM,
XFEATURE_XTILEDATA)``, Documentation/arch/x86/xstate.rst) before it may run an AMX instruction, and oneDNN, the
kernel library under OpenVINO and PyTorch, asks before it picks an AMX kernel: refused, it runs the AVX-512 VNNI
(INT8) and AVX-512 BF16 kernels a Xeon without AMX runs (OpenVINO's layer profile then names ``brgconv_avx512_I8``
where it named ``brgconv_avx512_amx_I8``). Any other library that asks is refused alike. This module installs a
seccomp filter (Documentation/userspace-api/seccomp_filter.rst) that answers that one request with EPERM, then runs
the command in its place; the filter is inherited by every thread and child process and cannot be lifted. Benchmarks
started this way name the CPU with "AMX denied to this process" (:func:`amx_denied`), so an AMX Xeon can measure
issue 26's figures for CPUs without AMX; clock, caches and memory remain the AMX Xeon's.

Usage::

    python -m unetrt.benchmarks.without_amx unet-bench --model camvid --size 480x360 --end-to-end ...
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import shutil
import sys
from collections.abc import Sequence

ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18
SYS_ARCH_PRCTL = 158  # x86_64
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
AUDIT_ARCH_X86_64 = 0xC000003E
# Offsets into struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
SECCOMP_DATA_NR, SECCOMP_DATA_ARCH, SECCOMP_DATA_ARG0 = 0, 4, 16
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _filter_program() -> list[tuple[int, int, int, int]]:
    """BPF: EPERM for x86_64 arch_prctl(ARCH_REQ_XCOMP_PERM, ...), every other call allowed."""
    deny = SECCOMP_RET_ERRNO | errno.EPERM
    return [
        (BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
        (BPF_JEQ_K, 0, 5, AUDIT_ARCH_X86_64),
        (BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
        (BPF_JEQ_K, 0, 3, SYS_ARCH_PRCTL),
        (BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARG0),  # the low 32 bits of the option (little-endian)
        (BPF_JEQ_K, 0, 1, ARCH_REQ_XCOMP_PERM),
        (BPF_RET_K, 0, 0, deny),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def deny_amx() -> None:
    """Refuse AMX to this process, its later threads and its children, for good.

    Call it before any library has asked for AMX (before importing OpenVINO, ONNX Runtime or torch): a
    permission already granted stays granted.

    Raises:
        ValueError: off Linux on x86_64, or when the kernel refuses the filter.

    Example:
        >>> deny_amx()  # doctest: +SKIP
        >>> amx_denied()  # doctest: +SKIP
        True
    """
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise ValueError(f"denying AMX needs Linux on x86_64, this is {sys.platform} on {platform.machine()}")
    libc = _libc()
    program = _filter_program()
    filters = (_SockFilter * len(program))(*[_SockFilter(*line) for line in program])
    fprog = _SockFprog(len(program), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
            libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise ValueError(f"the kernel refused the seccomp filter: {os.strerror(ctypes.get_errno())}")


def amx_denied() -> bool:
    """Whether this process is refused AMX (by :func:`deny_amx` or any other seccomp filter).

    Asks for AMX's tile state as oneDNN does; on a CPU with AMX the permission is then granted to the process,
    as the first INT8 or BF16 kernel would have it granted. The kernel itself answers a refused request with
    EINVAL, EOPNOTSUPP or ENOSPC, never EPERM, so EPERM means a filter.

    Example:
        >>> amx_denied()  # doctest: +SKIP
        False
    """
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    libc = _libc()
    result = libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
    return result != 0 and ctypes.get_errno() == errno.EPERM


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``argv`` (a command and its arguments) with AMX denied; returns 2 on a usage error.

    Example:
        >>> main(["unet-bench", "--model", "camvid", "--end-to-end"])  # doctest: +SKIP
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m unetrt.benchmarks.without_amx COMMAND [ARGS...]: run COMMAND as on a CPU "
              "without AMX", file=sys.stderr)
        return 0 if args else 2
    if shutil.which(args[0]) is None:
        print(f"error: command not found: {args[0]!r}; give a program on PATH or its path", file=sys.stderr)
        return 2
    try:
        deny_amx()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    os.execvp(args[0], args)


if __name__ == "__main__":
    sys.exit(main())
