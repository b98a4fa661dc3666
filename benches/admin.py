"""Admin API benchmarks: the operator's side, Hearth against Synapse in the same run.

Usage: benches/admin.py PATH/TO/hearth [--synapse-python /tmp/synapse/bin/python [--postgres]]
                        [--only hearth|synapse] [--users N] [--rooms R]
                        [--shared-purge-events N] [--purge-events N] [--purge-rooms R]
                        [--baseline SECONDS] [--synapse-seed auto|api|sql] [--seed-budget SECONDS]
                        [--out FILE.md] [--keep]

Each server runs alone (Hearth; Synapse on SQLite; Synapse on PostgreSQL
with --postgres), every rate limit lifted, Hearth with `database.sync_writes`
off and `[retention] enabled = true` with a 30-day `interval` (so that a
pass only starts when asked), users made through shared-secret registration
or the admin API. One admin, one keep-alive connection, requests one after
another unless said otherwise.

Listing (--users, default 100,000, and --rooms, default 10,000):

  seed         users: PUT /_synapse/admin/v2/users/@uNNNNNN:localhost with a
               display name and no password (nothing to hash), 16 client
               threads; rooms: POST /createRoom (public_chat, named "Room
               NNNNN <word>") by 100 of those users (tokens through the admin
               API's log-in-as), every 10th room joined by 1-5 more of them.
               On Synapse the first 2,000 users and 300 rooms go through the
               API; when the rest would take longer than --seed-budget
               (default 1,800 s) at that rate (--synapse-seed auto), or always
               (sql), the rest is written into Synapse's tables while it is
               stopped, each row a copy of one the API made (users and
               profiles; rooms, room_stats_state and room_stats_current: what
               the room list reads, no events). The table says which.
  users: every page
               GET /_synapse/admin/v2/users?from=N&limit=100 from 0 until no
               next_token: p50 and p99 of one page, the total time, and a
               check that every user came exactly once.
  users: name= 50 searches (half a number fragment of user IDs, half a
               surname of the display names): p50, p99, results.
  users: order_by=creation_ts&dir=b
               50 pages, newest first (the pages from 0 on).
  rooms: every page, order_by=joined_members (50 pages), search_term= (50:
               half a number fragment, half a word of the names): the same
               for GET /_synapse/admin/v1/rooms.

Purging (--shared-purge-events, default 50,000, on every server;
--purge-events, default 1,000,000, on a fresh Hearth alone: sending a
million messages through Synapse's API takes hours on this machine; both over
--purge-rooms, default 1,000): 10 users (10 client threads) send the
messages round-robin into rooms they made, then

  retention pass
               Hearth: the rooms have m.room.retention {"max_lifetime": 1000};
               POST /_hearth/admin/v1/retention/run, then
               GET /_synapse/admin/v1/scheduled_tasks?action_name=retention
               every 250 ms until the job is complete; its
               result.events_pruned must be at least the messages sent.
               Synapse's retention purge runs on its own timer only, with no
               status to wait for, so it is not measured.
  purge_history of every room
               rooms without m.room.retention (on Hearth a second set, loaded
               alike): POST /_synapse/admin/v1/purge_history/{room} with
               purge_up_to_ts now and delete_local_events for every room one
               after another, then GET /_synapse/admin/v1/scheduled_tasks?
               action_name=purge_history every 500 ms until all are complete
               (each then checked with purge_history_status). Synapse runs
               five at a time (its task scheduler); Hearth all at once.
  sends, send → /sync
               while the server is idle (--baseline, default 60 s, after the
               load and, on Hearth, the search index catching up) and during
               each purge: one user sends a message every 50 ms into a room
               of its own (send latency p50, p99, max); a second user in that
               room alone long-polls /sync (the room's timeline only, limit
               100): the time from the send's start until /sync returned it
               (p50, p99, max; "missing" ones never came).

After each purge, the messages of one purged room still with a body are
counted through /messages (Hearth prunes to a redaction's stub; Synapse
deletes). Prints a Markdown table and writes it to --out if given.
"""

import argparse
import os
import random
import sys
import tempfile
import shutil
import threading
import time
import json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from federation import Postgres  # noqa: E402
from media import Client, Failure, Hearth, Synapse, q, say  # noqa: E402
from search import LoadingHearth, percentile, register, report  # noqa: E402

SERVER = "localhost"
SEED_THREADS = 16
CREATORS = 100
LOADERS = 10
QUERIES = 50
PAGE = 100
SYNAPSE_USER_PROBE = 2000
SYNAPSE_ROOM_PROBE = 300
RETENTION_MS = 1000
PROBE_INTERVAL = 0.05


