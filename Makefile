# Hearth: `make run` starts the server, `make test` runs every test.
# Both first install what the build needs (clang/libclang for RocksDB).

CARGO ?= cargo
PYTHON ?= python3
# Build artefacts; .ci/run points this outside the clone so reruns are incremental.
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
VENV := $(CARGO_TARGET_DIR)/venv
# Synapse and matrix-nio with encryption, for `make interop` only.
INTEROP_VENV := $(CARGO_TARGET_DIR)/interop-venv
# playwright-core, for the browser tests of the admin console.
CONSOLE_DEPS := tests/console/node_modules/.ok

.PHONY: run test interop bench bench-admin bench-federation bench-media bench-search bench-sliding postgres deps build release check fmt clean

run: deps
	$(CARGO) run --release --bin hearth -- --config example.toml

build: deps
	$(CARGO) build

release: deps
	$(CARGO) build --release

# Rust unit and integration tests (the web console's in headless Chromium
# through playwright-core), then real Matrix clients: matrix-nio,
# push notifications through a WebPush gateway (Sygnal when SYGNAL names
# one: it is not on PyPI), third-party invites through an identity server,
# TURN credentials against a real coturn (Debian's, installed by `deps`),
# synadm (the admin CLI) against the admin API,
# and matrix-sdk (Element X's SDK) for end-to-end encryption, a separate
# package (tests/e2ee) so the server's own build never compiles the SDK.
# Benchmarks only have to compile here; `make bench` runs them.
test: deps $(VENV)/.ok $(CONSOLE_DEPS)
	$(CARGO) test
	$(CARGO) check --benches
	$(CARGO) build --bin hearth
	$(VENV)/bin/python tests/clients/nio_smoke.py $(CARGO_TARGET_DIR)/debug/hearth
	$(VENV)/bin/python tests/clients/push_gateway.py $(CARGO_TARGET_DIR)/debug/hearth
	$(VENV)/bin/python tests/clients/third_party_invites.py $(CARGO_TARGET_DIR)/debug/hearth
	$(VENV)/bin/python tests/clients/turn.py $(CARGO_TARGET_DIR)/debug/hearth
	$(VENV)/bin/python tests/clients/synadm_tool.py $(CARGO_TARGET_DIR)/debug/hearth
	$(CARGO) test -p hearth-e2ee-tests

# Hearth federating with a real Synapse (both on 127.0.0.1, TLS with a test
# CA): joins, messages, edits, reactions, redactions, invites, bans, history
# and end-to-end encryption between users of both; then two Hearth servers
# and a Synapse partitioned and healed with conflicting moderation, ending
# with the same state. Not part of `make test`
# (it installs Synapse); how to read it and the last results: docs/INTEROP.md.
interop: deps $(INTEROP_VENV)/.ok
	$(CARGO) build --bin hearth
	$(INTEROP_VENV)/bin/python tests/interop/synapse_interop.py $(CARGO_TARGET_DIR)/debug/hearth
	$(INTEROP_VENV)/bin/python tests/interop/synapse_partitions.py $(CARGO_TARGET_DIR)/debug/hearth

# Release-mode benchmarks; figures go to docs/PERFORMANCE.md.
bench: deps
	$(CARGO) bench --bench rooms
	$(CARGO) bench --bench sync
	benches/idle_rss.sh

# Federation against Synapse: remote joins of rooms of 1,000 and 10,000
# members, inbound PDUs through /send, catch-up after missed events. A
# resident Hearth (release) holds the rooms; the joiner is a fresh Hearth, a
# Synapse on SQLite and one on PostgreSQL (Debian's postgresql, installed when
# missing; the script starts its cluster and stops it again). About 30 min;
# figures and how to read them: docs/PERFORMANCE.md, "Federation".
bench-federation: deps postgres
	$(CARGO) build --release --bin hearth
	$(INTEROP_VENV)/bin/python benches/federation.py $(CARGO_TARGET_DIR)/release/hearth

# Media against Synapse (1.163.2 from the interop venv, on SQLite and on
# PostgreSQL, Debian's, installed when missing): upload and
# download throughput of 1 MiB and 50 MiB files, a 4000×3000 JPEG's first
# thumbnail, and each server's memory while 100 clients download one 50 MiB
# file at once. About 10 min; figures: docs/PERFORMANCE.md, "Media".
bench-media: deps postgres
	$(CARGO) build --release --bin hearth
	$(INTEROP_VENV)/bin/python benches/media.py $(CARGO_TARGET_DIR)/release/hearth \
		--synapse-python $(INTEROP_VENV)/bin/python --postgres

