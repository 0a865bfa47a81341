"""The live view: only the page and the stream are served, every viewer gets frames, a stalled one blocks nothing."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from stream_helpers import FakeSegmenter

from unetrt.stream import Stream, webview
from unetrt.stream.cli import main
from unetrt.stream.sinks import open_sink
from unetrt.stream.webview import BOUNDARY, REQUEST_TIMEOUT_S, STATS_POLL_MS, HttpViewSink, LatestFrame

# Generous: only a hang (a viewer blocking the pipeline) ever reaches it.
HANG_S = 120.0


@pytest.fixture
def sink() -> HttpViewSink:
    view = HttpViewSink("127.0.0.1", 0)
    yield view
    view.close()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def test_page_is_served_and_every_other_path_is_404(sink: HttpViewSink) -> None:
    status, body = _get(sink.url)
    assert status == 200 and b'src="/stream"' in body
    assert _get(sink.url + "index.html") == (200, body)  # the page's other name, as a browser may ask for it
    for path in ("etc/passwd", "../README.md", "%2e%2e/setup.py", "stream/x", "favicon.ico", "engine/cli.py"):
        assert _get(sink.url + path)[0] == 404, path


def test_a_hidden_page_gives_its_stream_connection_back(sink: HttpViewSink) -> None:
    # A browser opens at most 6 connections to one address for all its tabs, and every open page held one stream:
    # with 6 tabs no connection was left for /stats (the figures froze in all of them) and a 7th page never loaded,
    # where docs/streaming.md promises 8 viewers. Only the pages shown hold a stream; a hidden one polls no figures.
    # (tests/engine/stream/test_webview_browser.py opens 8 tabs in Chromium.)
    status, body = _get(sink.url)
    page = body.decode()
    assert status == 200 and 'document.addEventListener("visibilitychange", follow);\nfollow();' in page
    assert ('  if (document.hidden) stream.removeAttribute("src");\n'
            '  else if (!stream.getAttribute("src")) stream.src = "/stream";') in page
    assert f"if (document.hidden) {{ setTimeout(poll, {STATS_POLL_MS}); return; }}" in page


def test_no_string_of_the_pages_script_runs_over_a_line(sink: HttpViewSink) -> None:
    # A "\n" of the Python source became a newline inside a JavaScript string: a syntax error that stopped the
    # whole script, so the figures under the picture never showed in any browser.
    script = _get(sink.url)[1].decode().split("<script>")[1].split("</script>")[0]
    for line in script.splitlines():
        code = line.split("//")[0] if not line.lstrip().startswith("//") else ""
        assert code.count('"') % 2 == 0, line


class Viewer(threading.Thread):
    """Reads the MJPEG stream and decodes the first ``wanted`` JPEG parts."""

    def __init__(self, url: str, wanted: int) -> None:
        super().__init__(daemon=True)
        self.url, self.wanted = url, wanted
        self.frames: list[np.ndarray] = []
        self.connected = threading.Event()

    def run(self) -> None:
        with urllib.request.urlopen(self.url + "stream", timeout=HANG_S) as response:
            assert response.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
            self.connected.set()
            while len(self.frames) < self.wanted:
                headers = {}
                line = response.readline()
                while line in (b"\r\n", f"--{BOUNDARY}\r\n".encode()):
                    line = response.readline()
                if not line:
                    return  # the server ended the stream
                while line.strip():
                    key, _, value = line.decode().partition(":")
                    headers[key.strip().lower()] = value.strip()
                    line = response.readline()
                jpeg = response.read(int(headers["content-length"]))
                self.frames.append(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))


def _wait_until(condition: Callable[[], bool], poke: Callable[[], None] = lambda: None) -> bool:
    """Whether ``condition`` comes true within ``HANG_S``; ``poke`` runs between checks."""
    end = time.monotonic() + HANG_S
    while not condition():
        if time.monotonic() > end:
            return False
        poke()
        time.sleep(0.01)
    return True


def _wait_for_viewers(sink: HttpViewSink, count: int) -> None:
    assert _wait_until(lambda: sink.viewers >= count), f"{sink.viewers} of {count} viewers connected in {HANG_S:g} s"


def test_several_viewers_get_the_frames(sink: HttpViewSink) -> None:
    viewers = [Viewer(sink.url, 3) for _ in range(2)]
    for viewer in viewers:
        viewer.start()
    _wait_for_viewers(sink, 2)
    shade = 0
    while any(v.is_alive() for v in viewers):
        shade = (shade + 40) % 256
        sink.write(np.full((48, 64, 3), shade, np.uint8))
        for viewer in viewers:
            viewer.join(0.02)
    for viewer in viewers:
        assert len(viewer.frames) == 3
        assert viewer.frames[0].shape == (48, 64, 3)


def _stalled_client(port: int) -> socket.socket:
    """A client that asks for the stream and never reads; its receive buffer is tiny so the server's sends block."""
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    client.sendall(b"GET /stream HTTP/1.0\r\n\r\n")
    return client


