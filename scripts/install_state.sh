#!/usr/bin/env bash
# One hash of what an install of this checkout depends on: the lines on standard input (the installer's own
# settings), the installer script named as the argument, the packaging files, the list of package files (the
# strict editable install links each one) and the C++/CUDA sources of unetrt._tiling. setup_venv.sh and
# setup_jetson.sh keep it in their venv's stamp and skip pip while it is unchanged.
# Usage: echo "python=... flags" | bash scripts/install_state.sh scripts/INSTALLER.sh
# Run with sh (dash), 'set -o pipefail' below stops with a line that does not say bash runs this.
[ -n "${BASH_VERSION:-}" ] || { echo "error: $0 is a bash script: run it with bash $0" >&2; exit 2; }
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: ... | scripts/install_state.sh INSTALLER" >&2; exit 2; }
{
  cat
  cat setup.py pyproject.toml "$1" "$0"
  find engine export benchmarks -name '*.py' -o -name py.typed -o -path '*/models/*' -o -path '*/samples/*' | sort
  cat cpp_ext/*
} | sha256sum | cut -d' ' -f1
