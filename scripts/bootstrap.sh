#!/usr/bin/env bash
# Make sure Python can build a virtualenv on a fresh Debian machine.
set -euo pipefail
python=${1:-python3}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v "$python" >/dev/null || ! "$python" -m venv --help >/dev/null 2>&1 \
   || ! "$python" -c 'import ensurepip' >/dev/null 2>&1; then
  echo "bootstrap: installing python3, venv and headers with apt-get"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-dev build-essential
fi
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "agentflow needs Python 3.11+"'