def _run_stream(frames: list[np.ndarray], sink: HttpViewSink) -> dict[str, int]:
    summary: dict[str, int] = {}

    def run() -> None:
        summary.update(Stream(frames, FakeSegmenter(), sink, draw_stats=False).run())

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HANG_S)
    assert not worker.is_alive(), "the stream hung on a viewer"
    return summary


def test_a_stalled_client_does_not_slow_the_stream() -> None:
    # Noise compresses badly: every JPEG is about 1 MB, so a client that never reads fills its socket at once.
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(40)]
    results = {}
    for stalled in (False, True):
        view = HttpViewSink("127.0.0.1", 0)
        client = _stalled_client(view.port) if stalled else None
        reader = Viewer(view.url, 2)
        reader.start()
        reader.connected.wait(10)
        _wait_for_viewers(view, 2 if stalled else 1)
        results[stalled] = _run_stream(frames, view)
        reader.join(HANG_S)
        assert len(reader.frames) == 2, "a reading viewer got frames beside the stalled one"
        view.close()
        if client is not None:
            client.close()
    assert results[True]["written"] == results[False]["written"] == len(frames)
    assert results[True]["processed"] == results[False]["processed"] == len(frames)
    assert results[True]["dropped"] == results[False]["dropped"] == 0


def test_latest_frame_slot_skips_to_the_newest() -> None:
    slot = LatestFrame()
    for data in (b"a", b"b", b"c"):
        slot.put(data)
    assert slot.wait_newer(0, timeout=0.0) == (3, b"c")
    assert slot.wait_newer(3, timeout=0.0) is None
    slot.close()
    assert slot.wait_newer(0, timeout=0.0) is None


def test_busy_port_is_one_clear_error(sink: HttpViewSink) -> None:
    with pytest.raises(ValueError, match=f"cannot serve the live view on 127.0.0.1:{sink.port}"):
        HttpViewSink("127.0.0.1", sink.port)


def test_an_address_of_another_machine_is_not_called_a_busy_port() -> None:
    # 192.0.2.1 is reserved for documentation (RFC 5737), so no machine running the tests has it. The line said
    # "another live view or program listens there; pick another port", which no other port fixes.
    with pytest.raises(ValueError, match="192.0.2.1:8080: .*is not an address of this machine; serve on 127.0.0.1 "
                                         r"\(this machine only\) or 0.0.0.0 \(every interface\)") as error:
        HttpViewSink("192.0.2.1", 8080)
    assert "listens there" not in str(error.value)


def test_http_output_uri_opens_the_view() -> None:
    view = open_sink("http://127.0.0.1:0")
    try:
        assert isinstance(view, HttpViewSink) and view.url.startswith("http://127.0.0.1:")
        assert _get(view.url)[0] == 200
    finally:
        view.close()


def test_the_status_is_on_the_page_and_at_stats_until_the_first_result(sink: HttpViewSink) -> None:
    """During a Jetson's first TensorRT build (minutes) the stream tells the page what it does (pipeline.Stream): the
    page as served, for a client that runs no script too, and /stats, which the page's script polls, say it; once
    a result is shown, the figures replace it."""
    import json

    from unetrt.build_watch import BuildStep

    sink._server.clock = lambda: 1000.0  # the time so far counts to the moment asked: held still for the wording
    assert json.loads(_get(sink.url + "stats")[1]) == {"status": "waiting for the first frame"}
    assert '<pre id="stats">waiting for the first frame</pre>' in _get(sink.url)[1].decode()
    sink.set_status("building a TensorRT engine for camvid <FP16>", BuildStep("Tactic selection", 12, 40, 95.04))
    assert json.loads(_get(sink.url + "stats")[1]) == {
        "status": "building a TensorRT engine for camvid <FP16>",
        "build": {"phase": "Tactic selection", "done": 12, "steps": 40, "elapsed_s": 95.0}}
    assert ('<pre id="stats">building a TensorRT engine for camvid &lt;FP16&gt;\nTactic selection 12/40 (95 s so '
            "far)</pre>") in _get(sink.url)[1].decode()
    result = SimpleNamespace(index=0, fps=0.0, latency_ms=40.0, timings_ms={"inference": 31.5})
    sink.write_result(result, np.zeros((48, 64, 3), np.uint8))  # type: ignore[arg-type]
    sink.set_status("opening csi://0")  # late: the figures stay
    assert json.loads(_get(sink.url + "stats")[1])["frame"] == 0
    assert '<pre id="stats">streaming</pre>' in _get(sink.url)[1].decode()


