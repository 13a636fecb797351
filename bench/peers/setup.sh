#!/usr/bin/env bash
# Create bench/peers/.venv with fastdup, imagededup, cleanvision and scikit-image (not project dependencies).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$here/.venv/bin/python" ] || python3 -m venv "$here/.venv"
"$here/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
