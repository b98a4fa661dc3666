# Shared by the benchmark scripts (sourced, not run).

# Waits until a homeserver at $1 answers /_matrix/client/versions (60 s at most).
wait_up() {
    for _ in $(seq 1 600); do
        curl -fs "$1/_matrix/client/versions" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "server at $1 did not come up" >&2
    return 1
}