def test_a_builds_time_so_far_moves_between_tensorrts_steps(sink: HttpViewSink) -> None:
    """One tactic's timing can hold TensorRT's step for a minute on a Jetson: the page said "95 s so far" for all of
    it, as if the build had hung. /stats and the page count the build's time to the moment they are asked."""
    import json

    from unetrt.build_watch import BuildStep

    now = [1000.0]
    sink._server.clock = lambda: now[0]
    sink.set_status("building a TensorRT engine for camvid FP16", BuildStep("Tactic selection", 12, 40, 95.04))
    now[0] += 42.0
    assert json.loads(_get(sink.url + "stats")[1])["build"] == {
        "phase": "Tactic selection", "done": 12, "steps": 40, "elapsed_s": 137.0}
    assert "Tactic selection 12/40 (137 s so far)" in _get(sink.url)[1].decode()
    sink.set_status("opening csi://0")  # the build is over: no time counted
    now[0] += 10.0
    assert json.loads(_get(sink.url + "stats")[1]) == {"status": "opening csi://0"}


def test_the_port_is_free_again_at_once_after_a_viewer_loaded_the_page() -> None:
    view = HttpViewSink("127.0.0.1", 0)
    port = view.port
    try:
        assert _get(view.url)[0] == 200  # the server closes first, so its side of the connection is in TIME_WAIT
    finally:
        view.close()
    again = HttpViewSink("127.0.0.1", port)
    try:
        assert _get(again.url)[0] == 200
        with pytest.raises(ValueError, match="another live view or program listens there"):
            HttpViewSink("127.0.0.1", port)  # reuse of the address never means sharing a listening port
    finally:
        again.close()


def test_a_connection_that_sends_no_request_is_closed() -> None:
    view = HttpViewSink("127.0.0.1", 0)
    try:
        # Three times the server's limit: only a server that never closes idle connections reaches it.
        with socket.create_connection(("127.0.0.1", view.port), timeout=3 * REQUEST_TIMEOUT_S) as idle:
            assert idle.recv(1024) == b""  # closed by the server
    finally:
        view.close()


def _request(port: int, path: str) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=HANG_S)
    connection.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    return connection


def _status_line(connection: socket.socket) -> bytes:
    return connection.makefile("rb").readline().strip()


def test_viewers_past_the_cap_get_503_and_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    view = HttpViewSink("127.0.0.1", 0, max_viewers=1)
    try:
        with _request(view.port, "/stream") as first:
            assert _status_line(first) == b"HTTP/1.0 200 OK"
            with caplog.at_level("WARNING", logger="unetrt.stream.webview"):
                with _request(view.port, "/stream") as second:
                    assert _status_line(second).startswith(b"HTTP/1.0 503")
                with _request(view.port, "/stream") as third:
                    assert _status_line(third).startswith(b"HTTP/1.0 503")
            assert _get(view.url)[0] == 200  # the page is still served
            refusals = [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]
            assert len(refusals) == 1 and "1 viewers watch" in refusals[0], refusals
    finally:
        view.close()
    with pytest.raises(ValueError, match="max_viewers must be at least 1"):
        HttpViewSink("127.0.0.1", 0, max_viewers=0)