class AdminHearth(LoadingHearth):
    """Hearth with retention on, its pass only when asked (a 30-day interval)."""

    def config(self):
        return super().config() + '\n[retention]\nenabled = true\ninterval = "30d"\n'


def user_id(i):
    return f"@u{i:06d}:{SERVER}"


def made_up_words(count, seed):
    rng = random.Random(seed)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    found, seen = [], set()
    while len(found) < count:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3)))
        if word not in seen:
            seen.add(word)
            found.append(word)
    return found


FIRST_NAMES = [w.capitalize() for w in made_up_words(300, 1)]
SURNAMES = [w.capitalize() + "son" for w in made_up_words(500, 2)]
ROOM_WORDS = made_up_words(200, 3)


def displayname(i):
    rng = random.Random(i)
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"


def room_name(r):
    return f"Room {r:05d} {ROOM_WORDS[(r * 7919) % len(ROOM_WORDS)]}"


def extra_members(r):
    """How many users besides its creator join room r."""
    return 1 + (r // 10) % 5 if r % 10 == 0 else 0


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def latencies(seconds):
    return f"p50 {ms(percentile(seconds, 0.5))}, p99 {ms(percentile(seconds, 0.99))}"


def call(client, method, path, body=None, ok=(200,)):
    payload = None if body is None else json.dumps(body).encode()
    status, _, data = client.request(method, path, payload, {"Content-Type": "application/json"})
    if status not in ok:
        raise Failure(f"{method} {path} answered {status}: {data[:500]!r}")
    return json.loads(data) if data else {}


def parallel(port, items, work, label, threads=SEED_THREADS, every=0):
    """work(client, item) for every item on `threads` threads, each with its
    own keep-alive connection (its token set per request); stops at the
    first failure, which it raises. The elapsed seconds."""
    items = list(items)
    lock = threading.Lock()
    position = iter(range(len(items)))
    state = {"done": 0, "error": None}
    started = time.perf_counter()

    def worker():
        client = Client(port)
        try:
            while True:
                with lock:
                    n = None if state["error"] else next(position, None)
                if n is None:
                    return
                try:
                    work(client, items[n])
                except Exception as e:  # noqa: BLE001 - raised below
                    with lock:
                        state["error"] = state["error"] or e
                    return
                with lock:
                    state["done"] += 1
                    done = state["done"]
                if every and done % every == 0:
                    rate = done / (time.perf_counter() - started)
                    say(f"{label}: {done:,} of {len(items):,} ({rate:,.0f}/s, "
                        f"{(len(items) - done) / rate:,.0f} s to go)")
        finally:
            client.close()

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(min(threads, max(1, len(items))))]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if state["error"]:
        raise state["error"]
    return time.perf_counter() - started


def as_admin(admin_token, work):
    def run(client, item):
        client.token = admin_token
        work(client, item)
    return run


# ---------------------------------------------------------------- Synapse's tables


class SynapseTables:
    """Rows written straight into a stopped Synapse's database, each a copy
    of a template row the API made with some columns changed."""

    def __init__(self, server):
        if server.database:
            import psycopg2
            import psycopg2.extras
            args = server.database["args"]
            self.db = psycopg2.connect(dbname=args["dbname"], user=args["user"], host=args["host"])
            self.mark = "%s"

            def insert(cursor, table, columns, rows):
                psycopg2.extras.execute_values(cursor, f"INSERT INTO {table} ({', '.join(columns)}) VALUES %s",
                                               rows, page_size=2000)
        else:
            import sqlite3
            self.db = sqlite3.connect(os.path.join(server.directory, "homeserver.db"))
            self.mark = "?"

            def insert(cursor, table, columns, rows):
                cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                                   f"({', '.join('?' * len(columns))})", rows)
        self.insert = insert

    def copy(self, table, key, template, changes):
        """Inserts one row per dict of `changes`, the rest of each copied from
        the row whose `key` is `template`."""
        cursor = self.db.cursor()
        cursor.execute(f"SELECT * FROM {table} WHERE {key} = {self.mark}", (template,))
        columns = [d[0] for d in cursor.description]
        row = cursor.fetchone()
        if row is None:
            raise Failure(f"no row of {table} with {key} = {template} to copy")
        unknown = set().union(*changes) - set(columns) if changes else set()
        if unknown:
            raise Failure(f"{table} has no column {sorted(unknown)}")
        self.insert(cursor, table, columns, [tuple(c.get(col, v) for col, v in zip(columns, row)) for c in changes])

    def close(self):
        self.db.commit()
        self.db.close()


# ---------------------------------------------------------------- listing


