#!/usr/bin/env bash
# Sets up enliven with its test tools (first run: a few minutes) and runs the whole test suite.
# Extra arguments go to pytest, e.g. `bash test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")"
# cluster: Ray, so the suite runs the --cluster path on a local two-node Ray (tests/cluster, ~40 s)
ENLIVEN_EXTRAS=dev,cluster bash scripts/setup.sh
bash scripts/setup_browser.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