def test_refusals_between_log_lines_are_counted_on_the_next(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    # A clock held still, then moved past REFUSAL_LOG_S: the 2 refusals in between are told on the next line.
    clock = [1000.0]
    monkeypatch.setattr(webview, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    view = HttpViewSink("127.0.0.1", 0)
    try:
        with caplog.at_level("WARNING", logger="unetrt.stream.webview"):
            for moment in (1000.0, 1001.0, 1002.0, 1000.0 + webview.REFUSAL_LOG_S):
                clock[0] = moment
                view._server.note_refusal("10.0.0.9", "8 viewers watch")
    finally:
        view.close()
    lines = [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]
    assert lines == ["live view refused 10.0.0.9 with 503: 8 viewers watch, the most it serves",
                     "live view refused 10.0.0.9 with 503: 8 viewers watch, the most it serves (and 2 more since the "
                     "last such line)"]


def test_connections_past_the_cap_get_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webview, "MAX_CONNECTIONS", 2)
    view = HttpViewSink("127.0.0.1", 0)
    try:
        idle = [socket.create_connection(("127.0.0.1", view.port), timeout=HANG_S) for _ in range(2)]
        with socket.create_connection(("127.0.0.1", view.port), timeout=HANG_S) as refused:
            assert _status_line(refused).startswith(b"HTTP/1.0 503")
        for connection in idle:
            connection.close()
    finally:
        view.close()


def test_closing_the_view_ends_every_viewers_stream() -> None:
    view = HttpViewSink("127.0.0.1", 0)
    with _request(view.port, "/stream") as viewer:
        _wait_for_viewers(view, 1)
        view.write(np.zeros((48, 64, 3), np.uint8))
        view.close()
        while viewer.recv(65536):  # a stream left open runs into the socket's timeout (HANG_S) and fails here
            pass


def test_a_viewer_that_leaves_frees_its_place() -> None:
    view = HttpViewSink("127.0.0.1", 0, max_viewers=1)
    try:
        with _request(view.port, "/stream") as first:
            assert _status_line(first) == b"HTTP/1.0 200 OK"
        # The server learns that the viewer left when it sends the next frame.
        frame = np.zeros((48, 64, 3), np.uint8)
        assert _wait_until(lambda: view.viewers == 0, lambda: view.write(frame)), "the viewer who left kept its place"
        with _request(view.port, "/stream") as second:
            assert _status_line(second) == b"HTTP/1.0 200 OK"
    finally:
        view.close()


def test_finished_requests_free_their_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webview, "MAX_CONNECTIONS", 2)
    view = HttpViewSink("127.0.0.1", 0)
    try:
        for _ in range(2 * webview.MAX_CONNECTIONS):
            assert _get(view.url + "stats")[0] == 200
            assert _wait_until(lambda: view._server.connections == 0), "a finished request kept its connection"
    finally:
        view.close()


def test_a_viewer_that_stops_reading_is_disconnected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webview, "SEND_TIMEOUT_S", 0.5)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)  # about 1 MB as JPEG: the socket fills at once
    view = HttpViewSink("127.0.0.1", 0)
    client = _stalled_client(view.port)
    try:
        _wait_for_viewers(view, 1)
        assert _wait_until(lambda: view.viewers == 0, lambda: view.write(frame)), "the stalled viewer was kept"
    finally:
        view.close()
        client.close()


def test_a_viewer_who_comes_back_never_gets_a_picture_from_before() -> None:
    # A reload: the picture left in the slot when the last viewer went was sent first to the next viewer, however
    # old it was, while /stats already told of the current frame.
    view = HttpViewSink("127.0.0.1", 0)
    try:
        first = Viewer(view.url, 1)
        first.start()
        _wait_for_viewers(view, 1)
        assert _wait_until(lambda: not first.is_alive(), lambda: view.write(np.full((48, 64, 3), 0, np.uint8)))
        assert _wait_until(lambda: view.viewers == 0, lambda: view.write(np.full((48, 64, 3), 0, np.uint8)))
        view.write(np.full((48, 64, 3), 100, np.uint8))  # nobody watches this one
        again = Viewer(view.url, 1)
        again.start()
        _wait_for_viewers(view, 1)
        assert _wait_until(lambda: not again.is_alive(), lambda: view.write(np.full((48, 64, 3), 200, np.uint8)))
        assert abs(int(again.frames[0].mean()) - 200) < 8, "the returning viewer first got a stale picture"
    finally:
        view.close()


