#!/usr/bin/env bash
# Install a Compose that can validate docker-compose.yml (tests/test_deploy.py) unless one
# is there: Docker's `docker compose` plugin, else Debian's docker-compose. Validating a
# file needs no Docker engine.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if docker compose version >/dev/null 2>&1; then
  echo "compose: $(docker compose version)"
  exit 0
fi
if ! command -v docker-compose >/dev/null; then
  echo "compose: installing Debian's docker-compose"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose
fi
echo "compose: $(docker-compose version --short)"
