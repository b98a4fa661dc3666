"""Federation benchmarks: Hearth against Synapse as the joining and receiving server.

Usage: federation.py PATH/TO/hearth [--members 1000,10000] [--messages 2000]
                     [--big-messages 1000] [--rooms 100] [--per-room 20] [--missed 1000]
                     [--joiners hearth,synapse,synapse-pg] [--out FILE.md] [--keep]
Run with the interop virtualenv's Python (Synapse is imported from it);
`make bench-federation` builds Hearth in release mode and runs it.

A resident Hearth (the binary given) holds a public room of N members (guest
accounts joined by 8 client threads) and the rooms messages are sent in. For
each N and each joiner — a fresh Hearth (same binary), a fresh Synapse on
SQLite and, when PostgreSQL can be started, a fresh Synapse on PostgreSQL —
one at a time, with one registered user:

  join      POST /join/{room}?server_name=<resident> then a message sent by the
            joiner: the wall time until that send answered 200; the joiner's
            VmRSS before and its peak (VmHWM, reset just before the join) over it.
  inbound   the resident's user sends, from 8 client threads (each send
            awaited), M messages into one room (the joiner's user and the
            sender its only members) and then one more; 20 messages into each
            of 100 such rooms; and B + 1 into the N-member room. The time from
            the first send until the joiner's user's /sync long poll shows the
            last message of every room: messages / elapsed. The resident's
            own sending is inside that time (the same resident for every
            joiner). Small rooms at the first N only (they do not depend on it).
  catch-up  the joiner is stopped (SIGTERM), the resident sends 1,000 messages
            into the N-member room, the joiner is started again: the time from
            /versions answering to its user's /sync showing the last one. The
            resident retries an unreachable server after 200 ms, doubling up
            to 1 s (destination_*_retry_interval_ms), so that the retry does
            not dominate; nothing else pokes it.
Then the resident kicks the joiner's user from every room, and the joiner is
stopped once it has seen the kicks. Every joiner trusts the resident as its
key notary (trusted_key_servers), so that the signatures of the stopped
joiners' events in the room's state can still be checked. Prints a table
and writes it as Markdown (--out; default WORKDIR/federation.md). The work directory is /tmp/hearth-fedbench-*,
deleted at the end unless --keep or a failure.
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "interop"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "clients"))
from harness import http, stop  # noqa: E402
from servers import (Failure, free_ports, make_certificates, spawn_hearth, spawn_synapse,  # noqa: E402
                     start_hearth, start_synapse, wait_for_server)

PASSWORD = "bench-pass-1"
DEADLINE = 900  # any one wait on the other server, in seconds
LOG = "info"  # Hearth's log filter: its request lines at INFO, as Synapse logs by default
THREADS = 8

SYNC_FILTER = json.dumps({
    "room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": True},
             "ephemeral": {"types": []}, "account_data": {"types": []}},
    "presence": {"types": []}, "account_data": {"types": []},
})


def q(value):
    return urllib.parse.quote(value, safe="")


def say(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


class Client:
    """A user over the client API; `sync` remembers the bodies of the messages it delivered."""

    def __init__(self, base, user_id, token):
        self.base, self.user_id, self.token = base, user_id, token
        self.since = None
        self.left = set()  # rooms /sync listed under `leave`

    def call(self, method, path, body=None, expected=200, timeout=60):
        try:
            status, answer = http(method, self.base + path, body, self.token, timeout)
        except OSError as e:  # a timeout, a refused connection
            raise Failure(f"{method} {path} as {self.user_id}: {type(e).__name__}: {e}")
        if status != expected:
            raise Failure(f"{method} {path} as {self.user_id} answered {status}: {str(answer)[:2000]}")
        return answer

    def send(self, room_id, body):
        path = f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/t{time.monotonic_ns()}"
        return self.call("PUT", path, {"msgtype": "m.text", "body": body})["event_id"]

    def join(self, room_id, via=None):
        path = f"/_matrix/client/v3/join/{q(room_id)}" + (f"?server_name={q(via)}" if via else "")
        return self.call("POST", path, {}, timeout=DEADLINE)

    def kick(self, room_id, user_id):
        return self.call("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/kick", {"user_id": user_id})

    def membership(self, room_id, user_id):
        status, answer = http("GET", self.base + f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.member/"
                                                 f"{q(user_id)}", None, self.token)
        return answer.get("membership") if status == 200 and isinstance(answer, dict) else None

    def sync(self, seconds):
        """One /sync (a long poll of `seconds`): {room ID: [message bodies]} it delivered."""
        path = f"/_matrix/client/v3/sync?timeout={int(seconds * 1000)}&filter={q(SYNC_FILTER)}"
        if self.since:
            path += f"&since={q(self.since)}"
        answer = self.call("GET", path)
        self.since = answer["next_batch"]
        self.left |= set(answer.get("rooms", {}).get("leave", {}))
        return {room_id: [e.get("content", {}).get("body") for e in room.get("timeline", {}).get("events", [])]
                for room_id, room in answer.get("rooms", {}).get("join", {}).items()}

    def wait_bodies(self, wanted, what, deadline=DEADLINE):
        """Long-polls /sync until every (room ID, body) of `wanted` was delivered; the time it returned."""
        missing = set(wanted)
        end = time.monotonic() + deadline
        while missing:
            left = end - time.monotonic()
            if left <= 0:
                raise Failure(f"{what}: {len(missing)} of {len(wanted)} rooms' last messages not seen by "
                              f"{self.user_id} within {deadline} s")
            for room_id, bodies in self.sync(min(left, 5.0)).items():
                for body in bodies:
                    missing.discard((room_id, body))
        return time.monotonic()


def register(base, username):
    body = {"username": username, "password": PASSWORD, "initial_device_display_name": "bench"}
    status, answer = http("POST", base + "/_matrix/client/v3/register", body)
    if status == 401:
        body["auth"] = {"type": "m.login.dummy", "session": answer.get("session")}
        status, answer = http("POST", base + "/_matrix/client/v3/register", body)
    if status != 200:
        raise Failure(f"registering {username} at {base} answered {status}: {answer}")
    return Client(base, answer["user_id"], answer["access_token"])


def create_room(client, name, guests=False):
    initial_state = [{"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "can_join"}}] \
        if guests else []
    body = {"preset": "public_chat", "visibility": "private", "name": name, "initial_state": initial_state}
    return client.call("POST", "/_matrix/client/v3/createRoom", body)["room_id"]


def pooled(tasks, threads=THREADS, progress=None):
    """Runs the callables `tasks` on `threads` threads; their results in order. The first error is raised."""
    results = [None] * len(tasks)
    done = 0
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = {pool.submit(task): i for i, task in enumerate(tasks)}
        for future in concurrent.futures.as_completed(futures):
            results[futures[future]] = future.result()
            done += 1
            if progress:
                progress(done)
    return results


# ---------------------------------------------------------------- memory


def proc_status(pid, field):
    """A field of /proc/PID/status in KiB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise Failure(f"no {field} for process {pid}")


