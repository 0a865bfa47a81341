#!/usr/bin/env bash
# The main job: the bundled camvid model segments the bundled clip as a camera stream,
# on the fastest CPU path (OpenVINO INT8, installed by the openvino extra), writing an annotated video and
# printing the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "[demo 1/2] setting up .venv (the first run installs packages for several minutes; later runs skip it)"
scripts/setup_venv.sh export,openvino
mkdir -p out
echo "[demo 2/2] segmenting the bundled CamVid clip with the bundled camvid model into out/camvid_annotated.mp4"
exec .venv/bin/unet-stream sample out/camvid_annotated.mp4 --model camvid --overwrite "$@"
