#!/usr/bin/env bash
# Installs the offline data packages the tests and `make run` use (the Debian package dataset-fashion-mnist).
# Only as root on a Debian/Ubuntu machine; elsewhere it says what to do and carries on.
set -u
if [ -d /usr/share/datasets/fashion-mnist ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null \
    || echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST tests will be skipped" >&2
else
  echo "note: Fashion-MNIST not found; as root on Debian/Ubuntu run: apt-get install -y dataset-fashion-mnist" >&2
fi
exit 0
