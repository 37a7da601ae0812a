#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests unless it is there (Playwright never
# downloads a browser: the tests launch this one with executable_path).
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  echo "browser: installing Debian's chromium"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
echo "browser: $(chromium --version 2>/dev/null || chromium-browser --version)"
