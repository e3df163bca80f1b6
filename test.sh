#!/usr/bin/env bash
# Sets up enliven with its test tools (first run: a few minutes) and runs the whole test suite.
# Extra arguments go to pytest, e.g. `bash test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
bash scripts/setup_browser.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
