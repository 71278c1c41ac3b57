#!/usr/bin/env bash
# Build tools/bin: one pythonX.Y symlink per Python 3.8..3.13 found on this machine.
#
# ansible-test looks for pythonX.Y on PATH.  pyenv's shims fail outside
# `pyenv global` (and ansible-test strips PYENV_VERSION), so link the real
# interpreter binaries instead; fall back to non-shim interpreters on PATH.
set -euo pipefail

bin_dir="$(cd "$(dirname "$0")" && pwd)/bin"
pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
shopt -s nullglob
mkdir -p "$bin_dir"
rm -f "$bin_dir"/python3.*

found=()
for minor in 8 9 10 11 12 13; do
    name="python3.$minor"
    installed=("$pyenv_root"/versions/3."$minor".*/bin/"$name")
    # The newest patch release.
    candidate="$(printf '%s\n' "${installed[@]}" | sort -V | tail -n 1)"
    if [ -z "$candidate" ]; then
        while IFS= read -r path; do
            case "$path" in */shims/*|"$bin_dir"/*) continue ;; esac
            candidate="$path"; break
        done < <(type -a -p "$name" 2>/dev/null || true)
    fi
    if [ -n "$candidate" ]; then
        ln -s "$candidate" "$bin_dir/$name"
        found+=("3.$minor")
    fi
done

echo "Pythons for ansible-test (tools/bin): ${found[*]:-none}"
