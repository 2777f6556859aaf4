# Sourced by scripts/test: the deployment tests (tests/deploy) run Debian's nginx in front of a real server.
# The tests start their own nginx as the current user (`-p <tmp> -c <conf>`); no system service is used.

nginx_binary() {  # prints the path, or nothing (Debian puts it in /usr/sbin, not on every user's PATH)
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true
}

ensure_nginx() {
  if [ -n "$(nginx_binary)" ]; then return 0; fi
  echo "installing nginx (apt)" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq >/dev/null
  # nginx-light has what the recipe uses (ssl, proxy, map); releases without it ship only `nginx`.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null 2>&1 \
    || $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
  if [ -z "$(nginx_binary)" ]; then
    echo "nginx did not install: no nginx binary on PATH or in /usr/sbin" >&2; return 1
  fi
}
