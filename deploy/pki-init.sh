#!/bin/sh
# The compose stack's one-shot PKI job (compose service `pki`; docs/operations.md).
# Idempotent: a second run keeps every key that exists and only fills in what is missing.
#
#   1. the federation's CA and the SuperLink/proxy server certificate  -> FEDSEAL_PKI_DIR (secret)
#      the CA certificate alone                                        -> FEDSEAL_TRUST_DIR (public)
#   2. the coordinator's ledger key                                    -> FEDSEAL_COORDINATOR_STATE
#      its public half, for auditors                                   -> FEDSEAL_LEDGER_PUBLIC_DIR
#   3. per demo site, in that site's own volume (what a site's IT team runs on its own machine):
#      `fl-client --site=NAME enroll` (identity, sealing and SuperNode keys); only the PUBLIC
#      halves are copied to FEDSEAL_ENROLMENT_DIR, which is all the coordinator ever reads.
#
# Every path comes from the environment (compose.yaml sets them), so the same script runs in the
# stack and, with other paths, in the tests.
set -eu

case "${1:-}" in
  -h|--help)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 0 ;;
esac

PKI=${FEDSEAL_PKI_DIR:?}
TRUST=${FEDSEAL_TRUST_DIR:?}
ENROL=${FEDSEAL_ENROLMENT_DIR:?}
LEDGER_PUBLIC=${FEDSEAL_LEDGER_PUBLIC_DIR:?}
SITE_CONFIGS=${FEDSEAL_SITE_CONFIGS:?}
SITE_STATES=${FEDSEAL_SITE_STATES:?}
export FEDSEAL_COORDINATOR_STATE=${FEDSEAL_COORDINATOR_STATE:?}
SITES=${FEDSEAL_SITES:?FEDSEAL_SITES must list the demo sites}

say() { echo "pki-init: $*" >&2; }

# The server certificate names every way the SuperLink is reached: `superlink` (coordinator,
# proxy, its own ServerApp via 127.0.0.1), `fleet-proxy` (sites) and, for sites outside this
# host, FEDSEAL_PUBLIC_HOST.
set -- --superlink-host superlink --superlink-host fleet-proxy \
       --superlink-host localhost --superlink-host 127.0.0.1
if [ -n "${FEDSEAL_PUBLIC_HOST:-}" ]; then
  set -- "$@" --superlink-host "$FEDSEAL_PUBLIC_HOST"
fi
fl-coordinator init-pki --out "$PKI" "$@"
cp "$PKI/ca.crt" "$TRUST/ca.crt"
chmod 0644 "$TRUST/ca.crt"
cp "$FEDSEAL_COORDINATOR_STATE/keys/ledger-public-key.hex" "$LEDGER_PUBLIC/ledger-public-key.hex"

for site in $(echo "$SITES" | tr ',' ' '); do
  config="$SITE_CONFIGS/$site.toml"
  state="$SITE_STATES/$site"   # the site config's state_dir
  fl-client --site "$site" --config "$config" enroll >/dev/null
  mkdir -p "$ENROL/$site"
  cp "$state/keys/site-public-keys.json" "$state/keys/node-auth.pub" "$ENROL/$site/"
  say "site $site: keys in its own volume; public halves in $ENROL/$site"
done

# 4. the federation manifest (members, modes, collusion bound), pinned at every site. A real
#    site's operator reviews it and compares its fingerprint out of band (`fl-client trust`);
#    this job plays every site's operator, as the demo does.
MANIFEST="$ENROL/manifest.json"
if [ ! -f "$MANIFEST" ]; then
  set --
  for site in $(echo "$SITES" | tr ',' ' '); do
    set -- "$@" "$ENROL/$site/site-public-keys.json"
  done
  fl-coordinator manifest --federation demo --out "$MANIFEST" --keys "$@" >/dev/null
fi
fingerprint=$(python3 -c 'import sys; from fedseal.contract.manifest import FederationManifest as M; print(M.from_bytes(open(sys.argv[1], "rb").read()).fingerprint)' "$MANIFEST")
for site in $(echo "$SITES" | tr ',' ' '); do
  fl-client --site "$site" --config "$SITE_CONFIGS/$site.toml" trust "$MANIFEST" \
    --yes "$fingerprint" >/dev/null
done
say "manifest $fingerprint pinned at every site"
say "done"