class Listing:
    def __init__(self, server, admin, users, rooms, args):
        self.server, self.admin, self.users, self.rooms, self.args = server, admin, users, rooms, args
        self.results, self.notes = {}, []
        self.synapse = isinstance(server, Synapse)

    def seed_mode(self):
        return self.args.synapse_seed if self.synapse else "api"

    def sql_needed(self, done, rate, total, what):
        """Whether the rest goes into the tables: --synapse-seed, and the ETA."""
        rest = total - done
        if rest <= 0 or self.seed_mode() == "api":
            return False
        eta = rest / rate
        say(f"{self.server.label}: {what} through the API at {rate:,.0f}/s: the other {rest:,} would take "
            f"{eta:,.0f} s (budget {self.args.seed_budget:,} s)")
        return self.seed_mode() == "sql" or eta > self.args.seed_budget

    def restart_for_tables(self, write):
        self.server.stop()
        tables = SynapseTables(self.server)
        try:
            write(tables)
        finally:
            tables.close()
        self.server.start()

    def seed_users(self):
        port, token = self.server.port, self.admin.token

        def put(client, i):
            call(client, "PUT", f"/_synapse/admin/v2/users/{q(user_id(i))}", {"displayname": displayname(i)},
                 ok=(200, 201))

        first = self.users if not self.synapse else min(self.users, SYNAPSE_USER_PROBE)
        elapsed = parallel(port, range(first), as_admin(token, put), "users", every=10_000)
        rate = first / elapsed
        cell = f"{first:,} through the API: {rate:,.0f} users/s ({elapsed:.0f} s)"
        if self.synapse and self.sql_needed(first, rate, self.users, "users"):
            now = int(time.time())
            template = user_id(1)

            def write(tables):
                started = time.perf_counter()
                rest = range(first, self.users)
                tables.copy("users", "name", template,
                            [{"name": user_id(i), "creation_ts": now + i // 100} for i in rest])
                tables.copy("profiles", "full_user_id", template,
                            [{"user_id": user_id(i)[1:].split(":")[0], "full_user_id": user_id(i),
                              "displayname": displayname(i)} for i in rest])
                say(f"{self.server.label}: {len(rest):,} users written in {time.perf_counter() - started:.1f} s")

            self.restart_for_tables(write)
            cell += (f"; the other {self.users - first:,} written into users and profiles while stopped "
                     f"(the API would have taken {(self.users - first) / rate:,.0f} s more)")
        self.results["seed: users"] = cell

    def seed_rooms(self):
        port = self.server.port
        creators = min(CREATORS, self.users)
        if creators == 0:
            raise Failure("rooms need --users of at least 1 (their creators)")
        tokens = [call(self.admin, "POST", f"/_synapse/admin/v1/users/{q(user_id(c))}/login", {})["access_token"]
                  for c in range(creators)]
        self.room_ids = {}
        joins = [0]
        lock = threading.Lock()

        def create(client, r):
            creator = r % creators
            client.token = tokens[creator]
            room = call(client, "POST", "/_matrix/client/v3/createRoom",
                        {"name": room_name(r), "preset": "public_chat"})["room_id"]
            with lock:
                self.room_ids[r] = room
            for j in range(1, extra_members(r) + 1):
                joiner = (creator + j) % creators
                if joiner == creator:
                    continue
                client.token = tokens[joiner]
                call(client, "POST", f"/_matrix/client/v3/join/{q(room)}", {})
                with lock:
                    joins[0] += 1

        first = self.rooms if not self.synapse else min(self.rooms, SYNAPSE_ROOM_PROBE)
        elapsed = parallel(port, range(first), create, "rooms", every=1000)
        rate = first / elapsed
        cell = (f"{first:,} through the API: {rate:,.1f} rooms/s ({elapsed:.0f} s, with {joins[0]:,} joins, "
                f"{creators} creators)")
        if self.synapse and self.sql_needed(first, rate, self.rooms, "rooms"):
            template_r = next(r for r in range(first) if extra_members(r) == 0)
            template = self.room_ids[template_r]

            def write(tables):
                rest = range(first, self.rooms)
                ids = {r: f"!seed{r:06d}{random.Random(r).randrange(1 << 30):08x}:{SERVER}" for r in rest}
                tables.copy("rooms", "room_id", template,
                            [{"room_id": ids[r], "creator": user_id(r % creators)} for r in rest])
                tables.copy("room_stats_state", "room_id", template,
                            [{"room_id": ids[r], "name": room_name(r)} for r in rest])
                cursor = tables.db.cursor()
                cursor.execute(f"SELECT joined_members, local_users_in_room, current_state_events FROM "
                               f"room_stats_current WHERE room_id = {tables.mark}", (template,))
                joined, local, state = cursor.fetchone()
                tables.copy("room_stats_current", "room_id", template,
                            [{"room_id": ids[r], "joined_members": joined + extra_members(r),
                              "local_users_in_room": local + extra_members(r),
                              "current_state_events": state + extra_members(r)} for r in rest])
                self.room_ids.update(ids)

            self.restart_for_tables(write)
            cell += (f"; the other {self.rooms - first:,} written into rooms, room_stats_state and "
                     f"room_stats_current while stopped (no events; the API would have taken "
                     f"{(self.rooms - first) / rate:,.0f} s more)")
        self.results["seed: rooms"] = cell

    def wait_listed(self):
        """Until the room list shows every room with its members (Synapse
        updates its room statistics in the background)."""
        most = 1 + max((extra_members(r) for r in range(self.rooms)), default=0)
        most = min(most, min(CREATORS, self.users))
        deadline = time.monotonic() + 600
        while True:
            total = call(self.admin, "GET", "/_synapse/admin/v1/rooms?limit=1")["total_rooms"]
            top = call(self.admin, "GET", "/_synapse/admin/v1/rooms?limit=1&order_by=joined_members")["rooms"]
            biggest = top[0]["joined_members"] if top else 0
            if total >= self.rooms and biggest >= most:
                return
            if time.monotonic() > deadline:
                raise Failure(f"the room list shows {total} rooms (of {self.rooms}), the largest with "
                              f"{biggest} members (of {most}) after 600 s")
            time.sleep(1)

    def timed(self, path):
        started = time.perf_counter()
        body = call(self.admin, "GET", path)
        return time.perf_counter() - started, body

    def walk(self, base, key, total_key, next_key, expected):
        call(self.admin, "GET", f"{base}?from=0&limit={PAGE}")  # warm-up
        times, seen, position, count, total = [], set(), 0, 0, None
        started = time.perf_counter()
        while True:
            elapsed, body = self.timed(f"{base}?from={position}&limit={PAGE}")
            times.append(elapsed)
            total = body[total_key]
            entries = body[key]
            count += len(entries)
            seen.update(e["name"] if key == "users" else e["room_id"] for e in entries)
            following = body.get(next_key)
            if following is None:
                break
            following = int(following)
            if following <= position or not entries:
                raise Failure(f"{base}?from={position}: {next_key} {following} with {len(entries)} entries")
            position = following
        wall = time.perf_counter() - started
        cell = f"{latencies(times)}; {len(times):,} pages in {wall:.1f} s ({total:,} {key})"
        problems = []
        if len(seen) != total or count != total:
            problems.append(f"{count:,} entries, {len(seen):,} distinct, total {total:,}")
        if total < expected:
            problems.append(f"total {total:,} < {expected:,} made")
        if problems:
            cell += " — WRONG: " + "; ".join(problems)
            self.notes.append(f"{self.server.label}: {base} paging: " + "; ".join(problems))
        return cell

    def queries(self, paths, count_of, check=None):
        self.timed(paths[0])  # warm-up
        times, found = [], []
        for path in paths:
            elapsed, body = self.timed(path)
            times.append(elapsed)
            found.append(count_of(body))
            if check:
                problem = check(body)
                if problem:
                    self.notes.append(f"{self.server.label}: {path}: {problem}")
        return f"{latencies(times)} ({sum(found) / len(found):,.1f} results)"

    def measure(self):
        rng = random.Random(17)
        users_base, rooms_base = "/_synapse/admin/v2/users", "/_synapse/admin/v1/rooms"
        if self.users:
            self.results["users: every page"] = self.walk(users_base, "users", "total", "next_token", self.users)
            terms = [f"{rng.randrange(max(1, self.users // 10)):05d}" if k % 2 == 0 else rng.choice(SURNAMES).lower()
                     for k in range(QUERIES)]
            self.results["users: name= search"] = self.queries(
                [f"{users_base}?from=0&limit={PAGE}&name={q(t)}" for t in terms], lambda b: b["total"])
            pages = max(1, -(-self.users // PAGE))

            def newest_first(body):
                stamps = [u["creation_ts"] for u in body["users"]]
                return None if stamps == sorted(stamps, reverse=True) else "creation_ts not descending"

            self.results["users: order_by=creation_ts&dir=b"] = self.queries(
                [f"{users_base}?from={(k % pages) * PAGE}&limit={PAGE}&order_by=creation_ts&dir=b"
                 for k in range(QUERIES)], lambda b: len(b["users"]), newest_first)
        if self.rooms:
            self.results["rooms: every page"] = self.walk(rooms_base, "rooms", "total_rooms", "next_batch",
                                                          self.rooms)
            pages = max(1, -(-self.rooms // PAGE))

            def largest_first(body):
                sizes = [r["joined_members"] for r in body["rooms"]]
                return None if sizes == sorted(sizes, reverse=True) else "joined_members not descending"

            self.results["rooms: order_by=joined_members"] = self.queries(
                [f"{rooms_base}?from={(k % pages) * PAGE}&limit={PAGE}&order_by=joined_members"
                 for k in range(QUERIES)], lambda b: len(b["rooms"]), largest_first)
            terms = [f"{rng.randrange(max(1, self.rooms // 10)):04d}" if k % 2 == 0 else rng.choice(ROOM_WORDS)
                     for k in range(QUERIES)]
            self.results["rooms: search_term="] = self.queries(
                [f"{rooms_base}?from=0&limit={PAGE}&search_term={q(t)}" for t in terms],
                lambda b: b["total_rooms"])

    def run(self):
        started = time.perf_counter()
        if self.users:
            self.seed_users()
            say(f"{self.server.label}: {self.results['seed: users']}")
        if self.rooms:
            self.seed_rooms()
            say(f"{self.server.label}: {self.results['seed: rooms']}")
            self.wait_listed()
        say(f"{self.server.label}: seeded in {time.perf_counter() - started:.0f} s; listing")
        started = time.perf_counter()
        self.measure()
        say(f"{self.server.label}: listed in {time.perf_counter() - started:.0f} s")


# ---------------------------------------------------------------- sends and syncs meanwhile


class Probe:
    """A user sending a message every 50 ms into a room of its own, and a
    second user in that room alone long-polling /sync; each message's send
    latency and its send → /sync delivery."""

    def __init__(self, port):
        self.chatter, _ = register(port, "chatter")
        self.watcher, _ = register(port, "watcher")
        self.room = call(self.chatter, "POST", "/_matrix/client/v3/createRoom",
                         {"preset": "public_chat", "name": "probe"})["room_id"]
        call(self.watcher, "POST", f"/_matrix/client/v3/join/{q(self.room)}", {})
        self.filter = json.dumps({
            "room": {"rooms": [self.room], "timeline": {"limit": 100}, "state": {"lazy_load_members": True},
                     "ephemeral": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}},
            "presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]},
        }, separators=(",", ":"))
        self.sent, self.latency, self.arrived = {}, {}, {}
        self.errors, self.limited = [], 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []

    def sync(self, since=None, timeout=30000):
        path = f"/_matrix/client/v3/sync?timeout={timeout}&filter={q(self.filter)}"
        if since:
            path += f"&since={q(since)}"
        return call(self.watcher, "GET", path)

    def start(self):
        self.since = self.sync(timeout=0)["next_batch"]
        self.threads = [threading.Thread(target=self.send_loop, daemon=True),
                        threading.Thread(target=self.sync_loop, daemon=True)]
        for t in self.threads:
            t.start()

    def send_loop(self):
        n, due = 0, time.perf_counter()
        while not self.stopping.is_set():
            started = time.perf_counter()
            with self.lock:
                self.sent[n] = started
            try:
                call(self.chatter, "PUT", f"/_matrix/client/v3/rooms/{q(self.room)}/send/m.room.message/probe{n}",
                     {"msgtype": "m.text", "body": f"probe {n}"})
                self.latency[n] = time.perf_counter() - started
            except Exception as e:  # noqa: BLE001 - counted, the probe goes on
                self.errors.append(f"send {n}: {e}")
                self.chatter.close()
            n += 1
            due = max(due + PROBE_INTERVAL, time.perf_counter())
            self.stopping.wait(max(0.0, due - time.perf_counter()))

    def sync_loop(self):
        since = self.since
        while True:
            try:
                body = self.sync(since)
            except Exception as e:  # noqa: BLE001
                if self.stopping.is_set():
                    return
                self.errors.append(f"sync: {e}")
                self.watcher.close()
                time.sleep(0.1)
                continue
            now = time.perf_counter()
            since = body["next_batch"]
            timeline = body.get("rooms", {}).get("join", {}).get(self.room, {}).get("timeline", {})
            self.limited += bool(timeline.get("limited"))
            done = False
            for event in timeline.get("events", []):
                text = event.get("content", {}).get("body", "")
                if text == "probe done":
                    done = True
                elif text.startswith("probe "):
                    self.arrived.setdefault(int(text[6:]), now)
            if done:
                return

    def stop(self):
        self.stopping.set()
        self.threads[0].join()
        try:
            call(self.chatter, "PUT", f"/_matrix/client/v3/rooms/{q(self.room)}/send/m.room.message/done",
                 {"msgtype": "m.text", "body": "probe done"})
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"last send: {e}")
        self.threads[1].join(60)

    def window(self, start, end):
        """(send cell, delivery cell) for the messages sent in [start, end)."""
        with self.lock:
            ids = [n for n, at in self.sent.items() if start <= at < end]
        sends = [self.latency[n] for n in ids if n in self.latency]
        deliveries = [self.arrived[n] - self.sent[n] for n in ids if n in self.arrived]
        span = f"{end - start:.1f} s"
        if not sends:
            return f"no send in {span}", ""
        send = f"{latencies(sends)}, max {ms(max(sends))} ({len(sends)} sends in {span})"
        if len(sends) < len(ids):
            send += f", {len(ids) - len(sends)} failed"
        if not deliveries:
            return send, "none arrived"
        delivery = f"{latencies(deliveries)}, max {ms(max(deliveries))}"
        if len(deliveries) < len(ids):
            delivery += f", {len(ids) - len(deliveries)} of {len(ids)} missing"
        return send, delivery


# ---------------------------------------------------------------- purging


class Purge:
    """Messages loaded into rooms, then purged while the probe runs."""

    def __init__(self, server, admin, events, rooms, modes, baseline):
        self.server, self.admin, self.events, self.rooms = server, admin, events, rooms
        self.modes, self.baseline = modes, baseline
        self.results, self.notes = {}, []
        self.hearth = isinstance(server, Hearth)

    def setup(self):
        port = self.server.port
        self.loaders = [register(port, f"loader{k}")[0] for k in range(LOADERS)]
        self.room_ids = {}
        for mode in self.modes:
            retention = [{"type": "m.room.retention", "state_key": "",
                          "content": {"max_lifetime": RETENTION_MS}}] if mode == "retention" else []
            ids = [None] * self.rooms

            def create(client, r, mode=mode, retention=retention, ids=ids):
                client.token = self.loaders[r % LOADERS].token
                ids[r] = call(client, "POST", "/_matrix/client/v3/createRoom",
                              {"preset": "private_chat", "name": f"{mode} {r}", "initial_state": retention})["room_id"]

            parallel(port, range(self.rooms), create, f"{mode} rooms", threads=LOADERS)
            self.room_ids[mode] = ids
        say(f"{self.server.label}: {self.rooms:,} rooms for each of {', '.join(self.modes)}")

    def load(self):
        port = self.server.port
        total = self.events * len(self.modes)
        counter = iter(range(total))
        lock = threading.Lock()
        started = time.perf_counter()

        def send(client, k):
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                mode = self.modes[n // self.events]
                m = n % self.events
                r = m % self.rooms
                client.token = self.loaders[r % LOADERS].token
                call(client, "PUT", f"/_matrix/client/v3/rooms/{q(self.room_ids[mode][r])}/send/m.room.message/"
                     f"{mode[0]}{m}", {"msgtype": "m.text", "body": f"a message that expires, number {m}"})
                if n and n % 50_000 == 0:
                    rate = n / (time.perf_counter() - started)
                    say(f"{self.server.label}: {n:,} of {total:,} sent ({rate:,.0f}/s, "
                        f"{(total - n) / rate:,.0f} s to go)")

        parallel(port, range(LOADERS), send, "load", threads=LOADERS)
        elapsed = time.perf_counter() - started
        self.results["purge: load"] = (f"{total:,} messages into {self.rooms * len(self.modes):,} rooms: "
                                       f"{total / elapsed:,.0f} messages/s ({elapsed:.0f} s)")
        say(f"{self.server.label}: {self.results['purge: load']}")

    def wait_indexed(self):
        if not self.hearth:
            return
        deadline = time.monotonic() + 3600
        while True:
            status = call(self.admin, "GET", "/_hearth/admin/v1/search")
            if status["indexed_position"] >= status["stream_position"] and not status["rebuild_pending"]:
                return
            if time.monotonic() > deadline:
                raise Failure(f"the search index did not catch up: {status}")
            time.sleep(1)

    def tasks(self, action):
        return call(self.admin, "GET", f"/_synapse/admin/v1/scheduled_tasks?action_name={action}")["scheduled_tasks"]

    def retention_pass(self):
        job = call(self.admin, "POST", "/_hearth/admin/v1/retention/run", {})["job_id"]
        shown = time.monotonic()
        while True:
            task = next((t for t in self.tasks("retention") if t["id"] == job), None)
            if task is None:
                raise Failure(f"retention job {job} is not in scheduled_tasks")
            if task["status"] not in ("scheduled", "active"):
                break
            if time.monotonic() - shown > 30:
                shown = time.monotonic()
                say(f"{self.server.label}: retention job {task['status']}, progress {task.get('progress')}")
            time.sleep(0.25)
        if task["status"] != "complete":
            raise Failure(f"retention job ended {task['status']}: {task.get('error')}")
        pruned = (task.get("result") or {}).get("events_pruned", 0)
        progress = task.get("progress") or {}
        if pruned < self.events:
            self.notes.append(f"{self.server.label}: the retention job's events_pruned is {pruned:,}, "
                              f"fewer than the {self.events:,} messages sent: {task}")
        if progress.get("done") != progress.get("total"):
            self.notes.append(f"{self.server.label}: the complete retention job's progress is {progress}")
        return f"events_pruned {pruned:,}"

    def purge_history(self):
        before = int(time.time() * 1000)
        ids = {}
        for room in self.room_ids["purge_history"]:
            answer = call(self.admin, "POST", f"/_synapse/admin/v1/purge_history/{q(room)}",
                          {"purge_up_to_ts": before, "delete_local_events": True})
            ids[answer["purge_id"]] = room
        while True:
            mine = {t["id"]: t for t in self.tasks("purge_history") if t["id"] in ids}
            if len(mine) == len(ids) and all(t["status"] not in ("scheduled", "active") for t in mine.values()):
                break
            time.sleep(0.5)
        elapsed_end = time.perf_counter()
        failed = [t for t in mine.values() if t["status"] != "complete"]
        if failed:
            raise Failure(f"{len(failed)} purges ended otherwise, e.g. {failed[0]}")
        pruned = sum((t.get("result") or {}).get("events_pruned", 0) for t in mine.values())
        return elapsed_end, ids, pruned

    def check_status(self, ids):
        wrong = []
        for purge_id in ids:
            status = call(self.admin, "GET", f"/_synapse/admin/v1/purge_history_status/{q(purge_id)}")
            if status.get("status") != "complete":
                wrong.append((purge_id, status))
        if wrong:
            self.notes.append(f"{self.server.label}: purge_history_status not complete for {len(wrong)} purges, "
                              f"e.g. {wrong[0]}")

    def left(self, mode):
        """Messages of the first room of `mode` still with a body."""
        room = self.room_ids[mode][0]
        client = self.loaders[0]
        body = call(client, "GET", f"/_matrix/client/v3/rooms/{q(room)}/messages?dir=b&limit=1000")
        messages = [e for e in body.get("chunk", []) if e.get("type") == "m.room.message"]
        bodied = sum(1 for e in messages if "body" in e.get("content", {}))
        sent = len(range(0, self.events, self.rooms))
        return f"{bodied} of its {sent} messages left with a body, {len(messages)} listed"

    def run(self):
        self.setup()
        self.load()
        self.wait_indexed()
        probe = Probe(self.server.port)
        probe.start()
        windows = {}
        try:
            time.sleep(2)  # the probe's connections warm
            start = time.perf_counter()
            time.sleep(self.baseline)
            windows["baseline"] = (start, time.perf_counter())
            for mode in self.modes:
                say(f"{self.server.label}: {mode} of {self.events:,} messages")
                start = time.perf_counter()
                if mode == "retention":
                    detail = self.retention_pass()
                    end = time.perf_counter()
                else:
                    end, ids, pruned = self.purge_history()
                    detail = f"events_pruned {pruned:,}" if self.hearth else "Synapse reports no count"
                    if self.hearth and pruned < self.events:
                        self.notes.append(f"{self.server.label}: the purge_history jobs' events_pruned add up to "
                                          f"{pruned:,}, fewer than the {self.events:,} messages sent")
                windows[mode] = (start, end)
                elapsed = end - start
                row = "purge: retention pass" if mode == "retention" else "purge: purge_history of every room"
                self.results[row] = (f"{elapsed:.1f} s, {self.events / elapsed:,.0f} events/s ({detail}; room 0: "
                                     f"{self.left(mode)})")
                say(f"{self.server.label}: {self.results[row]}")
                if mode == "purge_history":
                    self.check_status(ids)
                time.sleep(2)
        finally:
            probe.stop()
        for name, (start, end) in windows.items():
            label = {"baseline": "baseline (idle)", "retention": "during the retention pass",
                     "purge_history": "during purge_history"}[name]
            send, delivery = probe.window(start, end)
            self.results[f"sends every 50 ms: {label}"] = send
            self.results[f"send → /sync: {label}"] = delivery
        if probe.errors:
            self.notes.append(f"{self.server.label}: the probe saw {len(probe.errors)} errors, e.g. {probe.errors[0]}")
        if probe.limited:
            self.notes.append(f"{self.server.label}: {probe.limited} /sync answers had a limited timeline")


ROWS = [
    "seed: users", "seed: rooms",
    "users: every page", "users: name= search", "users: order_by=creation_ts&dir=b",
    "rooms: every page", "rooms: order_by=joined_members", "rooms: search_term=",
    "purge: load", "purge: retention pass", "purge: purge_history of every room",
    "sends every 50 ms: baseline (idle)", "sends every 50 ms: during the retention pass",
    "sends every 50 ms: during purge_history",
    "send → /sync: baseline (idle)", "send → /sync: during the retention pass", "send → /sync: during purge_history",
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("hearth")
    parser.add_argument("--synapse-python")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--only", choices=["hearth", "synapse"])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rooms", type=int, default=10_000)
    parser.add_argument("--shared-purge-events", type=int, default=50_000)
    parser.add_argument("--purge-events", type=int, default=1_000_000)
    parser.add_argument("--purge-rooms", type=int, default=1_000)
    parser.add_argument("--baseline", type=float, default=60)
    parser.add_argument("--synapse-seed", choices=["auto", "api", "sql"], default="auto")
    parser.add_argument("--seed-budget", type=int, default=1800)
    parser.add_argument("--out")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if args.only == "synapse" and not args.synapse_python:
        parser.error("--only synapse needs --synapse-python")
    if args.synapse_python:
        args.synapse_python = os.path.abspath(args.synapse_python)  # Synapse runs in its own directory
    work = tempfile.mkdtemp(prefix="hearth-adminbench-")
    plans = []  # (label, kind, listing, purge events, purge modes)
    if args.only != "synapse":
        plans.append(("Hearth", "hearth", True, args.shared_purge_events, ["retention", "purge_history"]))
    postgres = None
    if args.synapse_python and args.only != "hearth":
        plans.append(("Synapse (SQLite)", "synapse", True, args.shared_purge_events, ["purge_history"]))
        if args.postgres:
            postgres = Postgres()
            missing = postgres.available()
            if missing:
                raise Failure(f"--postgres: {missing}")
            say(postgres.start())
            plans.append(("Synapse (PostgreSQL)", "synapse-pg", True, args.shared_purge_events, ["purge_history"]))
    if args.only != "synapse" and args.purge_events:
        plans.append(("Hearth", "hearth-big", False, args.purge_events, ["retention"]))
    columns, notes = [], []
    try:
        for label, kind, listing, events, modes in plans:
            directory = os.path.join(work, kind)
            os.makedirs(directory)
            if kind.startswith("hearth"):
                server = AdminHearth(directory, args.hearth)
            elif kind == "synapse":
                server = Synapse(directory, args.synapse_python, None, label)
            else:
                server = Synapse(directory, args.synapse_python, postgres.database("hearth_adminbench"), label)
            results = {}
            phase_started = time.perf_counter()
            try:
                server.start()
                admin, _ = register(server.port, "admin", admin=True)
                if listing and (args.users or args.rooms):
                    say(f"{label}: {args.users:,} users, {args.rooms:,} rooms")
                    run = Listing(server, admin, args.users, args.rooms, args)
                    try:
                        run.run()
                    finally:
                        results.update(run.results)
                        notes.extend(run.notes)
                if events:
                    say(f"{label}: purging {events:,} messages over {args.purge_rooms:,} rooms ({', '.join(modes)})")
                    run = Purge(server, admin, events, args.purge_rooms, modes, args.baseline)
                    try:
                        run.run()
                    finally:
                        results.update(run.results)
                        notes.extend(run.notes)
            except Exception as e:  # noqa: BLE001 - shown in the table, the next server still runs
                results["error"] = f"{type(e).__name__}: {str(e)[:400]}".replace("|", "/").replace("\n", " ")
                say(f"{label}: {results['error']}")
            finally:
                server.stop()
            say(f"{label}: done in {time.perf_counter() - phase_started:.0f} s")
            parts = [f"{args.users:,} users, {args.rooms:,} rooms"] if listing and (args.users or args.rooms) else []
            if events:
                parts.append(f"{events:,} events / {args.purge_rooms:,} rooms")
            columns.append((f"{label}, {'; '.join(parts)}", server.version, results))
            if not args.keep and "error" not in results:
                shutil.rmtree(directory, ignore_errors=True)
    finally:
        if postgres:
            postgres.close()
        if args.keep or any("error" in r for _, _, r in columns):
            print(f"# kept the work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report("benches/admin.py", columns, ROWS, args.out)
    if notes:
        text = "\n" + "\n".join(f"- {note}" for note in notes)
        print(text)
        if args.out:
            with open(args.out, "a") as f:
                f.write(text + "\n")
    sys.exit(1 if any("error" in r for _, _, r in columns) else 0)


if __name__ == "__main__":
    main()
