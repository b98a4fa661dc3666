#!/usr/bin/env bash
# An HTTP benchmark run against Hearth and Synapse side by side: each runs as
# its own process on loopback, and the same client code
# (`cargo bench --bench BENCH -- --http URL SECRET [ARGS]`) drives both,
# with users made through shared-secret registration.
#
#   benches/against_synapse.sh rooms                 # sending throughput
#   benches/against_synapse.sh sync [ARGS]           # sync latency and cost
#   SYNAPSE_PYTHON=/tmp/synapse/bin/python benches/against_synapse.sh sync   # and Synapse
#   SYNAPSE_ARGS="--events 100"  gives Synapse its own sizes (it fills rooms slowly)
#
# (python3 -m venv /tmp/synapse && /tmp/synapse/bin/pip install matrix-synapse)
# Both run with their default storage (RocksDB; SQLite for Synapse) and with
# rate limits lifted, and each logs every request at INFO as it does by default.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:?usage: benches/against_synapse.sh rooms|sync [ARGS]}
shift
hearth_args=("$@")

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

. benches/lib.sh

cargo build --release --quiet --bin hearth
cargo bench --no-run --quiet --bench "$bench"

cat > "$work/hearth.toml" <<TOML
[[listeners]]
address = "127.0.0.1"
port = 18008
[database]
path = "$work/hearth-db"
[registration]
shared_secret = "bench-secret"
[rate_limits.login]
per_second = 1000000
burst_count = 1000000
[rate_limits.registration]
per_second = 1000000
burst_count = 1000000
[rate_limits.message]
per_second = 1000000
burst_count = 1000000
[rate_limits.room_creation]
per_second = 1000000
burst_count = 1000000
[rate_limits.membership]
per_second = 1000000
burst_count = 1000000
[rate_limits.typing]
per_second = 1000000
burst_count = 1000000
[rate_limits.to_device]
per_second = 1000000
burst_count = 1000000
[rate_limits.receipts]
per_second = 1000000
burst_count = 1000000
TOML
"$CARGO_TARGET_DIR/release/hearth" --config "$work/hearth.toml" serve >"$work/hearth.log" 2>&1 &
hearth_pid=$!
wait_up http://127.0.0.1:18008
echo "== Hearth (release, separate process)"
cargo bench --quiet --bench "$bench" -- --http http://127.0.0.1:18008 bench-secret "${hearth_args[@]}"
kill -TERM $hearth_pid; wait $hearth_pid || true

if [ -n "${SYNAPSE_PYTHON:-}" ]; then
    mkdir -p "$work/synapse"
    (cd "$work" && "$SYNAPSE_PYTHON" -m synapse.app.homeserver --server-name localhost --config-path "$work/synapse/hs.yaml" \
        --data-directory "$work/synapse" --generate-config --report-stats=no >/dev/null)
    sed -i 's/port: 8008/port: 18009/; /^    - ::1$/d; s/^registration_shared_secret:.*/registration_shared_secret: "bench-secret"/' \
        "$work/synapse/hs.yaml"
    # (The generated file does not end in a newline.)
    printf '\n' >> "$work/synapse/hs.yaml"
    cat >> "$work/synapse/hs.yaml" <<YAML
rc_message: {per_second: 1000000, burst_count: 1000000}
rc_registration: {per_second: 1000000, burst_count: 1000000}
rc_room_creation: {per_second: 1000000, burst_count: 1000000}
rc_login:
  address: {per_second: 1000000, burst_count: 1000000}
  account: {per_second: 1000000, burst_count: 1000000}
  failed_attempts: {per_second: 1000000, burst_count: 1000000}
rc_joins:
  local: {per_second: 1000000, burst_count: 1000000}
rc_joins_per_room: {per_second: 1000000, burst_count: 1000000}
rc_presence:
  per_user: {per_second: 1000000, burst_count: 1000000}
YAML
    # Synapse writes homeserver.log to its working directory: keep it in $work.
    (cd "$work" && exec "$SYNAPSE_PYTHON" -m synapse.app.homeserver --config-path "$work/synapse/hs.yaml" >"$work/synapse.log" 2>&1) &
    wait_up http://127.0.0.1:18009
    echo "== Synapse ($("$SYNAPSE_PYTHON" -c 'import synapse; print(synapse.__version__)'), SQLite)"
    cargo bench --quiet --bench "$bench" -- --http http://127.0.0.1:18009 bench-secret ${SYNAPSE_ARGS:-"${hearth_args[@]}"}
fi
