# Sourced by scripts/test: the npm packages the browser tests load in Chromium (tests/browser/sockjs: the real
# sockjs-client). Installed from the lock with `npm ci`, again only when the lock is newer than node_modules.

ensure_npm_packages() {
  local dir="$ROOT/tests/browser/sockjs"
  if [ -d "$dir/node_modules" ] && [ "$dir/node_modules" -nt "$dir/package-lock.json" ]; then return 0; fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "installing npm (apt)" >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
  fi
  echo "npm ci (tests/browser/sockjs)" >&2
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  touch "$dir/node_modules"  # npm ci may keep the folder's old time; this marks it installed from this lock
}
