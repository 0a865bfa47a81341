#!/usr/bin/env bash
# Set up .venv with the dev tools, OpenVINO (the default CPU engine), rosbags (ROS 2 bags) and Ray (unet-batch), then lint, type-check and run the tests.
# Run with sh (dash), 'set -o pipefail' below stops with a line that does not say bash runs this.
[ -n "${BASH_VERSION:-}" ] || { echo "error: $0 is a bash script: run it with bash $0" >&2; exit 2; }
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh export,dev,openvino,ros,ray
.venv/bin/ruff check .
bash scripts/typecheck.sh
.venv/bin/python -m pytest "$@"
