#!/usr/bin/env bash
# Installs the Debian packages the dev servers and tests need, when they are missing and we are root.
# Usage: install-system-packages.sh node|test
set -euo pipefail
what=${1:-test}
need=()
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# the browser tests of the review UI drive Debian's chromium through Playwright
if [ "$what" = test ]; then
  command -v chromium >/dev/null || need+=(chromium)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages: ${need[*]} (install them, or run as root to have them installed)" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
