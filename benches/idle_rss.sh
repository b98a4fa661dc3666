#!/usr/bin/env bash
# Idle memory after start: resident set size (VmRSS) of a freshly started,
# idle server with an empty database, read from /proc after it answers
# /_matrix/client/versions and has then sat idle for IDLE_SECONDS.
#
#   benches/idle_rss.sh                      # Hearth (release build)
#   SYNAPSE_PYTHON=/path/to/venv/bin/python benches/idle_rss.sh   # and Synapse beside it
#
# Synapse: `python3 -m venv v && v/bin/pip install matrix-synapse`, sqlite, loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE_SECONDS=${IDLE_SECONDS:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --quiet --bin hearth
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

. benches/lib.sh
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

cat > "$work/hearth.toml" <<TOML
[[listeners]]
address = "127.0.0.1"
port = 18008
[database]
path = "$work/hearth-db"
TOML
"$CARGO_TARGET_DIR/release/hearth" --config "$work/hearth.toml" serve >"$work/hearth.log" 2>&1 &
hearth_pid=$!
wait_up http://127.0.0.1:18008
sleep "$IDLE_SECONDS"
echo "hearth  idle RSS: $(( $(rss_kib $hearth_pid) / 1024 )) MiB (pid $hearth_pid, after ${IDLE_SECONDS}s idle)"
kill -TERM $hearth_pid; wait $hearth_pid || true

if [ -n "${SYNAPSE_PYTHON:-}" ]; then
    mkdir -p "$work/synapse"
    (cd "$work" && "$SYNAPSE_PYTHON" -m synapse.app.homeserver --server-name localhost --config-path "$work/synapse/hs.yaml" \
        --data-directory "$work/synapse" --generate-config --report-stats=no >/dev/null)
    # Loopback only, on a port of its own.
    sed -i 's/port: 8008/port: 18009/; /^    - ::1$/d' "$work/synapse/hs.yaml"
    # Synapse writes homeserver.log to its working directory: keep it in $work.
    (cd "$work" && exec "$SYNAPSE_PYTHON" -m synapse.app.homeserver --config-path "$work/synapse/hs.yaml" >"$work/synapse.log" 2>&1) &
    synapse_pid=$!
    wait_up http://127.0.0.1:18009
    sleep "$IDLE_SECONDS"
    echo "synapse idle RSS: $(( $(rss_kib $synapse_pid) / 1024 )) MiB (pid $synapse_pid, after ${IDLE_SECONDS}s idle)"
    kill -TERM $synapse_pid; wait $synapse_pid || true
fi
