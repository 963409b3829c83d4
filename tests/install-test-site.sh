#!/bin/sh
# Installs the test-only packages a Python lacks into tests/.site, where the
# tests find them (tests/support/webhooks.py): Debian has no package of the
# standardwebhooks library (the reference verifier of webhook signatures).
#
#   tests/install-test-site.sh [PYTHON]     (default /usr/bin/python3)
#
# CI's stage 2 runs it before Debian's python3 runs the suite.
set -eu
python=${1:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
    --target "$here/.site" 'standardwebhooks>=1.1,<2'
"$python" -c "import sys; sys.path.insert(0, '$here/.site'); import standardwebhooks; print('standardwebhooks', standardwebhooks.__version__, 'in', '$here/.site')"
