#!/usr/bin/env bash
# Set up .venv and run everything CI runs: lint, types, tests (slow tests: add -m slow).
set -euo pipefail
source "$(dirname "$0")/_venv.sh" dev
ruff check .
ruff format --check .
mypy
pytest "$@"
