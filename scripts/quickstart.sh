#!/usr/bin/env bash
# Install selectflow, then run the curate flow on the embedded sample corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/selectflow run "$@"
