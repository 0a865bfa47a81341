#!/usr/bin/env bash
# Debian packages the system-level checks need, installed once (nothing is fetched when all are present):
#   GStreamer's RTSP server, driven from Debian's python3 through PyGObject, with x264enc (network-source tests);
#   ffmpeg (H.264 writer and ffprobe); chromium (the live view in a real browser);
#   python3-opencv, python3-venv, python3-dev (the Jetson-style install with a system OpenCV).
# Tests that need them skip with a reason where they are missing, so this script is optional for development.
set -euo pipefail

packages=(
    python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-tools
    ffmpeg chromium python3-opencv python3-venv python3-dev
)
if ! command -v apt-get >/dev/null; then
    echo "install_test_system_deps.sh: no apt-get here; install these by hand: ${packages[*]}" >&2
    exit 1
fi
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "test system dependencies: all present"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "test system dependencies installed: ${missing[*]}"