class RssSampler:
    """Samples VmRSS of a process every 20 ms on a thread (as a check beside VmHWM)."""

    def __init__(self, pid):
        self.pid, self.peak, self.stopped = pid, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped.is_set():
            try:
                self.peak = max(self.peak, proc_status(self.pid, "VmRSS"))
            except (OSError, Failure):
                return
            self.stopped.wait(0.02)

    def stop(self):
        self.stopped.set()
        self.thread.join()
        return self.peak


def mib(kib):
    return kib / 1024


# ---------------------------------------------------------------- PostgreSQL


class Postgres:
    """Debian's PostgreSQL cluster: started if it was down (and stopped again
    at the end), a role for this user (peer authentication over the Unix
    socket), and a database per Synapse, with the C collation Synapse requires."""

    def __init__(self):
        self.started = False
        self.databases = []
        self.cluster = None

    def available(self):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            return "psycopg2 is not installed in this Python (pip install psycopg2-binary)"
        if not shutil.which("pg_ctlcluster") or not shutil.which("pg_lsclusters"):
            return "PostgreSQL is not installed (apt-get install postgresql)"
        return None

    def psql(self, sql, database="postgres"):
        return subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-qAt", "-v", "ON_ERROR_STOP=1",
                               "-d", database, "-c", sql], check=True, capture_output=True, text=True,
                              timeout=120).stdout.strip()

    def start(self):
        lines = subprocess.run(["pg_lsclusters", "--no-header"], check=True, capture_output=True, text=True,
                               timeout=60).stdout.split("\n")
        clusters = [line.split() for line in lines if line.strip()]
        if not clusters:
            raise Failure("no PostgreSQL cluster (pg_createcluster)")
        version, name, port, status = clusters[0][:4]
        self.cluster = (version, name)
        if status != "online":
            subprocess.run(["pg_ctlcluster", version, name, "start"], check=True, timeout=120)
            self.started = True
        self.role = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True,
                                                             text=True).stdout.strip()
        if self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{self.role}'") != "1":
            self.psql(f'CREATE ROLE "{self.role}" LOGIN')
            self.created_role = True
        else:
            self.created_role = False
        self.version = self.psql("SHOW server_version")
        return f"PostgreSQL {self.version} (cluster {version}/{name}{', started' if self.started else ''})"

    def database(self, name):
        """A fresh database for one Synapse: its `database` configuration."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}"')
        self.psql(f"CREATE DATABASE \"{name}\" OWNER \"{self.role}\" ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
                  "TEMPLATE template0")
        self.databases.append(name)
        return {"name": "psycopg2", "args": {"dbname": name, "user": self.role, "host": "/var/run/postgresql",
                                             "cp_min": 5, "cp_max": 10}}

    def close(self):
        for name in self.databases:
            try:
                self.psql(f'DROP DATABASE IF EXISTS "{name}"')
            except subprocess.SubprocessError as e:
                print(f"# could not drop PostgreSQL database {name}: {e}")
        if self.cluster and getattr(self, "created_role", False):
            try:
                self.psql(f'DROP ROLE IF EXISTS "{self.role}"')
            except subprocess.SubprocessError as e:
                print(f"# could not drop PostgreSQL role {self.role}: {e}")
        if self.started:
            subprocess.run(["pg_ctlcluster", *self.cluster, "stop"], timeout=120)


# ---------------------------------------------------------------- the bench


class Joiner:
    """A joining / receiving server: a fresh Hearth or Synapse with one user."""

    def __init__(self, bench, kind, members):
        self.bench, self.kind = bench, kind
        self.tag = f"{kind}-{members}"
        ports = free_ports(2)
        if kind == "hearth":
            directory = os.path.join(bench.workdir, self.tag)
            os.makedirs(directory)
            self.proc, self.url, self.name, self.log = start_hearth(
                bench.binary, directory, bench.tls, *ports, log=LOG, rate_limit=1000000, cache_mb=64,
                notaries=[bench.resident_name])
            self.config = os.path.join(directory, "hearth.toml")
            self.output = self.log
        else:
            database = bench.postgres.database(f"hearth_bench_{members}") if kind == "synapse-pg" else None
            self.proc, self.url, self.name, self.log, self.output = start_synapse(
                bench.workdir, bench.tls, *ports, database=database, name=self.tag, notaries=[bench.resident_name])
            self.directory = os.path.dirname(self.log)
        bench.procs.append(self.proc)
        bench.logs[self.tag] = self.log
        wait_for_server(self.tag, self.proc, self.url, self.output)
        self.user = register(self.url, "joiner")

    def stop(self):
        """SIGTERM and wait for the process to exit cleanly."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(120)
        except subprocess.TimeoutExpired:
            raise Failure(f"{self.tag} did not exit within 120 s of SIGTERM")
        self.bench.procs.remove(self.proc)
        return code

    def start_again(self):
        """Starts the same server on its database again: the time its /versions answered."""
        if self.kind == "hearth":
            self.proc = spawn_hearth(self.bench.binary, self.config, self.log, append=True)
        else:
            self.proc = spawn_synapse(self.directory, append=True)
        self.bench.procs.append(self.proc)
        wait_for_server(self.tag, self.proc, self.url, self.output, interval=0.02)
        return time.monotonic()


