#!/usr/bin/env bash
# Sets up fedseal (scripts/setup.sh) and runs the linter and the whole test suite, the registry
# tests on SQLite and on PostgreSQL (a local server is started or installed when none answers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "fedseal tests: starting the local PostgreSQL server ..."
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "fedseal tests: installing PostgreSQL from Debian's packages ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && return 0
    sleep 1
  done
  return 1
}

# fl-audit's browser tests load its report in headless Chromium (Debian's package); they fail,
# never skip, without it.
ensure_chromium() {
  if [ -x /usr/bin/chromium ]; then return 0; fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "fedseal tests: installing Chromium from Debian's packages ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  [ -x /usr/bin/chromium ]
}

# The compose stack's fleet-only proxy is nginx; tests/deploy runs it with the stack's own config.
ensure_nginx() {
  if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then return 0; fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "fedseal tests: installing nginx from Debian's packages ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
  fi
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]
}

ensure_nginx || echo "fedseal tests: nginx is missing: the deployment tests will fail" >&2
ensure_chromium || echo "fedseal tests: /usr/bin/chromium is missing: the fl-audit browser tests will fail" >&2

if [ -z "${FEDSEAL_TEST_DATABASE_URL:-}" ]; then
  if ensure_postgres; then
    export FEDSEAL_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/postgres"
  else
    echo "fedseal tests: no PostgreSQL server answers on 127.0.0.1:5432" >&2
    exit 1
  fi
fi
echo "fedseal tests: registry tests also run on $FEDSEAL_TEST_DATABASE_URL"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 FLWR_TELEMETRY_ENABLED=0
ruff check fedseal tests bench
ruff format --check fedseal tests bench
# the import rules of docs/architecture.md, and types (strict on contract, privacy, secure_agg)
lint-imports
mypy
set +e
python -m pytest -q "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "fedseal tests: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
