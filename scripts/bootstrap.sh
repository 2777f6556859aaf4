# Sourced by scripts/serve and scripts/test: a virtual environment with the exact locked versions.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check uv
fi
if [ ! -x .venv/bin/python ]; then
  uv venv --quiet --python 3.11 .venv
fi
# Reinstall only when the lock file changed since the last sync.
stamp=.venv/.nbrelay-lock
if [ ! -f "$stamp" ] || ! cmp -s requirements.lock "$stamp"; then
  uv pip sync --quiet --python .venv/bin/python requirements.lock
  uv pip install --quiet --python .venv/bin/python --no-deps -e .
  cp requirements.lock "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
