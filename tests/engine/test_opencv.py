"""unetrt.opencv.import_cv2 in this process, with fake cv2 packages: what reaches stderr and the one-line error."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from unetrt.opencv import OpenCVImportError, import_cv2


@pytest.fixture()
def fake_cv2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Writes a cv2 package with the given body and makes it the one ``import cv2`` finds (the real one comes
    back after the test)."""
    def install(body: str) -> None:
        (tmp_path / "cv2").mkdir()
        (tmp_path / "cv2" / "__init__.py").write_text(textwrap.dedent(body))
        monkeypatch.delitem(sys.modules, "cv2", raising=False)
        monkeypatch.syspath_prepend(str(tmp_path))

    return install


def test_what_a_working_opencv_prints_while_importing_still_reaches_stderr(
        fake_cv2: Callable[[str], None], capsys: pytest.CaptureFixture[str]) -> None:
    # Captured only to keep NumPy's warning off a failed import; a working import's own lines are the user's.
    fake_cv2("""
        import sys
        FAKE = True
        sys.stderr.write("[ WARN:0] global cap_gstreamer.cpp: GStreamer: pipeline have not been created\\n")
    """)
    assert import_cv2().FAKE
    assert capsys.readouterr().err == "[ WARN:0] global cap_gstreamer.cpp: GStreamer: pipeline have not been created\n"


@pytest.mark.parametrize(("stderr", "error"), [
    ("", "numpy.core.multiarray failed to import"),
    ("A module that was compiled using NumPy 1.x cannot be run in NumPy 2.4.6 as it may crash.\n",
     "DLL load failed while importing cv2"),
], ids=["only the import error", "only numpy's warning"])
def test_opencv_built_for_numpy_1_is_recognised_from_either_sign(
        fake_cv2: Callable[[str], None], capsys: pytest.CaptureFixture[str], stderr: str, error: str) -> None:
    fake_cv2(f"""
        import sys
        sys.stderr.write({stderr!r})
        raise ImportError({error!r})
    """)
    with pytest.raises(OpenCVImportError, match=r"built for NumPy 1\.x .*pip install 'numpy<2'"):
        import_cv2()
    assert capsys.readouterr().err == ""


def test_another_import_failure_keeps_its_reason_and_what_opencv_printed(
        fake_cv2: Callable[[str], None], capsys: pytest.CaptureFixture[str]) -> None:
    fake_cv2("""
        import sys
        sys.stderr.write("loading libGL\\n")
        raise ImportError("libGL.so.1: cannot open shared object file")
    """)
    with pytest.raises(OpenCVImportError, match=r"^OpenCV \(cv2\) failed to import: libGL\.so\.1: cannot open"):
        import_cv2()
    assert capsys.readouterr().err == "loading libGL\n"