class Bench:
    def __init__(self, args):
        self.args = args
        self.binary = os.path.abspath(args.hearth)
        self.workdir = tempfile.mkdtemp(prefix="hearth-fedbench-", dir="/tmp")
        self.procs, self.logs = [], {}
        self.postgres = Postgres()
        self.results = []  # (members, kind, {figure: value})
        self.notes = []

    # -- the resident

    def start_resident(self):
        self.tls = make_certificates(self.workdir)
        directory = os.path.join(self.workdir, "resident")
        os.makedirs(directory)
        proc, self.resident_url, self.resident_name, log = start_hearth(
            self.binary, directory, self.tls, *free_ports(2), log=LOG, min_retry_ms=200, max_retry_ms=1000,
            rate_limit=1000000, cache_mb=64, guest_access=True)
        self.procs.append(proc)
        self.resident_proc = proc
        self.logs["resident"] = log
        wait_for_server("resident", proc, self.resident_url, log)
        self.sender = register(self.resident_url, "sender")
        self.room = create_room(self.sender, "bench: the big room", guests=True)
        self.members = 1
        say(f"resident Hearth {self.resident_name} ({self.resident_url}), room {self.room}")

    def populate(self, target):
        """Guests join the big room until it has `target` members."""
        count = target - self.members
        if count <= 0:
            return
        say(f"populating: {count} guests join ({self.members} -> {target} members), {THREADS} threads")
        started = time.monotonic()

        def guest():
            status, answer = http("POST", self.resident_url + "/_matrix/client/v3/register?kind=guest", {})
            if status != 200:
                raise Failure(f"POST /register?kind=guest answered {status}: {answer}")
            Client(self.resident_url, answer["user_id"], answer["access_token"]).join(self.room)

        def progress(done):
            if done % 1000 == 0 or done == count:
                elapsed = time.monotonic() - started
                say(f"  {done}/{count} joined, {elapsed:.0f} s, {done / elapsed:.0f} joins/s")

        pooled([guest] * count, progress=progress)
        elapsed = time.monotonic() - started
        self.members = target
        answer = self.sender.call("GET", f"/_matrix/client/v3/rooms/{q(self.room)}/joined_members")
        joined = len(answer.get("joined", {}))
        if joined != target:
            raise Failure(f"the room has {joined} joined members, expected {target}")
        self.notes.append(f"populating the room to {target:,} members: {count:,} guest registrations and joins "
                          f"in {elapsed:.0f} s ({count / elapsed:.0f}/s, {THREADS} client threads)")
        say(f"populated: {target} members in the room ({elapsed:.0f} s)")

    # -- one joiner

    def run_joiner(self, kind, members, first_size):
        say(f"== {kind}, room of {members} members")
        figures = {}
        joiner = Joiner(self, kind, members)
        user = joiner.user
        pid = joiner.proc.pid

        # Join.
        rss_before = proc_status(pid, "VmRSS")
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        sampler = RssSampler(pid)
        started = time.monotonic()
        user.join(self.room, via=self.resident_name)
        joined = time.monotonic()
        user.send(self.room, "the joiner's first message")
        sent = time.monotonic()
        sampled = sampler.stop()
        hwm = proc_status(pid, "VmHWM")
        figures.update(join_s=sent - started, join_returned_s=joined - started, rss_before=mib(rss_before),
                       rss_peak=mib(hwm), rss_sampled_peak=mib(sampled), rss_after=mib(proc_status(pid, "VmRSS")))
        count = len(user.call("GET", f"/_matrix/client/v3/rooms/{q(self.room)}/joined_members").get("joined", {}))
        figures["members_seen"] = count
        say(f"join: {sent - started:.2f} s to a sent message (join returned at {joined - started:.2f} s); "
            f"RSS {mib(rss_before):.0f} MiB before, peak {mib(hwm):.0f} MiB; the joiner sees {count} members")
        if kind != "hearth":
            figures["partial_state"] = self.synapse_partial_state(joiner)
        user.sync(0)  # the token the waits start from

        rooms = [self.room]
        if not self.args.skip_inbound:
            rooms += self.inbound(joiner, members, figures, small_rooms=first_size or self.args.small_rooms_always)
        self.catch_up(joiner, figures)

        # The resident kicks the joiner's user from every room, so that it
        # sends this server nothing more; the joiner is stopped once it has
        # received the kicks. (Kicks rather than leaves: Synapse, just
        # restarted, is catching up with the resident and sends only the
        # latest event of each room, and then it sometimes lost a leave.)
        pooled([lambda r=r: self.sender.kick(r, user.user_id) for r in rooms])
        user.left.clear()
        end = time.monotonic() + DEADLINE
        while not set(rooms) <= user.left:
            if time.monotonic() > end:
                raise Failure(f"{user.user_id} was not told of {len(set(rooms) - user.left)} kicks in {DEADLINE} s")
            user.sync(5.0)
        joiner.stop()
        if kind != "hearth":
            # Synapse drops events from a room's inbound queue past 100
            # ("Pruning N events in room ... from federation queue") and fetches
            # what it then misses (get_missing_events, state): how many it dropped.
            with open(joiner.log, errors="replace") as f:
                figures["synapse_pruned"] = sum(int(n) for n in re.findall(r"Pruning (\d+) events in room", f.read()))
        self.results.append((members, kind, figures))

    def synapse_partial_state(self, joiner):
        """Whether Synapse joined with partial state (faster joins): from its log."""
        with open(joiner.log, errors="replace") as f:
            log = f.read()
        send_join = [line for line in log.split("\n") if "send_join" in line]
        asked = any("omit_members=true" in line for line in send_join)
        partial = "partial-state" in log or "partial state" in log.lower()
        verdict = "partial" if partial else "full"
        say(f"Synapse's join: {verdict} state (asked omit_members=true: {asked}; "
            f"{len(send_join)} send_join log lines)")
        return f"{verdict} (omit_members asked: {'yes' if asked else 'no'})"

    def inbound(self, joiner, members, figures, small_rooms):
        """The inbound runs: in one small room and in many (`small_rooms`),
        then in the big room. The rooms the joiner's user joined."""
        user, m = joiner.user, self.args.messages
        rooms = []
        if small_rooms:
            rooms = [create_room(self.sender, f"bench {joiner.tag} inbound {i}") for i in range(1 + self.args.rooms)]
            pooled([lambda r=r: user.join(r, via=self.resident_name) for r in rooms])
            user.sync(0)

        def run(label, tasks, end_marker):
            """`tasks`: [(room, count)], each sent in order by one of THREADS
            threads; the wait is for the last message of every task, or, with
            `end_marker`, for one more message sent into the (one) room after
            all the others had been sent. Events/s and the sending time."""
            tag = f"{joiner.tag} {label}"
            bodies = {}  # task -> its bodies
            for k, (room, n) in enumerate(tasks):
                bodies[k] = [f"{tag} {k}.{i}" for i in range(n)]
            total = sum(n for _, n in tasks)
            if end_marker:
                wanted = {(tasks[0][0], f"{tag} end")}
            else:
                wanted = {(room, bodies[k][-1]) for k, (room, _) in enumerate(tasks)}
            finished = {}

            def send_task(k):
                room = tasks[k][0]
                for body in bodies[k]:
                    self.sender.send(room, body)

            def sender():
                try:
                    t = time.monotonic()
                    pooled([lambda k=k: send_task(k) for k in range(len(tasks))])
                    if end_marker:
                        self.sender.send(tasks[0][0], f"{tag} end")
                    finished["t"] = time.monotonic() - t
                except Exception as e:  # noqa: BLE001 - reported by the waiting thread
                    finished["error"] = e

            thread = threading.Thread(target=sender, daemon=True)
            started = time.monotonic()
            thread.start()
            seen = user.wait_bodies(wanted, label)
            thread.join()
            if "error" in finished:
                raise Failure(f"sending ({label}): {finished['error']}")
            total += 1 if end_marker else 0
            elapsed = seen - started
            found = ""
            if end_marker:  # not timed: are they all there?
                room = tasks[0][0]
                count = self.count_back(user, room, f"{tag} ", total)
                found = f"; {count}/{total} found paging back"
            say(f"inbound, {label}: {total} messages seen in {elapsed:.2f} s = {total / elapsed:.0f} events/s "
                f"(the resident's sends took {finished['t']:.2f} s){found}")
            return total / elapsed, finished["t"]

        def one_room(room, m=m):
            return [(room, m // THREADS + (1 if k < m % THREADS else 0)) for k in range(THREADS)]

        if small_rooms:
            figures["in_1"], figures["in_1_send_s"] = run("1 room", one_room(rooms[0]), True)
            figures["in_100"], figures["in_100_send_s"] = run(
                f"{self.args.rooms} rooms", [(r, self.args.per_room) for r in rooms[1:]], False)
        figures["in_big"], figures["in_big_send_s"] = run(
            f"the {members}-member room", one_room(self.room, self.args.big_messages), True)
        return rooms

    def count_back(self, user, room, prefix, most):
        """Pages the joiner's /messages back from the end until it has shown
        `most` bodies starting with `prefix` (at most `most` + 1,000 events): how many."""
        found, token, pages = set(), None, 0
        while pages < most // 100 + 3:
            path = f"/_matrix/client/v3/rooms/{q(room)}/messages?dir=b&limit=100" + (
                f"&from={q(token)}" if token else "")
            answer = user.call("GET", path)
            pages += 1
            chunk = answer.get("chunk", [])
            bodies = {e.get("content", {}).get("body") for e in chunk}
            found |= {b for b in bodies if b and b.startswith(prefix)}
            if not chunk or len(found) >= most or not answer.get("end"):
                break
            token = answer["end"]
        return len(found)

    def catch_up(self, joiner, figures):
        user, missed = joiner.user, self.args.missed
        code = joiner.stop()
        say(f"catch-up: {joiner.tag} stopped (exit status {code}); the resident sends {missed} messages")
        t = time.monotonic()
        for i in range(missed):
            self.sender.send(self.room, f"{joiner.tag} missed {i}")
        figures["missed_send_s"] = time.monotonic() - t
        spawned = time.monotonic()
        up = joiner.start_again()
        seen = user.wait_bodies({(self.room, f"{joiner.tag} missed {missed - 1}")}, "catch-up")
        figures.update(catch_up_s=seen - up, restart_s=up - spawned)
        # Not timed: how many of the missed messages the joiner shows, paging back.
        found = self.count_back(user, self.room, f"{joiner.tag} missed ", missed)
        figures["missed_found"] = found
        say(f"catch-up: the last of {missed} missed messages seen {seen - up:.2f} s after /versions answered "
            f"(start-up {up - spawned:.2f} s); {found}/{missed} found paging back")

    # -- all of it

    def run(self):
        self.start_resident()
        kinds = self.args.joiners.split(",")
        if "synapse-pg" in kinds:
            why = self.postgres.available()
            if why is None:
                try:
                    self.notes.append(self.postgres.start())
                except (subprocess.SubprocessError, OSError, Failure) as e:
                    why = f"could not start PostgreSQL: {e}"
            if why:
                say(f"skipping Synapse on PostgreSQL: {why}")
                self.notes.append(f"Synapse on PostgreSQL not run: {why}")
                kinds.remove("synapse-pg")
        for i, members in enumerate(sorted(int(n) for n in self.args.members.split(","))):
            self.populate(members)
            for kind in kinds:
                self.run_joiner(kind, members, first_size=i == 0)

    def report(self):
        names = {"hearth": "Hearth", "synapse": "Synapse (SQLite)", "synapse-pg": "Synapse (PostgreSQL)"}
        kinds = [k for k in names if any(kind == k for _, kind, _ in self.results)]
        sizes = sorted({members for members, _, _ in self.results})
        get = {(members, kind): f for members, kind, f in self.results}
        m, a = self.args.messages, self.args

        def row(label, members, fmt):
            cells = []
            for kind in kinds:
                try:
                    cells.append(fmt(get[(members, kind)]))
                except KeyError:
                    cells.append("—")
            return f"| {label} | " + " | ".join(cells) + " |"

        lines = ["| what | " + " | ".join(names[k] for k in kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
        for n in sizes:
            lines.append(row(f"join, {n:,} members: join request to a sent message", n,
                             lambda f: f"{f['join_s']:.2f} s"))
            lines.append(row(f"join, {n:,} members: joiner's RSS before → peak (VmHWM)", n,
                             lambda f: f"{f['rss_before']:.0f} → {f['rss_peak']:.0f} MiB"))
        for n in sizes:
            if any("in_1" in get.get((n, k), {}) for k in kinds):
                lines.append(row(f"inbound, 1 room (2 members), {m + 1:,} messages", n,
                                 lambda f: f"{f['in_1']:.0f} events/s"))
                lines.append(row(f"inbound, {a.rooms} rooms (2 members each) × {a.per_room} messages", n,
                                 lambda f: f"{f['in_100']:.0f} events/s"))
        for n in sizes:
            lines.append(row(f"inbound, the {n:,}-member room, {a.big_messages + 1:,} messages", n,
                             lambda f: f"{f['in_big']:.0f} events/s"))
        for n in sizes:
            lines.append(row(f"catch-up, {a.missed:,} missed messages in the {n:,}-member room", n,
                             lambda f: f"{f['catch_up_s']:.2f} s"))
        details = ["", "Details per run:", ""]
        for members, kind, f in self.results:
            details.append(f"- {names[kind]}, {members:,} members: " + ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in f.items()))
        text = "\n".join(lines + details + [""] + [f"- {n}" for n in self.notes]) + "\n"
        print(text)
        out = self.args.out or os.path.join(self.workdir, "federation.md")
        with open(out, "w") as f:
            f.write(f"<!-- benches/federation.py, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} "
                    f"UTC, {os.cpu_count()} cores, Python {platform.python_version()} -->\n" + text)
        say(f"wrote {out}")
        return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hearth", help="the hearth binary (a release build)")
    parser.add_argument("--members", default="1000,10000", help="room sizes, comma-separated")
    parser.add_argument("--messages", type=int, default=2000, help="messages of the small one-room inbound run")
    parser.add_argument("--big-messages", type=int, default=1000,
                        help="messages of the inbound run in the big room (the resident sends them slowly: "
                             "it evaluates push rules for each of its N local members)")
    parser.add_argument("--rooms", type=int, default=100, help="rooms of the many-room inbound run")
    parser.add_argument("--per-room", type=int, default=20, help="messages into each of those rooms")
    parser.add_argument("--missed", type=int, default=1000, help="messages sent while the joiner is down")
    parser.add_argument("--joiners", default="hearth,synapse,synapse-pg")
    parser.add_argument("--skip-inbound", action="store_true", help="only the joins and the catch-up")
    parser.add_argument("--small-rooms-always", action="store_true",
                        help="the small-room inbound runs at every room size (default: the first only)")
    parser.add_argument("--out", help="where to write the Markdown table")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    bench = Bench(args)
    failed = False
    try:
        bench.run()
    except (Failure, OSError, subprocess.SubprocessError) as e:
        failed = True
        print(f"FAILED: {e}", flush=True)
    finally:
        stop(list(bench.procs))
        bench.postgres.close()
    if bench.results:
        bench.report()
    if failed or args.keep:
        for name, log in bench.logs.items():
            print(f"# {name}: {log}")
        print(f"# kept the work directory: {bench.workdir}")
    else:
        shutil.rmtree(bench.workdir, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