# The operator's side against Synapse (the interop venv's, on SQLite and on
# PostgreSQL): the admin API's user and room lists walked page by page over
# 100,000 users and 10,000 rooms, and purging expired messages (50,000 on
# every server; 1,000,000 on Hearth alone) while a client sends every 50 ms
# and another long-polls /sync. About 35 min as run for docs/PERFORMANCE.md
# (Synapse seeded past its first 2,000 users and 300 rooms by SQL, 10,000
# messages purged on every server); `ADMIN_BENCH_ARGS=` (all through
# Synapse's API, 50,000 messages) takes about 2 h.
ADMIN_BENCH_ARGS ?= --synapse-seed sql --shared-purge-events 10000 --baseline 30
bench-admin: deps postgres
	$(CARGO) build --release --bin hearth
	$(INTEROP_VENV)/bin/python benches/admin.py $(CARGO_TARGET_DIR)/release/hearth \
		--synapse-python $(INTEROP_VENV)/bin/python --postgres $(ADMIN_BENCH_ARGS)

bench-search: deps postgres
	$(CARGO) build --release --bin hearth
	$(INTEROP_VENV)/bin/python benches/search.py $(CARGO_TARGET_DIR)/release/hearth \
		--synapse-python $(INTEROP_VENV)/bin/python --postgres

bench-sliding: deps postgres
	$(CARGO) build --release --bin hearth
	$(CARGO) bench --no-run --bench sync
	$(INTEROP_VENV)/bin/python benches/sliding_sync.py $(CARGO_TARGET_DIR)/release/hearth \
		--synapse-python $(INTEROP_VENV)/bin/python --postgres

# Debian's PostgreSQL (Synapse's production database) and psycopg2 in the
# interop venv, for the benchmarks against Synapse on PostgreSQL.
postgres: $(INTEROP_VENV)/.ok
	@if ! command -v pg_ctlcluster >/dev/null; then \
		echo "make: installing postgresql (Synapse's database in the benchmarks)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq postgresql; \
	fi
	$(INTEROP_VENV)/bin/pip install -q psycopg2-binary

check: deps
	$(CARGO) check --all-targets

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

# librocksdb-sys needs clang and libclang; the TURN test needs coturn, the
# media test clamav-daemon; install them when missing.
deps:
	@command -v $(CARGO) >/dev/null || { echo "cargo is missing: install Rust (rustup) first"; exit 1; }
	@if ! command -v clang >/dev/null || ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then \
		echo "make: installing clang and libclang-dev (needed to build RocksDB)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq clang libclang-dev; \
	fi
	@if ! command -v turnserver >/dev/null; then \
		echo "make: installing coturn (the TURN server the call-credentials test starts)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq coturn; \
	fi
	@if ! command -v chromium >/dev/null || ! command -v npm >/dev/null; then \
		echo "make: installing chromium, nodejs and npm (the console's browser test)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium nodejs npm; \
	fi
	@if [ ! -x /usr/sbin/clamd ]; then \
		echo "make: installing clamav-daemon (the malware scanner the media test starts)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq clamav-daemon; \
	fi

$(CONSOLE_DEPS): tests/console/package-lock.json
	cd tests/console && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# A Python virtualenv with matrix-nio, the client library the smoke test drives.
$(VENV)/.ok: tests/clients/requirements.txt
	@if ! $(PYTHON) -m venv --help >/dev/null 2>&1; then \
		echo "make: installing python3-venv (needed for the client-library tests)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq python3 python3-venv; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r tests/clients/requirements.txt
	touch $@

# The interop test's virtualenv: Synapse, matrix-nio[e2e] (vodozemac wheels).
$(INTEROP_VENV)/.ok: tests/interop/requirements.txt
	@if ! $(PYTHON) -m venv --help >/dev/null 2>&1; then \
		echo "make: installing python3-venv (needed for the interop test)"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq python3 python3-venv; \
	fi
	$(PYTHON) -m venv $(INTEROP_VENV)
	$(INTEROP_VENV)/bin/pip install -q -r tests/interop/requirements.txt
	touch $@
