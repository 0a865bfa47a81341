"""The suite's own guards (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_os_exit_in_the_runner_fails_the_test_instead_of_ending_the_run(tmp_path: Path) -> None:
    """A test whose code reaches os._exit(0) (unet-stream's main() after a hung read) ended pytest there with exit
    code 0, the tests after it unrun: it fails that test, and the run goes on."""
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (tmp_path / "test_exits.py").write_text(
        "import os\n\n"
        "def test_leaves():\n    os._exit(0)\n\n"
        "def test_after():\n    pass\n\n"
        "def test_a_fork_child_still_exits():\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n        os._exit(7)\n"
        "    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
                          "ignore::DeprecationWarning", str(tmp_path / "test_exits.py")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(TESTS)})
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 2 passed" in run.stdout and "os._exit(0) in the test runner's process" in run.stdout, run.stdout


def test_the_guard_is_installed_in_this_run() -> None:
    assert os._exit.__name__ == "_exit_outside_the_runner"
