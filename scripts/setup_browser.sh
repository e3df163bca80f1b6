#!/usr/bin/env bash
# Installs what the real-browser test needs: Debian's Chromium (/usr/bin/chromium). Idempotent.
# The playwright Python package that drives it comes with the dev extra (scripts/setup.sh); it is
# pointed at /usr/bin/chromium and never downloads a browser of its own.
# Without root or apt-get, the browser test is skipped with a message instead.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "enliven setup: installing Debian chromium for the browser test (once)..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "enliven setup: /usr/bin/chromium is missing and cannot be installed here (needs root and apt-get);" \
       "the browser test will be skipped. Install it with: sudo apt-get install chromium" >&2
fi
