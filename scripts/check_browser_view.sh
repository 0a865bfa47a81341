#!/usr/bin/env bash
# CI: a real browser shows unet-stream's live view. Installs Debian's Chromium when it is missing, then runs the
# browser test (headless Chromium loads http://127.0.0.1:PORT/, two screenshots show the picture and that it moves).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null
command -v chromium >/dev/null || { echo "error: chromium could not be installed" >&2; exit 1; }
.venv/bin/python -m pytest -q -m browser tests/engine/stream/test_webview_browser.py
