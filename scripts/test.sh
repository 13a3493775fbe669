#!/usr/bin/env bash
# Run the test suite (fast tests by default; pass -m "" to include slow ones, or any pytest arguments).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
# The HTML report test drives a real headless Chromium; on a bare Debian CI machine (root, apt) install one.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && ! command -v google-chrome >/dev/null \
    && [ -z "${CHROME_BIN:-}" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium for the report test (apt-get)..." >&2
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >/dev/null \
        || echo "warning: could not install chromium; the browser test of the report will fail" >&2
fi
if [ $# -eq 0 ]; then set -- -m "not slow"; fi
exec .venv/bin/python -m pytest "$@"
