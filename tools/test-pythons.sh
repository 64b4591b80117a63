#!/usr/bin/env bash
# Runs the whole test suite on each Python version given (default: 3.12 and 3.13, the Lambda
# runtimes) that this machine has, each in a venv of its own, .venv/py<version> (inside the
# ignored .venv, so `make clean` removes them), installed as `make install` installs .venv.
#
# An interpreter is python<version> on PATH, else the newest pyenv version of that series.
# A version found nowhere is skipped with a note; the script fails if any suite failed, or
# if none of the versions was found. Extra pytest arguments: PYTEST_ARGS="-x -k ledger".
set -uo pipefail
cd "$(dirname "$0")/.."

interpreter() {
    local version="$1" release
    if "python$version" -c "" 2>/dev/null; then
        command -v "python$version"
        return
    fi
    command -v pyenv >/dev/null || return 1
    release=$(pyenv versions --bare | grep -E "^${version//./\\.}\.[0-9]+$" | sort -V | tail -1)
    [ -n "$release" ] && PYENV_VERSION="$release" pyenv which "python$version" 2>/dev/null
}

install() {
    local python="$1" venv="$2"
    if [ -f "$venv/.installed" ] && [ "$venv/.installed" -nt pyproject.toml ] \
        && [ "$venv/.installed" -nt constraints.txt ]; then
        return
    fi
    "$python" -m venv "$venv" \
        && "$venv/bin/python" -m pip install --quiet --upgrade pip==25.3 \
        && "$venv/bin/python" -m pip install --quiet -c constraints.txt -e '.[dev]' \
        && touch "$venv/.installed"
}

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.12 3.13)
failed=() ran=()
for version in "${versions[@]}"; do
    if ! python=$(interpreter "$version"); then
        echo "== Python $version: not found (no python$version on PATH or in pyenv), skipped"
        continue
    fi
    venv=".venv/py$version"
    echo "== Python $version ($("$python" -V 2>&1)) in $venv"
    if ! install "$python" "$venv"; then
        echo "== Python $version: installing the pinned dependencies failed"
        failed+=("$version")
        continue
    fi
    started=$SECONDS
    # shellcheck disable=SC2086  # PYTEST_ARGS is split into arguments on purpose
    "$venv/bin/pytest" -q -p no:cacheprovider ${PYTEST_ARGS:-} || failed+=("$version")
    ran+=("$version")
    echo "== Python $version: suite took $((SECONDS - started)) s"
done

if [ ${#ran[@]} -eq 0 ] && [ ${#failed[@]} -eq 0 ]; then
    echo "None of Python ${versions[*]} was found here." >&2
    exit 1
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "Failed on Python ${failed[*]}." >&2
    exit 1
fi
echo "The suite passed on Python ${ran[*]}."
