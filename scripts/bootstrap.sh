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
# Reinstall only when the lock file changed since the last sync. Compiled to bytecode once, here: where
# PYTHONDONTWRITEBYTECODE is set no process writes .pyc files, so without them every server, worker process and
# CLI call would compile every module it imports from source again (seconds of CPU each, and a stop that waits
# for a worker process still importing).
stamp=.venv/.nbrelay-lock-compiled
if [ ! -f "$stamp" ] || ! cmp -s requirements.lock "$stamp"; then
  uv pip sync --quiet --compile-bytecode --python .venv/bin/python requirements.lock
  uv pip install --quiet --python .venv/bin/python --no-deps -e .
  cp requirements.lock "$stamp"
fi
# The project's own modules (an editable install: uv compiles none of them); stale ones are recompiled.
.venv/bin/python -m compileall -q -j 0 src >/dev/null
export PATH="$ROOT/.venv/bin:$PATH"
