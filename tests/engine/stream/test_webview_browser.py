"""A real browser (headless Chromium) shows the live view of ``unet-stream sample http://127.0.0.1:0``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


@contextlib.contextmanager
def _live_view() -> Iterator[str]:
    """``unet-stream sample http://127.0.0.1:0`` running; yields the page's address."""
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
        # The address is printed before the model opens (the page answers during a first TensorRT build): the
        # screenshots and tabs are of the stream, so its first result is waited for.
        _until(lambda: "frame" in json.loads(urllib.request.urlopen(url + "stats", timeout=30).read()),
               "unet-stream shows no frame")
        yield url
    finally:
        stream.send_signal(signal.SIGINT)
        try:
            stream.communicate(timeout=60)
        finally:
            if stream.poll() is None:  # a stream left running would slow every later test
                stream.kill()
                stream.communicate()


def test_browser_shows_the_live_stream(tmp_path: Path) -> None:
    with _live_view() as url:
        first = _screenshot(url, tmp_path / "first.png")
        second = _screenshot(url, tmp_path / "second.png")
    pictures = [_picture_area(shot) for shot in (first, second)]
    for picture in pictures:
        # The 480x360 clip (less the page's margins) with its segmentation colours, not an empty page or a broken icon.
        assert picture.shape[0] >= 300 and picture.shape[1] >= 400, picture.shape
        assert picture.std() > 20
    assert pictures[0].shape == pictures[1].shape
    assert np.abs(pictures[0].astype(np.int16) - pictures[1]).mean() > 2, "the picture did not change"


class _Browser:
    """Headless Chromium driven over its DevTools pipe (``--remote-debugging-pipe``: JSON messages ending in a NUL
    byte, commands on its descriptor 3 and replies on 4), so that no client library is needed."""

    def __init__(self, profile: Path) -> None:
        to_browser, self._commands = os.pipe()
        self._replies, from_browser = os.pipe()

        def descriptors() -> None:  # in the child: the pipe ends where Chromium looks for them
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=descriptors, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._pending = b""
        self._last_id = 0

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            while b"\0" not in self._pending:
                ready, _, _ = select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))
                assert ready, f"Chromium did not answer {method}"
                chunk = os.read(self._replies, 1 << 16)
                assert chunk, "Chromium closed its DevTools pipe"
                self._pending += chunk
            raw, self._pending = self._pending.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._last_id:
                assert "error" not in reply, reply
                return reply["result"]

    def open(self, url: str, background: bool) -> tuple[str, str]:
        """A new tab at ``url`` (behind the one in front when ``background``, as a middle click opens it)."""
        target = self.call("Target.createTarget", {"url": url, "background": background})["targetId"]
        return target, self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def evaluate(self, tab: tuple[str, str], expression: str) -> Any:
        return self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                         tab[1])["result"].get("value")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self._commands)
        os.close(self._replies)


def _until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


STATE = ('document.visibilityState + " " + document.getElementById("stream").getAttribute("src") + " " + '
         'document.getElementById("stats").textContent')


def test_tabs_past_the_browsers_six_connections_each_show_the_view_when_in_front(tmp_path: Path) -> None:
    # A browser opens at most 6 connections to one address for all its tabs, and every page held a stream: with 8
    # tabs open the 7th and 8th pages never finished loading. And the figures under the picture never showed at all:
    # a newline in the page's script ended a string literal, a syntax error that stopped the whole script.
    browser = _Browser(tmp_path / "profile")
    try:
        with _live_view() as url:
            tabs = [browser.open(url, background=index > 0) for index in range(8)]
            front, last = tabs[0], tabs[-1]
            _until(lambda: str(browser.evaluate(front, STATE)).startswith("visible /stream frame "),
                   "the tab in front shows no figures")
            assert "ms per frame: capture" in browser.evaluate(front, 'document.getElementById("stats").textContent')
            for tab in tabs[1:]:  # the hidden ones hold no stream, so that the 8th page loaded too
                _until(lambda tab=tab: browser.evaluate(tab, "document.readyState") == "complete",
                       "a tab behind did not load")
                assert str(browser.evaluate(tab, STATE)).startswith("hidden null ")
            browser.call("Target.activateTarget", {"targetId": last[0]})
            _until(lambda: str(browser.evaluate(last, STATE)).startswith("visible /stream frame "),
                   "the last tab, brought to the front, shows no figures")
            _until(lambda: str(browser.evaluate(front, STATE)).startswith("hidden null "),
                   "the tab sent behind kept its stream")
    finally:
        browser.close()


def test_the_page_says_the_engine_is_built_then_shows_the_stream_without_a_reload(tmp_path: Path) -> None:
    # A Jetson's first `unet-stream csi://0 http://0.0.0.0:8080` builds its TensorRT engine for minutes, during which
    # the port refused connections. The page answers now, shows the build's status and progress under the picture's
    # place, follows it, and shows the picture and the figures once frames come, on the page loaded during the build.
    from types import SimpleNamespace

    from unetrt.build_watch import BuildStep
    from unetrt.stream.webview import HttpViewSink

    browser = _Browser(tmp_path / "profile")
    view = HttpViewSink("127.0.0.1", 0)
    view._server.clock = lambda: 1000.0  # the time so far counts to the moment asked: held still for the wording
    try:
        view.set_status("building a TensorRT engine for camvid FP16", BuildStep("Tactic selection", 3, 9, 40.0))
        tab = browser.open(view.url, background=False)
        text = 'document.getElementById("stats").textContent'
        _until(lambda: browser.evaluate(tab, text) == "building a TensorRT engine for camvid FP16\n"
                                                     "Tactic selection 3/9 (40 s so far)", "the page shows no build")
        view.set_status("building a TensorRT engine for camvid FP16", BuildStep("Tactic selection", 7, 9, 95.0))
        _until(lambda: browser.evaluate(tab, text).endswith("Tactic selection 7/9 (95 s so far)"),
               "the page does not follow the build")
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[:, 80:] = (0, 200, 0)
        result = SimpleNamespace(index=0, fps=0.0, latency_ms=40.0, timings_ms={"inference": 31.5})

        def shown() -> bool:
            view.write_result(result, frame)  # type: ignore[arg-type]
            result.index += 1
            return bool(browser.evaluate(tab, 'document.getElementById("stream").naturalWidth === 160 && '
                                              f'{text}.startsWith("frame ")'))

        _until(shown, "the page did not switch to the stream by itself")
    finally:
        view.close()
        browser.close()
