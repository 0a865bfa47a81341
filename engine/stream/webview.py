"""A live view in the browser: ``unet-stream SOURCE http://127.0.0.1:8080`` serves the annotated stream.

The page at ``/`` (also ``/index.html``) shows ``/stream``, a Motion JPEG stream
(``multipart/x-mixed-replace``), which every browser plays in a plain ``<img>`` with no plug-in, and
under it the live figures as text, which it polls from ``/stats`` (JSON: frame index, FPS, latency,
dropped frames, per-stage milliseconds; before the first frame, what the stream is doing, such as a first
TensorRT engine build and its progress: :meth:`HttpViewSink.set_status`). Nothing else is served: any other path
gets 404, and no file is ever read from disk. A browser holds at most six connections to one address for all its
tabs together (as HTTP/1.1, RFC 9112 section 9.4, lets clients limit them), so a page that is hidden gives its
stream back until it is shown again: any number of tabs then share a browser's connections.

The pipeline never waits for a viewer: :meth:`HttpViewSink.write` encodes the frame once and puts it
in a single latest-frame slot. Each viewer has its own thread that sends the newest frame whenever
its socket has taken the previous one, so a slow viewer skips frames, and a viewer that connects and
never reads blocks only its own thread until the send timeout closes its socket.

Limits: a connection that sends no request within ``REQUEST_TIMEOUT_S`` is closed; at most
``max_viewers`` streams are served at once and ``MAX_CONNECTIONS`` connections are open at once, and
past either a client gets HTTP 503 (with a log line, at most one per ``REFUSAL_LOG_S``). The port can
be listened on again at once after the stream ends (``SO_REUSEADDR``, as every server sets), while a
second live view on a port that one already listens on is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import html
import json
import logging
import select
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

import cv2
import numpy as np

if TYPE_CHECKING:
    from ..build_watch import BuildStep
    from .result import StreamResult

log = logging.getLogger(__name__)

BOUNDARY = "unetrtframe"
JPEG_QUALITY = 80
# Bytes of a viewer's stream that may wait unsent in the kernel (see limit_unsent): a small part of a frame.
UNSENT_BYTES = 16 * 1024
# A viewer whose socket takes no data for this long is disconnected.
SEND_TIMEOUT_S = 10.0
# A connection that sends no complete request line and headers within this long is closed.
REQUEST_TIMEOUT_S = 5.0
# Streams served at once (each costs a thread and a JPEG send per frame), and connections open at once.
MAX_VIEWERS = 8
MAX_CONNECTIONS = 64
# Refused clients get at most one log line per this many seconds (a flood must not flood the log).
REFUSAL_LOG_S = 10.0
BUSY_RESPONSE = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 5\r\n"
                 b"Connection: close\r\n\r\nunetrt live view: too many connections\n")
# How often a waiting viewer thread checks whether the sink was closed.
WAIT_POLL_S = 0.5
ALL_INTERFACES = ("0.0.0.0", "::", "")
LOOPBACK = ("127.0.0.1", "localhost", "::1")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>unetrt live view</title>
<style>body{{margin:0;background:#202020;color:#ddd;font:14px sans-serif}}
h1{{font-size:14px;font-weight:normal;margin:8px}}img{{display:block;max-width:100%;margin:0 8px}}
pre{{margin:8px;font:13px monospace}}</style>
</head><body><h1>unetrt: {title}</h1><img id="stream" src="/stream" alt="live segmentation">
<pre id="stats">{status}</pre>
<script>
function describe(s) {{
  const parts = ["frame " + s.frame];
  if (s.fps !== null) parts.push(s.fps.toFixed(1) + " FPS");
  parts.push("latency " + s.latency_ms.toFixed(0) + " ms", "dropped " + s.dropped);
  const stages = Object.entries(s.timings_ms).map(([name, ms]) => name + " " + ms.toFixed(1));
  return parts.join("  ") + (stages.length ? "\\nms per frame: " + stages.join("  ") : "");
}}
// Before the first frame: what the stream is doing (minutes of a first TensorRT build on a Jetson).
function describeStatus(s) {{
  const b = s.build;
  return s.status + (b ? "\\n" + b.phase + " " + b.done + "/" + b.steps + " (" + b.elapsed_s.toFixed(0) +
                     " s so far)" : "");
}}
// A browser opens at most 6 connections to one address, for all its tabs together, and each page watching holds
// one: a 6th tab left no connection for /stats and a 7th page never loaded. A hidden page (another tab in front,
// a minimised window) gives its stream back, and asks for no figures, until it is shown again.
// A page opened in the background (a middle click) is hidden from its start.
const stream = document.getElementById("stream");
function follow() {{
  if (document.hidden) stream.removeAttribute("src");
  else if (!stream.getAttribute("src")) stream.src = "/stream";
}}
document.addEventListener("visibilitychange", follow);
follow();
async function poll() {{
  if (document.hidden) {{ setTimeout(poll, {poll_ms}); return; }}
  try {{
    const stats = await (await fetch("/stats", {{cache: "no-store"}})).json();
    // Why the stream ended (an error's line): kept on the page, which asks no more.
    if (stats.ended) {{ document.getElementById("stats").textContent = stats.status; return; }}
    const shown = stats.frame !== undefined ? describe(stats) : stats.status ? describeStatus(stats) : null;
    if (shown !== null) document.getElementById("stats").textContent = shown;
  }} catch (error) {{
    document.getElementById("stats").textContent = "the stream has ended";
    return;
  }}
  setTimeout(poll, {poll_ms});
}}
poll();
</script></body></html>
"""
# How often the page asks for /stats.
STATS_POLL_MS = 500
# What /stats says before the stream says anything (HttpViewSink.set_status) or a frame comes.
STARTING_STATUS: dict[str, Any] = {"status": "waiting for the first frame"}
STREAMING_STATUS: dict[str, Any] = {"status": "streaming"}
# How long closing waits, with viewers connected, for a page to ask /stats once after the stream ended on an error:
# two of its polls, so that the reason is on the operator's screen rather than a bare "the stream has ended".
END_SHOWN_S = 2 * STATS_POLL_MS / 1000


