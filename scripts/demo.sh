#!/usr/bin/env bash
# Sets up fedseal (scripts/setup.sh) and runs fl-demo on its defaults: a 3-site, 3-round hospital
# federation on 127.0.0.1. Extra arguments go to fl-demo (see `fl-demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fl-demo "$@"
