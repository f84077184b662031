#!/usr/bin/env bash
# Regenerate constraints/ci.txt — the exact versions CI installs — from a virtual environment made as .ci/run makes it
# (torch==2.13.0 first, then every extra CI exercises). Run from the project root, then commit the file:
#     bash tools/update-constraints.sh
# CI installs with `-c constraints/ci.txt`, so an upstream release can neither break nor silence it until this is
# rerun on purpose. torch stays out: it is installed first, by its own pin.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install --quiet --upgrade pip
"$scratch/venv/bin/pip" install --quiet torch==2.13.0
"$scratch/venv/bin/pip" install --quiet -e ".[cpu,export,serve,bench,bulk,ray,test,docs,lint]"
{
    echo "# The versions CI installs (.ci/run: pip install -c constraints/ci.txt ...); regenerate with"
    echo "#     bash tools/update-constraints.sh"
    "$scratch/venv/bin/pip" freeze --exclude-editable | grep -v -i -E '^(torch|nvidia-.*|triton)=='
} > constraints/ci.txt
echo "wrote constraints/ci.txt ($(grep -c '==' constraints/ci.txt) packages)"
