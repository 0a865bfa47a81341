"""A loopback RTSP server for the network-source tests: GStreamer's RTSP server serving a test pattern.

Run by the tests with Debian's ``/usr/bin/python3`` (PyGObject and the GStreamer typelibs come
from the system packages that ``scripts/install_test_system_deps.sh`` installs), as::

    /usr/bin/python3 rtsp_server.py PORT

It serves ``rtsp://127.0.0.1:PORT/test`` (H.264, 160x120, 15 frames per second, a key frame each
second so a client that reconnects decodes again within a second), prints ``ready PORT`` once its
socket listens, and runs until it is terminated. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402  (versions must be chosen first)

MOUNT = "/test"
PIPELINE = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,framerate=15/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 bitrate=300 "
    "! rtph264pay name=pay0 pt=96 config-interval=1 )"
)


def main() -> int:
    """Serve until SIGTERM or SIGINT; exit 2 when the arguments or the port are unusable."""
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: rtsp_server.py PORT", file=sys.stderr)
        return 2
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(sys.argv[1])
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    server.get_mount_points().add_factory(MOUNT, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{sys.argv[1]}", file=sys.stderr)
        return 2
    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(f"ready {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
