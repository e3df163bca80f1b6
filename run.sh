#!/usr/bin/env bash
# Sets up enliven (first run: a few minutes) and runs it. With no arguments: the server with the
# built-in photo on http://127.0.0.1:8080 (open it in a browser and allow the webcam).
# Any arguments go to the `enliven` command, e.g. `bash run.sh animate photo.jpg driving.mp4 -o out.mp4`.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
if [ $# -eq 0 ]; then
  set -- serve
fi
exec .venv/bin/enliven "$@"
