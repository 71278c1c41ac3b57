#!/usr/bin/env bash
# Print the directory that holds ansible_collections/netbsd/pf for this checkout: the one place
# every entry point (integration scripts, benchmarks, molecule's Makefile target) asks.
#
#   tools/collections-path.sh [DIR]
#
# DIR if given, else $ANSIBLE_COLLECTIONS_PATH (its first entry), else build/ (the Makefile's
# copy) when it exists, else the ansible_collections tree this checkout sits in.  Exits 2 with a
# message when none holds netbsd.pf.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
collections=${1:-${ANSIBLE_COLLECTIONS_PATH:-}}
collections=${collections%%:*}
if [ -z "$collections" ]; then
    if [ -d "$repo/build/ansible_collections/netbsd/pf" ]; then
        collections=$repo/build
    elif [ "$(basename "$(dirname "$(dirname "$repo")")")" = ansible_collections ]; then
        collections=$(dirname "$(dirname "$(dirname "$repo")")")
    else
        echo "no collections path: run 'make copy' first, or give a directory holding ansible_collections/netbsd/pf (argument or ANSIBLE_COLLECTIONS_PATH)" >&2
        exit 2
    fi
fi
if [ ! -d "$collections/ansible_collections/netbsd/pf" ]; then
    echo "no ansible_collections/netbsd/pf in $collections" >&2
    exit 2
fi
echo "$collections"
