#!/usr/bin/env bash
# Sets up enliven (first run: a few minutes) and runs it. With no arguments: the built-in demo.
# Any arguments go to the `enliven` command, e.g. `bash run.sh animate photo.jpg driving.mp4 -o out.mp4`.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/enliven "$@"
