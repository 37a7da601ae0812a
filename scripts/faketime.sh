#!/usr/bin/env bash
# Install Debian's libfaketime unless it is there: the clock-skew tests run real worker
# processes whose clocks are hours off (LD_PRELOAD), as a misconfigured machine's would be.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then
  echo "faketime: installing Debian's faketime"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime
fi
echo "faketime: $(ls /usr/lib/*/faketime/libfaketime.so.1)"
