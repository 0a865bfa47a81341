#!/usr/bin/env bash
# Set up .venv with the dev tools, OpenVINO (the default CPU engine), rosbags (ROS 2 bags) and Ray (unet-batch), then lint, type-check and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh export,dev,openvino,ros,ray
.venv/bin/ruff check .
bash scripts/typecheck.sh
.venv/bin/python -m pytest "$@"
