"""unet-stream against a real RTSP server on 127.0.0.1 (GStreamer's, from Debian's packages).

The stream starts before the server (it waits), the server is killed and restarted mid-stream
(it reconnects), and SIGTERM ends it; the images it wrote decode, as many as its stats say it
wrote. (Images, not a video, so the test sees every frame land: an encoder writes a video in
chunks. Finishing a video on SIGTERM is tested in test_stream_cli_reliability.py.)
The server needs ``scripts/install_test_system_deps.sh``; without it the test skips.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest

SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"
# Generous: model loading, FFmpeg's stream probing and the reconnect backoff all slow down on a loaded machine.
STEP_TIMEOUT_S = 40.0


def _rtsp_server_missing() -> str | None:
    """Why the loopback RTSP server cannot run here, or None when it can."""
    if sys.platform == "win32":
        return "the loopback RTSP server runs on Linux"
    if not _opencv_has_ffmpeg():
        return "this OpenCV build has no FFmpeg to read RTSP"
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} (the system Python with PyGObject) is missing"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "missing = [n for n in ('videotestsrc', 'x264enc', 'rtph264pay') if not Gst.ElementFactory.find(n)]; "
             "assert not missing, missing")
    result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["unknown"])[-1]
        return f"GStreamer's RTSP server is not installed (run scripts/install_test_system_deps.sh): {reason}"
    return None


def _opencv_has_ffmpeg() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("FFMPEG:"):
            return "YES" in line
    return False


pytestmark = pytest.mark.skipif(bool(reason := _rtsp_server_missing()), reason=reason or "")


class LineLog:
    """Collects a pipe's lines in a thread; :meth:`wait_for` polls them for a line that matches."""

    def __init__(self, pipe: object) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: object) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            if not line.strip():
                continue
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def join(self) -> None:
        """Wait until the pipe is closed and read to its end."""
        self._thread.join(timeout=STEP_TIMEOUT_S)

    def wait_for(self, words: str, at_least: int = 1, alive: Callable[[], bool] = lambda: True) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        with self._changed:
            while sum(words in line for line in self.lines) < at_least:
                left = deadline - time.monotonic()
                assert left > 0 and alive(), f"no line with {words!r} in time:\n" + "\n".join(self.lines[-30:])
                self._changed.wait(min(left, 0.5))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(port: int) -> subprocess.Popen[str]:
    server = subprocess.Popen([SYSTEM_PYTHON, str(SERVER_SCRIPT), str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert server.stdout is not None
    ready = server.stdout.readline()  # blocks until the socket listens or the server dies
    assert ready.strip() == f"ready {port}", f"RTSP server did not start: {ready!r} {server.stderr.read()}"  # type: ignore[union-attr]
    return server


def _stop(process: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        process.wait(timeout=30)


def _frames(folder: Path) -> int:
    return len(list(folder.glob("*.png"))) if folder.is_dir() else 0


def _wait_for_more_frames(folder: Path, count: int, running: Callable[[], bool], log: LineLog) -> None:
    """Until ``folder`` holds more than ``count`` written frames."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while _frames(folder) <= count:
        assert running() and time.monotonic() < deadline, "\n".join(log.lines[-30:])
        time.sleep(0.1)


def test_waits_for_the_server_reconnects_after_a_restart_and_stops_on_sigterm(
        tmp_path: Path, tiny_model_files: dict[str, Path]) -> None:
    port = _free_port()
    out, stats = tmp_path / "frames", tmp_path / "stats.json"
    command = [sys.executable, "-m", "unetrt.stream.cli", f"rtsp://127.0.0.1:{port}/test", str(out),
               "--model", str(tiny_model_files["onnx"]), "--threads", "1", "--open-timeout", "5",
               "--stats", str(stats), "--verbose"]
    stream = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    servers: list[subprocess.Popen[str]] = []
    try:
        log = LineLog(stream.stderr)
        running = lambda: stream.poll() is None  # noqa: E731
        log.wait_for("is not up yet", alive=running)  # started before the server: it waits
        servers.append(_start_server(port))
        log.wait_for("is up after", alive=running)
        _wait_for_more_frames(out, 0, running, log)

        _stop(servers[-1])  # the server dies mid-stream
        log.wait_for("reopening in", alive=running)
        servers.append(_start_server(port))
        log.wait_for(" reopened (attempt", alive=running)
        _wait_for_more_frames(out, _frames(out), running, log)  # frames of the restarted server are written

        stream.send_signal(signal.SIGTERM)
        stream.wait(timeout=60)
        log.join()
        stdout = stream.stdout.read()  # type: ignore[union-attr]
    finally:
        _stop(stream)
        for server in servers:
            _stop(server, signal.SIGTERM)
    assert stream.returncode == 143, "\n".join(log.lines[-30:])
    assert log.lines[-1] == "terminated" and "processed" in stdout
    summary = json.loads(stats.read_text())
    assert summary["reconnects"] >= 1 and summary["live"] is True
    images = sorted(out.glob("*.png"))
    assert summary["written"] > 0 and len(images) == summary["written"]
    assert all(cv2.imread(str(image)) is not None for image in images)


def test_a_frozen_server_is_noticed_within_the_open_timeout(tmp_path: Path, tiny_model_files: dict[str, Path]) -> None:
    port = _free_port()
    out = tmp_path / "frames"
    server = _start_server(port)
    command = [sys.executable, "-m", "unetrt.stream.cli", f"rtsp://127.0.0.1:{port}/test", str(out),
               "--model", str(tiny_model_files["onnx"]), "--threads", "1", "--open-timeout", "2",
               "--max-reconnects", "0"]
    stream = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        log = LineLog(stream.stderr)
        _wait_for_more_frames(out, 0, lambda: stream.poll() is None, log)
        server.send_signal(signal.SIGSTOP)  # the server keeps its connection open and sends nothing
        stream.wait(timeout=STEP_TIMEOUT_S)
        log.join()
    finally:
        _stop(stream)
        server.send_signal(signal.SIGCONT)
        _stop(server, signal.SIGTERM)
    assert stream.returncode == 2, "\n".join(log.lines[-30:])
    # The read that hung is what failed (FFmpeg alone gave up only after 2-3 times the timeout).
    assert "sent no frame for 2 s (--open-timeout)" in log.lines[-1], "\n".join(log.lines[-30:])
