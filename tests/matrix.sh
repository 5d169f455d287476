#!/usr/bin/env bash
# `make test-matrix`: the whole suite on another supported Python, in its own .venv-X.Y.
#
#   tests/matrix.sh VERSION [PYTEST ARGS...]      e.g. tests/matrix.sh 3.13 -n 2
#
# The interpreter is pythonX.Y from pyenv's versions (as on the project's machines) or
# from PATH; the venv is built the way the Makefile builds .venv (the http-parser shim
# before pymesos) and rebuilt when pyproject.toml changes. Lint runs once, under `make test`.
set -euo pipefail

version=${1:?usage: tests/matrix.sh VERSION [PYTEST ARGS...]}
shift
cd "$(dirname "$0")/.."

find_python() {
    local candidate root
    if command -v pyenv >/dev/null 2>&1 && root=$(pyenv root 2>/dev/null); then
        for candidate in $(ls -d "$root"/versions/"$version"* 2>/dev/null | sort -V -r); do
            if [ -x "$candidate/bin/python$version" ]; then
                echo "$candidate/bin/python$version"
                return
            fi
        done
    fi
    candidate=$(command -v "python$version" 2>/dev/null || true)
    # A pyenv shim exists for every installed version but runs only the active ones: check it runs.
    if [ -n "$candidate" ] && "$candidate" -c 'import sys' >/dev/null 2>&1; then
        echo "$candidate"
    fi
}

python=$(find_python)
if [ -z "$python" ]; then
    echo "tests/matrix.sh: Python $version is not installed (pyenv install $version, or apt-get install python$version-venv)" >&2
    exit 1
fi
venv=.venv-$version
stamp=$venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ shims/http-parser/pyproject.toml -nt "$stamp" ]; then
    echo "building $venv with $python"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q ./shims/http-parser
    "$venv/bin/pip" install -q -e '.[dev,mesos]'
    "$venv/bin/pip" check
    touch "$stamp"
fi
echo "== the suite on $("$venv/bin/python" --version)"
exec "$venv/bin/pytest" "$@"
