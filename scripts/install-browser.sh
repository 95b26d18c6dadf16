#!/usr/bin/env bash
# Installs Debian's Chromium for the report's headless-browser test (tests/test_browser.py).
# Only as root on a Debian/Ubuntu machine; elsewhere it says what to do and carries on.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || echo "warning: could not install chromium; the browser test will fail in CI and be skipped elsewhere" >&2
else
  echo "note: Chromium not found; as root on Debian/Ubuntu run: apt-get install -y chromium" >&2
fi
exit 0
