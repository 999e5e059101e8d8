#!/usr/bin/env bash
# Set up .venv and run the main job: key server B and model server A as processes on
# localhost, a client running private inference over scikit-learn's digits test split.
# Extra arguments go to 'ppinfer demo' (for example --samples 50 or --bits 3072).
set -euo pipefail
source "$(dirname "$0")/_venv.sh" demo
ppinfer demo "$@"
