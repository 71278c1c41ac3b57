#!/usr/bin/env bash
# Create or refresh a tool virtualenv from a requirements file: rebuilt when the
# requirements file changed since the last install or the venv's Python is not
# the one asked for; left alone otherwise.
#
# Usage: tools/ensure-venv.sh VENV PYTHON REQUIREMENTS
set -euo pipefail

venv=$1
python=$2
requirements=$3
stamp=$venv/.requirements.stamp

version_of() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}

if [ -f "$stamp" ] && [ ! "$requirements" -nt "$stamp" ] \
    && [ "$(version_of "$venv/bin/python")" = "$(version_of "$python")" ]; then
    exit 0
fi
echo "Creating $venv with $python ($(basename "$requirements"))"
rm -rf "$venv"
"$python" -m venv "$venv"
log=$venv/pip-install.log
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" > "$log" 2>&1; then
    tail -n 20 "$log" >&2
    exit 1
fi
touch "$stamp"
