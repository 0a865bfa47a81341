#!/usr/bin/env bash
# Copy this checkout's files (tracked, and new ones git does not ignore; no build outputs, no venvs) into an
# empty folder, for the checks that install unetrt in a venv of their own: an editable install builds
# unetrt._tiling in place, and in the checkout itself it would replace the developer's build (its CUDA kernels).
# Usage: scripts/copy_checkout.sh DEST
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: scripts/copy_checkout.sh DEST" >&2; exit 2; }
dest=$(realpath -m "$1")
cd "$(dirname "$0")/.."
rm -rf "$dest"
mkdir -p "$dest"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$dest"
