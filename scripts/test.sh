#!/usr/bin/env bash
# Set up .venv with the dev tools and OpenVINO (the default CPU engine), then lint, type-check and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh export,dev,openvino,ray
.venv/bin/ruff check .
bash scripts/typecheck.sh
.venv/bin/python -m pytest "$@"
