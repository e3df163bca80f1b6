#!/usr/bin/env bash
# Creates .venv and installs enliven with its test tools. Idempotent: a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.enliven-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # The CPU build of torch first, by exact version: a bare "torch" would pull a multi-GB CUDA build.
  .venv/bin/pip install --disable-pip-version-check -q torch==2.13.0
  .venv/bin/pip install --disable-pip-version-check -q -e ".[dev]"
  touch "$stamp"
fi
