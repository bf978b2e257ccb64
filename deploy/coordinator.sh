#!/bin/sh
# The compose stack's coordinator job (compose service `coordinator`; docs/operations.md):
# enrol every site's public keys in the registry and register its SuperNode key with the
# SuperLink's node authentication (`fl-coordinator enroll`, idempotent), then submit the run
# and follow it to the end (`fl-coordinator start-run --wait`, which after a restart follows the
# run it submitted instead of submitting another). The rounds themselves are driven by fedseal's
# ServerApp, which the SuperLink runs; it writes the registry.
#
# Every path and address comes from the environment (compose.yaml sets them).
set -eu

case "${1:-}" in
  -h|--help)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 0 ;;
esac

ENROL=${FEDSEAL_ENROLMENT_DIR:?}
CA=${FEDSEAL_CA_CERT:?}
SUPERLINK=${FEDSEAL_SUPERLINK:?}
export FEDSEAL_COORDINATOR_STATE=${FEDSEAL_COORDINATOR_STATE:?}
SITES=${FEDSEAL_SITES:?FEDSEAL_SITES must list the demo sites}

# `flwr` reads its SuperLink connection from $FLWR_HOME/config.toml.
export FLWR_HOME="$FEDSEAL_COORDINATOR_STATE/flwr"
mkdir -p "$FLWR_HOME"
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "fedseal"

[superlink.fedseal]
address = "$SUPERLINK"
insecure = false
root-certificates = "$CA"
TOML

for site in $(echo "$SITES" | tr ',' ' '); do
  fl-coordinator enroll --site "$site" \
    --keys "$ENROL/$site/site-public-keys.json" \
    --auth-public-key "$ENROL/$site/node-auth.pub"
done

exec fl-coordinator start-run --wait \
  --scenario "${FEDSEAL_SCENARIO:-hospitals}" \
  --mode "${FEDSEAL_MODE:-he+ss}" \
  --rounds "${FEDSEAL_ROUNDS:-3}" \
  --steps "${FEDSEAL_STEPS:-30}"
