# Sourced by scripts/test: the browser tests (tests/browser) drive Debian's Chromium through Python Playwright.
# Never `playwright install` (it downloads a browser build from outside the package registries).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

ensure_chromium() {
  if [ -x /usr/bin/chromium ]; then return 0; fi
  echo "installing Chromium (apt)" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  if [ ! -x /usr/bin/chromium ]; then
    echo "Chromium did not install: /usr/bin/chromium is missing" >&2; return 1
  fi
}
