import platform
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

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


@linux_x86_64
def test_the_refused_call_is_the_one_onednn_makes() -> None:
    # The numbers oneDNN passes, written out rather than taken from the module: arch_prctl is system call 158 on
    # x86_64 (arch/x86/entry/syscalls/syscall_64.tbl), ARCH_REQ_XCOMP_PERM is 0x1023 and XFEATURE_XTILEDATA 18
    # (arch/x86/include/uapi/asm/prctl.h); EPERM is errno 1.
    raw = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
           "result = libc.syscall(158, 0x1023, 18)\nprint(result, ctypes.get_errno() if result else 0)")
    wrapped = subprocess.run([sys.executable, "-m", "unetrt.benchmarks.without_amx", sys.executable, "-c", raw],
                             capture_output=True, text=True, check=True)
    plain = subprocess.run([sys.executable, "-c", raw], capture_output=True, text=True, check=True)
    assert wrapped.stdout.split() == ["-1", "1"]
    assert plain.stdout.split() != ["-1", "1"]


class _RecordingLibc:
    """Stands in for libc: records prctl calls and answers each with the next of ``answers``."""

    def __init__(self, *answers: int) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.answers = list(answers)

    def prctl(self, *args: Any) -> int:
        self.calls.append(args)
        return self.answers.pop(0)


def test_the_filter_is_installed_after_no_new_privs_as_an_unprivileged_user_needs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(without_amx, "platform", SimpleNamespace(machine=lambda: "x86_64"))
    monkeypatch.setattr(without_amx, "sys", SimpleNamespace(platform="linux"))
    libc = _RecordingLibc(0, 0)
    monkeypatch.setattr(without_amx, "_libc", lambda: libc)
    without_amx.deny_amx()
    # PR_SET_NO_NEW_PRIVS (38) first: without it the kernel refuses a seccomp filter to a non-root process
    assert [call[:2] for call in libc.calls] == [(38, 1), (22, 2)]  # then PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    refused = _RecordingLibc(-1)
    monkeypatch.setattr(without_amx, "_libc", lambda: refused)
    with pytest.raises(ValueError, match="the kernel refused the seccomp filter"):
        without_amx.deny_amx()
    assert len(refused.calls) == 1  # no filter asked for once NO_NEW_PRIVS failed


def test_off_x86_64_nothing_is_asked_of_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libc() -> None:
        raise AssertionError("a system call numbered for x86_64 was made on another machine")

    monkeypatch.setattr(without_amx, "platform", SimpleNamespace(machine=lambda: "aarch64"))
    monkeypatch.setattr(without_amx, "_libc", no_libc)
    with pytest.raises(ValueError, match=r"needs Linux on x86_64, this is .* on aarch64"):
        without_amx.deny_amx()
    assert without_amx.amx_denied() is False
