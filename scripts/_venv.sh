# Shared by scripts/demo.sh and scripts/test.sh: make .venv if needed and install
# ppinfer with the extras given as arguments. Re-running is cheap when nothing changed.
# pip's output goes to .venv/pip.log and is shown only if the install fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PPINFER_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setting up $VENV (first run: a few minutes)" >&2
  "$PYTHON" -m venv "$VENV"
fi
extras="$(IFS=,; echo "$*")"
if ! "$VENV/bin/python" -m pip install --upgrade --upgrade-strategy only-if-needed \
    -e "$ROOT[$extras]" >"$VENV/pip.log" 2>&1; then
  cat "$VENV/pip.log" >&2
  echo "installing ppinfer[$extras] failed; the pip output is above" >&2
  exit 1
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
