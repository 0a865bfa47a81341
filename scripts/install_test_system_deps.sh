#!/usr/bin/env bash
# System packages the network-source tests need: GStreamer's RTSP server (driven from Debian's python3 through
# PyGObject) with the encoder it serves (x264enc). Debian/Ubuntu, run as root.
# Tests that need them skip with a reason where they are missing, so this script is optional for development.
set -euo pipefail

if ! command -v apt-get >/dev/null; then
    echo "install_test_system_deps.sh: no apt-get here; install GStreamer's RTSP server and PyGObject by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends \
    python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp \
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly \
    gstreamer1.0-tools >/dev/null
echo "test system dependencies installed"
