#!/usr/bin/env bash
# Installs checkov into its own virtual environment, .venv/checkov (inside the ignored .venv).
#
# NOTE: checkov pins an old boto3 (checkov 3.3.30 wants boto3==1.35.49) that conflicts with the
# project's boto3 pin, so it cannot live in .venv itself. tests/infra/test_checkov.py runs
# .venv/checkov/bin/checkov when it exists and is skipped (with this script named) otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION="3.3.30"
VENV_DIR=".venv/checkov"
PYTHON="${PYTHON:-python3}"

if [ -x "$VENV_DIR/bin/checkov" ] && "$VENV_DIR/bin/checkov" --version | grep -qx "$CHECKOV_VERSION"; then
    echo "checkov $CHECKOV_VERSION already installed in $VENV_DIR"
    exit 0
fi

"$PYTHON" -m venv "$VENV_DIR"
"$VENV_DIR/bin/python" -m pip install --quiet --upgrade pip==25.3
"$VENV_DIR/bin/python" -m pip install --quiet "checkov==$CHECKOV_VERSION"
echo "checkov $("$VENV_DIR/bin/checkov" --version) installed in $VENV_DIR"