def test_a_busy_port_is_refused_before_the_model_loads(sink: HttpViewSink, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # The port was first tried after the model had loaded (on a Jetson the first load builds a TensorRT engine for
    # minutes) and after a live source had been waited for; a model that does not load shows which came first.
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"not onnx")
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.png"), np.zeros((48, 64, 3), np.uint8))
    assert main([str(frames), f"http://127.0.0.1:{sink.port}", "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "broken.onnx" not in err, err
    assert err.strip().splitlines()[-1].startswith(f"error: cannot serve the live view on 127.0.0.1:{sink.port}")


def _bytes_queued_before_a_send_blocks(limit: bool) -> int:
    """What a non-blocking send to a client that reads nothing takes before it would block."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(server.getsockname())
        connection, _ = server.accept()
        with client, connection:
            if limit:
                webview.limit_unsent(connection)
            connection.setblocking(False)
            queued = 0
            try:
                while queued < 64 * 1024 * 1024:
                    queued += connection.send(bytes(64 * 1024))
            except BlockingIOError:
                pass
            return queued


def test_a_slow_viewer_is_not_sent_a_backlog_of_old_frames() -> None:
    # A send to a viewer returned once the frame fit in the kernel's send buffer, which grows to megabytes: a phone
    # on slow Wi-Fi was shown the frames queued there, seconds old, one after the other (60 of 60 frames of 64x64
    # noise written while it did not read reached it afterwards; 2 with the limit). Now little may wait unsent.
    unlimited = _bytes_queued_before_a_send_blocks(limit=False)
    limited = _bytes_queued_before_a_send_blocks(limit=True)
    assert limited <= 4 * webview.UNSENT_BYTES + 64 * 1024 < unlimited, (limited, unlimited)


def test_the_stream_is_sent_with_the_unsent_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    limited: list[socket.socket] = []
    monkeypatch.setattr(webview, "limit_unsent", limited.append)
    view = HttpViewSink("127.0.0.1", 0)
    try:
        assert _get(view.url + "stats")[0] == 200 and not limited  # a small reply needs no limit
        with _request(view.port, "/stream") as viewer:
            assert _status_line(viewer) == b"HTTP/1.0 200 OK"
            assert len(limited) == 1
    finally:
        view.close()


def test_a_viewer_that_leaves_while_no_frame_comes_frees_its_place() -> None:
    # A camera being reconnected sends no frame for seconds; viewers who closed the page (or reloaded it) then kept
    # their places until the next frame, so after max_viewers reloads the page showed "too many viewers" (503).
    view = HttpViewSink("127.0.0.1", 0, max_viewers=1)
    try:
        with _request(view.port, "/stream") as first:
            assert _status_line(first) == b"HTTP/1.0 200 OK"
        assert _wait_until(lambda: view.viewers == 0), "the viewer who left kept its place while no frame came"
        with _request(view.port, "/stream") as second:
            assert _status_line(second) == b"HTTP/1.0 200 OK"
    finally:
        view.close()


def test_a_discarded_frame_is_never_handed_to_a_viewer() -> None:
    # A viewer that comes while nobody watched (the frame discarded) and no new frame comes (a camera being
    # reconnected) waits; handed the empty slot once its wait timed out, its stream broke off.
    slot = webview.LatestFrame()
    slot.put(b"jpeg")
    slot.discard()
    assert slot.wait_newer(0, 0.01) is None
    slot.put(b"next")
    assert slot.wait_newer(0, 0.01) == (2, b"next")


def test_a_stream_that_ends_on_an_error_says_why_on_the_page(sink: HttpViewSink) -> None:
    """A robot operator watching the page when the stream stopped (a frame of NaN scores, a camera gone) read only
    'the stream has ended': /stats and the page now say why, and the page's script keeps that line and asks no more."""
    import json

    sink.end("the network gave NaN or infinite scores at 100 of 3072 pixels of frame 5 of the input (...)")
    status, body = _get(sink.url + "stats")
    assert status == 200 and json.loads(body) == {
        "status": "the stream has ended: the network gave NaN or infinite scores at 100 of 3072 pixels of frame 5 "
                  "of the input (...)", "ended": True}
    page = _get(sink.url)[1].decode()
    assert "the stream has ended: the network gave NaN or infinite scores at 100" in page
    assert ('if (stats.ended) { document.getElementById("stats").textContent = stats.status; return; }') in page


def test_stream_passes_its_error_to_the_live_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Stream hands the live view the one line its loop raises (here a network that gives NaN on frame 2)."""
    from nonfinite_models import write_nonfinite_onnx

    from unetrt import NonFiniteScoresError

    ended: list[str] = []
    original = HttpViewSink.end

    def spy(view: HttpViewSink, reason: str) -> None:
        ended.append(reason)
        original(view, reason)

    monkeypatch.setattr(HttpViewSink, "end", spy)
    model = write_nonfinite_onnx(tmp_path / "nan.onnx", "nan")
    frames = [np.full((48, 64, 3), 150, np.uint8) for _ in range(4)]
    frames[2][10:20, 10:20, 1] = 0
    with Stream(iter(frames), model, "http://127.0.0.1:0") as stream, pytest.raises(NonFiniteScoresError):
        for _ in stream:
            pass
    assert len(ended) == 1 and ended[0].startswith("the network gave NaN or infinite scores at 100 of 3072 pixels "
                                                   "of frame 2 of the input")
