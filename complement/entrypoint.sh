#!/bin/sh
# Writes Hearth's config for Complement from the environment, then runs it.
set -eu
cat > /hearth.toml <<TOML
server_name = "${SERVER_NAME:-hs1}"
log = "info"
[[listeners]]
address = "0.0.0.0"
port = 8008
[database]
path = "/data"
[registration]
enabled = true
shared_secret = "complement"
[rate_limits.login]
per_second = 1000
burst_count = 1000
[rate_limits.login_failures]
per_second = 1000
burst_count = 1000
[rate_limits.registration]
per_second = 1000
burst_count = 1000
[rate_limits.registration_checks]
per_second = 1000
burst_count = 1000
[rate_limits.message]
per_second = 1000
burst_count = 1000
TOML
exec /usr/local/bin/hearth --config /hearth.toml serve
