#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and links it at ./.venv.
#
# The environment is keyed by the hash of requirements/lock.txt and kept in a cache directory
# (default ~/.cache/msrcnn/venvs/<hash>), so every clone on a machine shares one 5 GB install
# and a second `make install` costs a second. MSRCNN_VENV_CACHE=local builds a real .venv in
# the repository instead. Safe to run concurrently (flock) and after an interrupted install.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=requirements/lock.txt
python=${PYTHON:-python3}
hash=$( (cat "$lock"; "$python" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)
cache=${MSRCNN_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/msrcnn/venvs}

if [ "$cache" = local ]; then
    target=$PWD/.venv
    [ -L .venv ] && rm .venv
else
    target=$cache/$hash
fi
if [ -f "$target/.msrcnn-complete" ] && [ "$(cat "$target/.msrcnn-complete")" = "$hash" ]; then
    [ "$cache" = local ] || ln -sfn "$target" .venv
    exit 0
fi

mkdir -p "$(dirname "$target")"
exec 9>"$target.lock"
flock 9
if [ ! -f "$target/.msrcnn-complete" ] || [ "$(cat "$target/.msrcnn-complete")" != "$hash" ]; then
    echo "msrcnn: creating the environment in $target (one-off, about 2 minutes)"
    rm -rf "$target"
    "$python" -m venv "$target"
    "$target/bin/python" -m pip install --quiet --disable-pip-version-check -r "$lock" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    echo "$hash" > "$target/.msrcnn-complete"
fi
if [ "$cache" != local ]; then
    if [ -e .venv ] && [ ! -L .venv ]; then
        echo "msrcnn: ./.venv exists and is not a link made by this script; remove it or set MSRCNN_VENV_CACHE=local" >&2
        exit 1
    fi
    ln -sfn "$target" .venv
fi
