import platform
import subprocess
import sys

import pytest

from unetrt.benchmarks import without_amx

linux_x86_64 = pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                                  reason="AMX permission is a Linux x86_64 request")
ASK = "from unetrt.benchmarks.without_amx import amx_denied; print(amx_denied())"


@linux_x86_64
def test_a_command_run_without_amx_is_refused_amx_and_a_plain_one_is_not() -> None:
    wrapped = subprocess.run([sys.executable, "-m", "unetrt.benchmarks.without_amx", sys.executable, "-c", ASK],
                             capture_output=True, text=True, check=True)
    plain = subprocess.run([sys.executable, "-c", ASK], capture_output=True, text=True, check=True)
    assert (wrapped.stdout.strip(), plain.stdout.strip()) == ("True", "False")


@linux_x86_64
def test_the_refusal_reaches_threads_and_children_and_leaves_other_calls_alone() -> None:
    # ARCH_GET_XCOMP_PERM (0x1022), the same system call with another option, answers as in a plain process.
    other = ("import ctypes, os\n"
             "from unetrt.benchmarks.without_amx import SYS_ARCH_PRCTL\n"
             "libc, features = ctypes.CDLL(None, use_errno=True), ctypes.c_uint64()\n"
             "result = libc.syscall(SYS_ARCH_PRCTL, 0x1022, ctypes.byref(features))\n"
             "other = 'ok' if result == 0 else os.strerror(ctypes.get_errno()).replace(' ', '_')\n")
    script = (
        "import subprocess, sys, threading\n"
        "from unetrt.benchmarks.without_amx import amx_denied\n"
        "seen = []\n"
        "thread = threading.Thread(target=lambda: seen.append(amx_denied()))\n"
        "thread.start(); thread.join()\n"
        f"child = subprocess.run([sys.executable, '-c', {ASK!r}], capture_output=True, text=True).stdout.strip()\n"
        + other + "print(seen[0], child, other)\n"
    )
    wrapped = subprocess.run([sys.executable, "-m", "unetrt.benchmarks.without_amx", sys.executable, "-c", script],
                             capture_output=True, text=True, check=True)
    plain = subprocess.run([sys.executable, "-c", other + "print(other)"], capture_output=True, text=True, check=True)
    assert wrapped.stdout.split() == ["True", "True", plain.stdout.strip()]


def test_usage_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert without_amx.main([]) == 2
    assert without_amx.main(["no-such-command-for-unetrt"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "error: command not found: 'no-such-command-for-unetrt'; give a program on PATH or its path"
