#!/bin/sh
# The browser test (tests/e2e/test_web_browser.py) drives Debian's Chromium headless through the
# Chrome DevTools Protocol. Idempotent and quiet. DejaVu Sans Mono covers the box-drawing and
# block glyphs the dashboard draws (the page's own Roboto Mono does not have them all).
set -eu
export DEBIAN_FRONTEND=noninteractive
if ! command -v chromium >/dev/null 2>&1 || ! fc-list : family 2>/dev/null | grep -qi 'dejavu sans mono'; then
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core fontconfig >/dev/null
fi
chromium --version 2>/dev/null
