#!/usr/bin/env bash
# Creates .venv and installs enliven with its test tools. Idempotent: a second run is quick.
# ENLIVEN_EXTRAS picks the extras (default dev; test.sh adds cluster: Ray, for the --cluster tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extras=${ENLIVEN_EXTRAS:-dev}
stamp=".venv/.enliven-installed-${extras//,/-}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # The CPU build of torch first, by exact version: a bare "torch" would pull a multi-GB CUDA build.
  .venv/bin/pip install --disable-pip-version-check -q torch==2.13.0
  .venv/bin/pip install --disable-pip-version-check -q -e ".[$extras]"
  touch "$stamp"
fi
# OpenCV (via mediapipe) needs libGL; minimal Debian images may lack it.
if ! .venv/bin/python -c "import cv2" 2>/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq libgl1 libglib2.0-0 >/dev/null
  else
    echo "enliven setup: OpenCV cannot load; install libgl1 and libglib2.0-0 (Debian/Ubuntu)" >&2
    exit 1
  fi
fi
