#!/usr/bin/env bash
# `make mailcheck`: score the example campaign's messages with SpamAssassin.
# Installs SpamAssassin from Debian's packages when it is missing (needs root or sudo), then
# runs tools/mailcheck.py, which renders the messages and judges each score and rule.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v spamassassin >/dev/null 2>&1; then
    echo "mailcheck: installing SpamAssassin from Debian's packages"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq spamassassin >/dev/null
fi

exec .venv/bin/python tools/mailcheck.py "$@"
