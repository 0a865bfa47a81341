"""A real browser (headless Chromium) shows the live view of ``unet-stream sample http://127.0.0.1:0``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGE_BACKGROUND_BGR = (32, 32, 32)

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")]


def _screenshot(url: str, path: Path) -> np.ndarray:
    # --timeout stops loading after 4 s (the stream never ends) and the page as painted then is captured.
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=520,440", "--timeout=4000", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=120)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"Chromium wrote no screenshot to {path}"
    return image


def _picture_area(screenshot: np.ndarray) -> np.ndarray:
    """The part of the screenshot that is not page background."""
    differs = np.abs(screenshot.astype(np.int16) - PAGE_BACKGROUND_BGR).sum(axis=2) > 30
    rows, cols = np.nonzero(differs.any(axis=1))[0], np.nonzero(differs.any(axis=0))[0]
    return screenshot[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def test_browser_shows_the_live_stream(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "unetrt.stream.cli", "sample", "http://127.0.0.1:0", "--loop", "-1",
               "--max-fps", "10", "--headless", "--legend", "--threads", "1"]
    stream = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    try:
        assert stream.stderr is not None
        url = None
        for line in stream.stderr:
            found = re.search(r"live view at (http://127\.0\.0\.1:\d+/) \(this machine only\)", line)
            if found:
                url = found.group(1)
                break
        assert url is not None, "unet-stream printed no live-view address"
        first = _screenshot(url, tmp_path / "first.png")
        second = _screenshot(url, tmp_path / "second.png")
    finally:
        stream.send_signal(signal.SIGINT)
        try:
            stream.communicate(timeout=60)
        finally:
            if stream.poll() is None:  # a stream left running would slow every later test
                stream.kill()
                stream.communicate()
    pictures = [_picture_area(shot) for shot in (first, second)]
    for picture in pictures:
        # The 480x360 clip (less the page's margins) with its segmentation colours, not an empty page or a broken icon.
        assert picture.shape[0] >= 300 and picture.shape[1] >= 400, picture.shape
        assert picture.std() > 20
    assert pictures[0].shape == pictures[1].shape
    assert np.abs(pictures[0].astype(np.int16) - pictures[1]).mean() > 2, "the picture did not change"
