#!/usr/bin/env bash
# Exim for the CHUNKING/DSN integration tests (tests/test_exim.py), for
# .ci/run (as root, with Debian's archive reachable):
#
#   bash tests/exim/provide.sh [DIR]
#
# Unpacks Debian's exim4-daemon-light (with dpkg -x: not installed, so no
# daemon, no Debian-exim user, no /etc/exim4 and no init script on the
# machine) into DIR (default /opt/gopherpost-exim), installs the shared
# libraries it links against, and checks that the binary runs.  The tests
# find it there, or where GOPHERPOST_EXIM names the exim4 binary.  Each test
# runs its own Exim from a private configuration in a temporary directory
# (tests/support/exim.py): exim_user root, its smtp transport as nobody,
# routed to GopherPost on a loopback port; nothing is left running.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

target=${1:-/opt/gopherpost-exim}
work=$(mktemp -d /tmp/gopherpost-exim.XXXXXX)
trap 'rm -rf "$work"' EXIT

deb=$(ls /var/cache/apt/archives/exim4-daemon-light_*.deb 2>/dev/null | tail -n 1 || true)
if [ -z "$deb" ]; then
    (cd "$work" && apt-get download exim4-daemon-light)
    deb=$(ls "$work"/exim4-daemon-light_*.deb | tail -n 1)
fi

# The libraries the binary needs (its Depends, but for the exim4 packages
# that would install and start the real thing).
depends=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/[(|].*//; s/ //g' | grep -v '^exim4' | grep -v '^$' || true)
if [ -n "$depends" ]; then
    # shellcheck disable=SC2086
    apt-get install -y --no-install-recommends $depends
fi

rm -rf "$target"
mkdir -p "$target"
dpkg -x "$deb" "$target"
"$target/usr/sbin/exim4" -bV | head -n 1
echo "exim: $target/usr/sbin/exim4"
