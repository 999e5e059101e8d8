#!/usr/bin/env bash
# Set up .venv and run the main job. Until the end-to-end protocol lands this shows the
# installation and makes a key pair in a temporary folder.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" demo
ppinfer info
keys="$(mktemp -d)"
trap 'rm -rf "$keys"' EXIT
ppinfer keygen --bits 2048 --out "$keys"
