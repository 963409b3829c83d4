#!/usr/bin/env bash
# The real content filters the tests start (tests/filters/services.py):
# installs Debian's rspamd, SpamAssassin (spamd), ClamAV (clamd and
# clamav-milter) and OpenDKIM without letting their packages start a daemon
# or download anything (no freshclam: the tests use a one-line local
# signature database), then starts each once so that rspamd's Hyperscan
# cache is filled ($GOPHERPOST_TEST_CACHE, default /var/tmp/gopherpost-tests)
# and the tests' own starts take seconds.
#
# .ci/run calls it once, as root, before the trial stages:
#     bash tests/filters/services.sh
# Nothing here reaches the network but Debian's mirrors; the daemons listen
# on loopback ports only and every name they look up goes to a stub that
# answers NXDOMAIN.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
cd "$(dirname "$0")/../.."

packages=(rspamd spamassassin spamd spamc clamav-daemon clamav-milter opendkim opendkim-tools
    python3-twisted python3-cryptography python3-dkim)

# Packages must not start their daemons (no systemd here; invoke-rc.d would
# run the init scripts, and clamav-freshclam would download signatures).
policy=/usr/sbin/policy-rc.d
ownPolicy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    ownPolicy=yes
fi
cleanup() { [ -z "$ownPolicy" ] || rm -f "$policy"; }
trap cleanup EXIT

missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
fi

start=$SECONDS
/usr/bin/python3 -m tests.filters.services warm
echo "content filters installed and warmed up in $((SECONDS - start)) s"
