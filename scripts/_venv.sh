# Shared by scripts/demo.sh and scripts/test.sh: make .venv if needed and install
# ppinfer with the extras given as arguments. Re-running is cheap when nothing changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PPINFER_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
extras="$(IFS=,; echo "$*")"
"$VENV/bin/python" -m pip install --quiet -e "$ROOT[$extras]"
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
