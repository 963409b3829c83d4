#!/bin/sh
# Installs the npm packages the web UI tests use (tests/web/node_modules):
# mailpit-api (a real Mailpit client) and playwright-core (drives Debian's
# /usr/bin/chromium; it downloads no browser).  Versions are pinned by
# package-lock.json.  Needs node and npm (Debian: apt-get install nodejs npm)
# and the npm registry.
set -eu
cd "$(dirname "$0")"
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
else
    npm install --no-audit --no-fund --loglevel=error
fi
