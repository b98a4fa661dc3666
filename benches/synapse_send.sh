#!/usr/bin/env bash
# Sending throughput of Synapse, measured with the same client loop as
# Hearth's (`cargo bench --bench rooms -- --http URL SECRET`).
#
#   python3 -m venv /tmp/synapse && /tmp/synapse/bin/pip install matrix-synapse
#   SYNAPSE_PYTHON=/tmp/synapse/bin/python benches/synapse_send.sh
#
# Synapse runs on 127.0.0.1:18009 with SQLite, its generated defaults, and
# rate limits lifted (as the Hearth run lifts its own).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${SYNAPSE_PYTHON:?set SYNAPSE_PYTHON to a Python with matrix-synapse installed}"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

"$SYNAPSE_PYTHON" -m synapse.app.homeserver --server-name localhost --config-path "$work/hs.yaml" \
    --data-directory "$work" --generate-config --report-stats=no >/dev/null
sed -i 's/port: 8008/port: 18009/; /^    - ::1$/d' "$work/hs.yaml"
cat >> "$work/hs.yaml" <<YAML
registration_shared_secret: "bench-secret"
rc_message: {per_second: 1000000, burst_count: 1000000}
rc_registration: {per_second: 1000000, burst_count: 1000000}
rc_login:
  address: {per_second: 1000000, burst_count: 1000000}
  account: {per_second: 1000000, burst_count: 1000000}
  failed_attempts: {per_second: 1000000, burst_count: 1000000}
rc_joins:
  local: {per_second: 1000000, burst_count: 1000000}
YAML
"$SYNAPSE_PYTHON" -m synapse.app.homeserver --config-path "$work/hs.yaml" >"$work/synapse.log" 2>&1 &
for _ in $(seq 1 600); do
    curl -fs http://127.0.0.1:18009/_matrix/client/versions >/dev/null 2>&1 && break
    sleep 0.1
done
cargo bench --quiet --bench rooms -- --http http://127.0.0.1:18009 bench-secret
