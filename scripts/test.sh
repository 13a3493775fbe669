#!/usr/bin/env bash
# Run the test suite: the fast tests, with any pytest arguments; -m slow runs the slow ones, -m "" everything.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false

# System packages some tests drive for real: a headless Chromium (the HTML report) and a PostgreSQL server (Prefect's
# production database). On a bare Debian machine (root, apt) install what is missing.
missing=()
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null \
    || [ -n "${CHROME_BIN:-}" ] || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} for the tests (apt-get)..." >&2
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null \
        || echo "warning: could not install ${missing[*]}; the tests that need them will fail" >&2
fi
# Slow tests only when asked for with -m (e.g. -m slow, or -m "" for everything).
case " $* " in *" -m "*) ;; *) set -- -m "not slow" "$@" ;; esac
exec .venv/bin/python -m pytest "$@"