class LatestFrame:
    """The newest encoded frame and its sequence number; viewers wait for a newer one.

    Example:
        >>> slot = LatestFrame()
        >>> slot.put(b"jpeg"); slot.wait_newer(0, timeout=0.0)
        (1, b'jpeg')
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._sequence = 0
        self._data: bytes | None = None
        self.closed = False

    def put(self, data: bytes) -> None:
        """Replace the frame (never blocks on viewers) and wake every waiting viewer."""
        with self._condition:
            self._sequence += 1
            self._data = data
            self._condition.notify_all()

    def discard(self) -> None:
        """Forget the frame: it is out of date, and the next viewer waits for a new one instead."""
        with self._condition:
            self._data = None

    def wait_newer(self, seen: int, timeout: float) -> tuple[int, bytes] | None:
        """The frame after ``seen``, waiting up to ``timeout`` seconds; None on timeout or when closed."""
        with self._condition:
            self._condition.wait_for(lambda: self.closed or (self._sequence > seen and self._data is not None),
                                     timeout)
            if self.closed or self._sequence <= seen or self._data is None:
                return None
            return self._sequence, self._data

    def close(self) -> None:
        """Wake every viewer so it ends."""
        with self._condition:
            self.closed = True
            self._condition.notify_all()


def limit_unsent(connection: socket.socket) -> None:
    """Let a send to a viewer return only once little of what it queued is unsent (``UNSENT_BYTES``).

    Without it a send returned as soon as the frame fit in the kernel's send buffer, which grows to megabytes:
    a viewer on a slow link (a phone on Wi-Fi) was shown the frames queued there, seconds old, instead of the
    newest one. ``TCP_NOTSENT_LOWAT`` (Linux, macOS) bounds only what waits, not what is in flight, so a fast
    link keeps its speed; elsewhere the send buffer itself is made small.
    """
    with contextlib.suppress(OSError):  # a socket already closed by the viewer: its first send says so
        if hasattr(socket, "TCP_NOTSENT_LOWAT"):
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, UNSENT_BYTES)
        else:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNSENT_BYTES)


class _ViewServer(ThreadingHTTPServer):
    daemon_threads = True
    # SO_REUSEADDR: the port is free again at once after a stream that had viewers (else TIME_WAIT holds it
    # for a minute). Linux and the BSDs still refuse a second listener on a port one listens on; Windows'
    # SO_REUSEADDR would let it share the port, so there SO_EXCLUSIVEADDRUSE is set instead
    # (https://learn.microsoft.com/windows/win32/winsock/using-so-reuseaddr-and-so-exclusiveaddruse).
    allow_reuse_address = sys.platform != "win32"

    def __init__(self, address: tuple[str, int], slot: LatestFrame, title: str, max_viewers: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.slot = slot
        self.title = html.escape(title)
        self.status = STARTING_STATUS
        self.stats_json = json.dumps(STARTING_STATUS).encode()
        # When the build being shown began (on ``clock``), so that its "s so far" moves between TensorRT's steps,
        # which a long tactic's timing holds for a minute and more on a Jetson; None without a build.
        self.build_began: float | None = None
        self.clock = time.monotonic
        self.max_viewers = max_viewers
        self.viewers = 0
        self.connections = 0
        self.viewers_lock = threading.Lock()
        self._refused = 0
        self._refusal_logged_at = -REFUSAL_LOG_S
        # Set by HttpViewSink.end; end_seen once /stats has said so to a page.
        self.ended = threading.Event()
        self.end_seen = threading.Event()
        super().__init__(address, _ViewHandler)

    def status_now(self) -> tuple[dict[str, Any], bytes]:
        """What the stream is doing, as a document and as ``/stats``'s JSON, a build's time counted to now."""
        with self.viewers_lock:
            status, stats, began = self.status, self.stats_json, self.build_began
        if began is None:
            return status, stats
        status = {**status, "build": {**status["build"], "elapsed_s": round(self.clock() - began, 1)}}
        return status, json.dumps(status).encode()

    def server_bind(self) -> None:
        if sys.platform == "win32":
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        super().server_bind()

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        """Refuse a connection past ``MAX_CONNECTIONS`` with a 503, without a thread; else serve it in one."""
        with self.viewers_lock:
            busy = self.connections >= MAX_CONNECTIONS
            if not busy:
                self.connections += 1
        if busy:
            self.note_refusal(client_address[0], f"{MAX_CONNECTIONS} connections are open")
            with contextlib.suppress(OSError):
                request.setblocking(False)  # never let a client that does not read stall the accept loop
                request.send(BUSY_RESPONSE)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.viewers_lock:
                self.connections -= 1

    def note_refusal(self, client: str, why: str) -> None:
        """One log line for refused clients, at most every ``REFUSAL_LOG_S`` seconds, counting the others."""
        now = time.monotonic()
        with self.viewers_lock:
            self._refused += 1
            if now - self._refusal_logged_at < REFUSAL_LOG_S:
                return
            refused, self._refused, self._refusal_logged_at = self._refused, 0, now
        others = f" (and {refused - 1} more since the last such line)" if refused > 1 else ""
        log.warning("live view refused %s with 503: %s, the most it serves%s", client, why, others)


class _ViewHandler(BaseHTTPRequestHandler):
    server: _ViewServer
    protocol_version = "HTTP/1.0"
    # Applied to the socket before the request is read (socketserver.StreamRequestHandler.setup): a client that
    # sends nothing is closed after this long instead of holding a thread and a descriptor forever.
    timeout = REQUEST_TIMEOUT_S
    routes: ClassVar[dict[str, str]] = {"/": "page", "/index.html": "page", "/stream": "stream", "/stats": "stats"}

    def do_GET(self) -> None:
        route = self.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_error(HTTPStatus.NOT_FOUND, "unetrt serves only /, /stream and /stats")
        elif route == "page":
            status, _ = self.server.status_now()
            # Rendered per request with the status of the moment: a page loaded during a first build says so at once,
            # also to a client that runs no script (curl).
            page = PAGE.format(title=self.server.title, poll_ms=STATS_POLL_MS, status=html.escape(status_text(status)))
            self._send_body(page.encode(), "text/html; charset=utf-8")
        elif route == "stats":
            ended = self.server.ended.is_set()
            _, stats = self.server.status_now()
            self._send_body(stats, "application/json")
            if ended:
                self.server.end_seen.set()
        else:
            self._send_stream()

    def _send_body(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _send_stream(self) -> None:
        with self.server.viewers_lock:
            full = self.server.viewers >= self.server.max_viewers
            if not full:
                self.server.viewers += 1
        if full:
            self.server.note_refusal(self.client_address[0], f"{self.server.max_viewers} viewers watch")
            self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, "too many viewers; try again later")
            return
        seen = 0
        try:
            self.connection.settimeout(SEND_TIMEOUT_S)
            limit_unsent(self.connection)
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            while True:
                newest = self.server.slot.wait_newer(seen, WAIT_POLL_S)
                if newest is None:
                    if self.server.slot.closed or self._viewer_left():
                        return
                    continue
                seen, jpeg = newest
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                self.wfile.write(head.encode() + jpeg + b"\r\n")
        except OSError:  # the viewer left, or stopped reading for SEND_TIMEOUT_S
            return
        finally:
            with self.server.viewers_lock:
                self.server.viewers -= 1

    def _viewer_left(self) -> bool:
        """Whether the viewer closed its connection (a page closed or reloaded) while no frame was sent.

        A send notices it too, but no frame may come for seconds (a camera being reconnected), and meanwhile the
        viewer kept its place among ``max_viewers``.
        """
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:  # reset by the viewer
            return True

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class HttpViewSink:
    """Serves the output frames as a live Motion JPEG view at ``http://HOST:PORT/``.

    Args:
        host: where to listen: '127.0.0.1' or 'localhost' (this machine only), '0.0.0.0' (every
            interface), or one address of this machine.
        port: the TCP port; 0 picks a free one (see :attr:`url`).
        title: shown on the page.
        max_viewers: streams served at once; the next viewer gets HTTP 503 and the log a line.

    Raises:
        ValueError: when the address cannot be listened on (another live view or program listens there, not
            this machine's address, no permission), or ``max_viewers`` is below 1.

    Example:
        >>> sink = HttpViewSink("127.0.0.1", 8080)  # doctest: +SKIP
        >>> sink.write(frame)  # every open page now shows it  # doctest: +SKIP
    """

    wants_stop = False

    def __init__(self, host: str, port: int, title: str = "live segmentation", max_viewers: int = MAX_VIEWERS) -> None:
        if max_viewers < 1:
            raise ValueError(f"max_viewers must be at least 1, got {max_viewers}")
        self._slot = LatestFrame()
        self._server = _listen(host, port, self._slot, title, max_viewers)
        self.port = int(self._server.server_address[1])
        self.host = host
        self._results = 0
        shown = f"[{host}]" if ":" in host else host
        self.name = f"http://{shown}:{self.port}/"
        self.url = self.name
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": WAIT_POLL_S},
                                        name="unetrt-webview", daemon=True)
        self._thread.start()
        if host in ALL_INTERFACES:
            reach = f"every network interface: other computers open http://THIS-MACHINE'S-ADDRESS:{self.port}/"
        elif host in LOOPBACK:
            reach = "this machine only"
        else:
            reach = f"address {host} only"
        log.info("live view at %s (%s)", self.url, reach)

    @property
    def viewers(self) -> int:
        """Viewers connected to the stream now."""
        with self._server.viewers_lock:
            return self._server.viewers

    def set_status(self, status: str, build: BuildStep | None = None) -> None:
        """Say what the stream is doing until its first result, on the page and at ``/stats``: ``{"status": ...}``,
        with ``"build": {"phase", "done", "steps", "elapsed_s"}`` while a TensorRT engine is built.

        Ignored once a result is shown: the page shows the stream and its figures then.

        Example:
            >>> sink.set_status("opening csi://0")  # doctest: +SKIP
        """
        document: dict[str, Any] = {"status": status}
        if build is not None:
            document["build"] = {**dataclasses.asdict(build), "elapsed_s": round(build.elapsed_s, 1)}
        with self._server.viewers_lock:
            if self._results == 0:
                self._server.status = document
                self._server.stats_json = json.dumps(document).encode()
                self._server.build_began = None if build is None else self._server.clock() - build.elapsed_s

    def write_result(self, result: StreamResult, image: np.ndarray) -> None:
        """Publish a stream result: its figures at ``/stats`` and its picture to every viewer (see :meth:`write`).

        Raises:
            OSError: when the picture cannot be encoded as JPEG.
        """
        self._results += 1
        stats = live_stats(result, dropped=result.index + 1 - self._results)
        with self._server.viewers_lock:
            self._server.stats_json = json.dumps(stats).encode()
            self._server.status = STREAMING_STATUS  # what a page loaded now says until its script shows the figures
            self._server.build_began = None
        self.write(image)

    def write(self, image: np.ndarray) -> None:
        """Publish a frame to every viewer; returns at once (the frame is skipped when nobody watches).

        Raises:
            OSError: when the frame cannot be encoded as JPEG.
        """
        if self.viewers == 0:
            # Frames nobody watches are not kept either: the next viewer (a reload) must not be shown the
            # picture that was current when the last one left, however long ago that was.
            self._slot.discard()
            return
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError(f"cannot encode a {image.shape} frame as JPEG for the live view")
        self._slot.put(jpeg.tobytes())

    def end(self, reason: str) -> None:
        """Say why the stream ended (an error's one line), on the page and at ``/stats``:
        ``{"status": "the stream has ended: REASON", "ended": true}``; an open page keeps it in place of the figures.
        :meth:`close` then waits up to ``END_SHOWN_S`` for a connected page to ask for it.

        Example:
            >>> sink.end("the network gave NaN or infinite scores at ...")  # doctest: +SKIP
        """
        document: dict[str, Any] = {"status": f"the stream has ended: {reason}", "ended": True}
        with self._server.viewers_lock:
            self._server.status = document
            self._server.stats_json = json.dumps(document).encode()
            self._server.build_began = None
        self._server.ended.set()

    def close(self) -> None:
        """Stop serving and end every viewer's stream (idempotent)."""
        if self._slot.closed:
            return
        if self._server.ended.is_set() and self.viewers:
            # Without this the server went away before a page's next poll, which then said only that it ended.
            self._server.end_seen.wait(END_SHOWN_S)
        self._slot.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        with contextlib.suppress(OSError):
            self._server.socket.close()



def _listen(host: str, port: int, slot: LatestFrame, title: str, max_viewers: int) -> _ViewServer:
    """A server listening on ``host:port``.

    Raises:
        ValueError: when it cannot listen there, in one line that says what to do.
    """
    try:
        return _ViewServer((host, port), slot, title, max_viewers)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            fix = ("(another live view or program listens there); pick another port (http://127.0.0.1:8081) or "
                   "stop what uses it")
        elif exc.errno == errno.EACCES:
            fix = ("(no permission to listen there: ports below 1024 need root, and on Windows another program "
                   "may hold the port); pick another port, e.g. http://127.0.0.1:8080")
        else:
            # An address of another machine, or a name that resolves to none: no other port fixes it.
            fix = (f"- {host} is not an address of this machine; serve on 127.0.0.1 (this machine only) or "
                   "0.0.0.0 (every interface)")
        raise ValueError(f"cannot serve the live view on {host}:{port}: {exc.strerror or exc} {fix}") from None


def status_text(status: dict[str, Any]) -> str:
    """A ``/stats`` status document in words, as the page's script writes it.

    Example:
        >>> status_text({"status": "building", "build": {"phase": "Tactic selection", "done": 4, "steps": 9,
        ...                                              "elapsed_s": 61.2}})
        'building\\nTactic selection 4/9 (61 s so far)'
    """
    build = status.get("build")
    if build is None:
        return str(status["status"])
    return f"{status['status']}\n{build['phase']} {build['done']}/{build['steps']} ({build['elapsed_s']:.0f} s so far)"


def live_stats(result: StreamResult, dropped: int) -> dict[str, Any]:
    """The figures the page shows for a result (JSON-ready): ``fps`` is None while not yet measured.

    Example:
        >>> live_stats(result, dropped=0)  # doctest: +SKIP
        {'frame': 41, 'fps': 24.9, 'latency_ms': 40.2, 'dropped': 0, 'timings_ms': {'capture': 1.1, ...}}
    """
    return {"frame": result.index, "fps": round(result.fps, 1) if result.fps > 0 else None,
            "latency_ms": round(result.latency_ms, 1), "dropped": dropped,
            "timings_ms": {stage: round(ms, 2) for stage, ms in result.timings_ms.items()}}
