"""How long three servers take to converge after a network partition heals.

Usage: partition_heal.py PATH/TO/hearth [--events 1000] [--versions 12,10]
                         [--setups hearth,synapse] [--clients 4] [--deadline 300]
                         [--hearth-log FILTER] [--out FILE.md] [--keep]
Run with the interop virtualenv's Python (Synapse is imported from it), like
tests/interop/synapse_partitions.py, whose network this reuses: each
server's name is `localhost:<proxy port>`, a TCP proxy run by this script in
front of its TLS federation listener; A and B reach each other directly
(`federation.resolve_overrides`), so the proxies carry exactly the traffic
to and from C, and cutting them partitions {A, B} | {C}.

Two set-ups, each on fresh servers, with a shared secret for one admin
account per server (the forward extremities):
  hearth   A, B and C all Hearth (the binary given);
  synapse  A and B Hearth, C Synapse on SQLite.
Users alice on A, bob on B, carol on C. Per room version (12, then 10): alice
creates a public_chat room on A and gives bob and carol 50 (enough for a
topic); bob and carol join through A; once the three servers show the three
joined with the same state and forward extremities, C is cut off. Then,
one side after the other, each side makes N events through the client API
of its servers, as fast as they are taken, from --clients concurrent
connections per side (side {A,B}: half on A as alice, half on B as bob;
side {C}: all on C as carol; keep-alive HTTP/1.1, each request awaited): nine
in ten are messages, one in ten a state event, alternately the room's topic
and the sender's own m.room.member with a new displayname. Side {A,B} then
waits for A to have B's events, and alice sends "A's last word"; carol sends
"C's last word" (each side's branch ends in one event). Once B has A's last
word, the partition is checked to have held and the proxies heal.

From the heal, every 0.1 s: whether each server serves the other side's last
word (GET /rooms/{room}/event/{id}: A and B C's, C A's), and every server's
full current state (GET /rooms/{room}/state as a set of (type, state_key,
event_id)). Converged: all three serve the other side's last word and the
three states are identical. Reported: each side's sending time (events/s),
the time to convergence, each server's time to the other side's last word,
and, after convergence (not part of it), the time until the three have the
same forward extremities, and until each serves every one of the other
side's N events (GET /event as above: events a server never fetched, after
a catch-up that sent only the newest, are missing) — at most 60 s after
convergence and 15 s without progress, else how many it serves then; and
for Synapse, how many events it pruned from the room's inbound federation
queue (its log: past 100 staged events it keeps only their forward
extremities, and fetches or skips the rest). A run that does not converge
within --deadline seconds is reported as such, with what was missing, and
the others go on. Servers retry an unreachable server after 200 ms,
doubling up to 2 s (servers.py), which bounds the first retry after the
heal.

Prints a table (and writes it as Markdown with --out) and the command line.
The work directory /tmp/hearth-partheal-* is deleted when every run
converged, kept (with the logs' paths) otherwise or with --keep. Exits
non-zero when a run failed or did not converge.
"""

import argparse
import concurrent.futures
import datetime
import http.client
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "interop"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "clients"))
from harness import stop, wait_until  # noqa: E402
from servers import (Failure, free_ports, make_certificates, start_hearth, start_synapse,  # noqa: E402
                     wait_for_server)
from synapse_interop import q, register  # noqa: E402
# The proxies, the admin accounts and the readers of state and extremities of the partition test.
from synapse_partitions import (Proxy, forward_extremities, full_state, get_event, register_admin,  # noqa: E402
                                set_power)

LOG = "info,ruma_state_res=warn"  # Hearth's log filter: request lines at INFO, as Synapse logs by default
SETTLE_TIMEOUT = 120  # before the partition, and for A to see B's events in it
EXTRAS_TIMEOUT = 60  # after convergence: for the forward extremities to agree, for all events to be served
STALLED = 15  # seconds without one more of the other side's events served: the count is final
TICK = 0.1  # the polling period after the heal
SIDES = {"AB": ("A", "B"), "C": ("C",)}
OTHER = {"A": "C", "B": "C", "C": "AB"}  # whose last word each server waits for
LAST_WORDS = {"AB": "A's last word", "C": "C's last word"}


def say(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


class Conn:
    """One keep-alive HTTP/1.1 connection to a server's client API as one
    user. request() answers (status, JSON or text) as harness.http does, so
    that synapse_partitions' readers (full_state, get_event,
    forward_extremities) take it. A request whose connection turns out to be
    closed is sent once more on a new one (sends carry a transaction ID)."""

    def __init__(self, base, token, timeout=120):
        parts = urllib.parse.urlsplit(base)
        self.host, self.port, self.token, self.timeout = parts.hostname, parts.port, token, timeout
        self.http = None

    def close(self):
        if self.http:
            self.http.close()
            self.http = None

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        for attempt in (1, 2):
            if self.http is None:
                self.http = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.http.request(method, path, body=data, headers=headers)
                response = self.http.getresponse()
                status, raw = response.status, response.read()
                if response.will_close:
                    self.close()
                break
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def call(self, method, path, body=None):
        status, answer = self.request(method, path, body)
        if status != 200:
            raise Failure(f"{method} {path} on {self.host}:{self.port} answered {status}: {str(answer)[:500]}")
        return answer


def pooled(tasks, threads):
    """Runs the callables on `threads` threads: their results, in order; the first error is raised."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return [f.result() for f in [pool.submit(task) for task in tasks]]


def seconds(value):
    return f"{value:.2f} s" if value is not None else "never"


# ---------------------------------------------------------------- the servers


class Network:
    """Hearth A and B, C (Hearth or Synapse), their proxies, alice, bob,
    carol and an admin on each."""

    def __init__(self, bench, kind):
        self.kind = kind
        workdir = os.path.join(bench.workdir, kind)
        os.makedirs(workdir)
        self.procs, self.proxies, self.logs = [], [], {}
        tls = make_certificates(workdir)
        secret = secrets.token_hex(16)
        (a_client, a_real, a_proxy, b_client, b_real, b_proxy, c_client, c_real, c_proxy) = free_ports(9)
        reals = {"A": a_real, "B": b_real, "C": c_real}
        for tag, port in (("A", a_proxy), ("B", b_proxy), ("C", c_proxy)):
            self.proxies.append(Proxy(tag, port, reals[tag]))
        names = {"A": f"localhost:{a_proxy}", "B": f"localhost:{b_proxy}", "C": f"localhost:{c_proxy}"}
        clients = {"A": a_client, "B": b_client, "C": c_client}
        procs, self.urls = {}, {}
        hearths = ("A", "B", "C") if kind == "hearth" else ("A", "B")
        for tag in hearths:
            directory = os.path.join(workdir, f"hearth-{tag.lower()}")
            os.makedirs(directory)
            overrides = {"A": {names["B"]: f"127.0.0.1:{b_real}"}, "B": {names["A"]: f"127.0.0.1:{a_real}"}}.get(tag)
            proc, self.urls[tag], _, self.logs[f"hearth {tag}"] = start_hearth(
                bench.binary, directory, tls, clients[tag], reals[tag], log=bench.args.hearth_log,
                rate_limit=1000000, cache_mb=64, server_name=names[tag], resolve_overrides=overrides,
                shared_secret=secret)
            procs[tag] = (proc, self.logs[f"hearth {tag}"])
            self.procs.append(proc)
            bench.procs.append(proc)  # stopped at the end even if this set-up fails half-way
            bench.logs[f"{kind}: hearth {tag}"] = self.logs[f"hearth {tag}"]
        if kind == "synapse":
            proc, self.urls["C"], _, self.logs["synapse C"], stdout = start_synapse(
                workdir, tls, c_client, c_real, server_name=names["C"],
                extra={"registration_shared_secret": secret})
            procs["C"] = (proc, stdout)
            self.procs.append(proc)
            bench.procs.append(proc)
            bench.logs[f"{kind}: synapse C"] = self.logs["synapse C"]
        for tag, (proc, log) in procs.items():
            wait_for_server(f"{self.server_kind(tag)} {tag}", proc, self.urls[tag], log)
        self.names = names
        say("; ".join(f"{self.server_kind(tag)} {tag} {names[tag]} (federation 127.0.0.1:{reals[tag]}, "
                      f"client {self.urls[tag]})" for tag in "ABC"))
        self.users = {tag: register(names[tag], self.urls[tag], user)
                      for tag, user in (("A", "alice"), ("B", "bob"), ("C", "carol"))}
        self.admins = {tag: register_admin(names[tag], self.urls[tag], "operator", secret) for tag in "ABC"}

    def server_kind(self, tag):
        return "Synapse" if tag == "C" and self.kind == "synapse" else "Hearth"

    def conn(self, tag, admin=False):
        return Conn(self.urls[tag], (self.admins if admin else self.users)[tag].token)

    def cut(self):
        for proxy in self.proxies:
            proxy.cut()

    def heal(self):
        for proxy in self.proxies:
            proxy.heal()

    def close(self):
        stop(self.procs)
        for proxy in self.proxies:
            proxy.shut()


class Pollers:
    """One reader and one admin connection per server, for the main thread."""

    def __init__(self, net):
        self.readers = {tag: net.conn(tag) for tag in "ABC"}
        self.admins = {tag: net.conn(tag, admin=True) for tag in "ABC"}

    def states(self, room_id):
        """{server: frozenset of (type, state_key, event_id)}, None where unreadable."""
        out = {}
        for tag, reader in self.readers.items():
            state = full_state(reader, room_id)
            out[tag] = None if state is None else frozenset((k[0], k[1], e["event_id"]) for k, e in state.items())
        return out

    def extremities(self, room_id):
        return {tag: forward_extremities(admin, room_id) for tag, admin in self.admins.items()}

    def has(self, tag, room_id, event_id):
        return get_event(self.readers[tag], room_id, event_id) is not None

    def close(self):
        for conn in list(self.readers.values()) + list(self.admins.values()):
            conn.close()


def same(values):
    values = list(values)
    return all(v is not None for v in values) and len(set(values)) == 1


# ---------------------------------------------------------------- one run


class Run:
    """One room of one set-up: its figures and what was odd."""

    def __init__(self, kind, version):
        self.kind, self.version = kind, version
        self.label = f"{'Hearth ×3' if kind == 'hearth' else 'Hearth ×2 + Synapse'}, v{version}"
        self.figures = {}
        self.notes = []
        self.failed = None  # why the run stopped early
        self.converged = None  # seconds after the heal, or None
        self.healed = None  # time.monotonic() of the heal
        self.labels = {}  # event ID -> label, for the reports

    def note(self, text):
        self.notes.append(text)
        say(f"NOTE: {text}")

    def describe(self, event_id):
        label = self.labels.get(event_id)
        return f"{event_id} ({label})" if label else event_id


def set_up_room(net, polls, run):
    alice = net.users["A"]
    room_id = alice.call("POST", "/_matrix/client/v3/createRoom", {
        "preset": "public_chat", "room_version": run.version, "name": f"partition heal bench v{run.version}"})[
        "room_id"]
    set_power(alice, room_id, {net.users["B"].user_id: 50, net.users["C"].user_id: 50})
    for tag in "BC":
        net.users[tag].join(room_id, via=net.names["A"])
    seen = {}

    def settled():
        states, tips = polls.states(room_id), polls.extremities(room_id)
        seen.update(states=states, tips=tips)
        members = {(t, k) for t, k, _ in states["A"] or ()} >= {("m.room.member", u.user_id)
                                                                 for u in net.users.values()}
        return members and same(states.values()) and same(tips.values())

    if not wait_until(settled, SETTLE_TIMEOUT, interval=0.2):
        raise Failure(f"the room {room_id}: the three members' joins, the same state and forward extremities on "
                      f"A, B and C not within {SETTLE_TIMEOUT} s (extremities {seen.get('tips')})")
    return room_id


def make_events(net, run, room_id, side, n, clients):
    """The side's N events from `clients` connections spread over its
    servers: {server: [event IDs of each connection, in order]} and the
    seconds the sends took."""
    servers = SIDES[side]
    plan = [servers[k % len(servers)] for k in range(clients)]  # connection k's server

    def worker(k):
        tag = plan[k]
        user = net.users[tag]
        conn = net.conn(tag)
        ids = []
        try:
            # Connection k makes its share of the N events; its j-th is a state event when j % 10 == 9.
            for j in range(n // clients + (1 if k < n % clients else 0)):
                name = f"{k}.{j}"
                if j % 10 == 9 and (j // 10) % 2 == 0:
                    label = f"side {side}: topic {name} ({tag})"
                    path = f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.topic/"
                    body = {"topic": f"side {side}, event {name}"}
                elif j % 10 == 9:
                    label = f"side {side}: displayname {name} ({tag})"
                    path = f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.member/{q(user.user_id)}"
                    body = {"membership": "join", "displayname": f"{user.user_id[1:].split(':')[0]} {side} {name}"}
                else:
                    label = f"side {side}: message {name} ({tag})"
                    path = f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/h{name}.{time.monotonic_ns()}"
                    body = {"msgtype": "m.text", "body": f"side {side}, event {name}"}
                event_id = conn.call("PUT", path, body)["event_id"]
                ids.append((event_id, label))
        finally:
            conn.close()
        return tag, ids

    started = time.monotonic()
    results = pooled([lambda k=k: worker(k) for k in range(clients)], clients)
    elapsed = time.monotonic() - started
    by_server = {tag: [] for tag in servers}
    for tag, ids in results:
        by_server[tag].append([event_id for event_id, _ in ids])
        run.labels.update(ids)
    return by_server, elapsed


def poll_for(what, predicate, timeout):
    if not wait_until(predicate, timeout, interval=TICK):
        raise Failure(f"{what}: not within {timeout} s")


def partition(net, polls, run, room_id, n, clients):
    """C cut off; both sides make their events and their last words. The two last words' IDs."""
    net.cut()
    cut_at = time.monotonic()
    figures = run.figures
    # Side {A, B}.
    by_server, elapsed = make_events(net, run, room_id, "AB", n, clients)
    counts = {tag: sum(len(ids) for ids in lists) for tag, lists in by_server.items()}
    figures.update(ab_send_s=elapsed, ab_rate=n / elapsed)
    say(f"side {{A,B}}: {n} events (A {counts['A']}, B {counts['B']}) sent in {elapsed:.2f} s = "
        f"{n / elapsed:.0f} events/s, {clients} connections")
    t = time.monotonic()
    b_lasts = [ids[-1] for ids in by_server["B"] if ids]
    poll_for("B's events on A in the partition", lambda: all(polls.has("A", room_id, e) for e in b_lasts),
             SETTLE_TIMEOUT)
    last_ab = net.users["A"].send(room_id, {"msgtype": "m.text", "body": LAST_WORDS["AB"]})
    run.labels[last_ab] = LAST_WORDS["AB"]
    tips = {}

    def side_settled():
        tips.update((tag, forward_extremities(polls.admins[tag], room_id)) for tag in "AB")
        return polls.has("B", room_id, last_ab) and tips["A"] == tips["B"] == {last_ab}

    if not wait_until(side_settled, SETTLE_TIMEOUT, interval=TICK):
        poll_for("A's last word on B", lambda: polls.has("B", room_id, last_ab), 1)
        run.note("before the heal, A's and B's forward extremities are not A's last word alone: "
                 + ", ".join(f"{tag} [{', '.join(run.describe(e) for e in sorted(ids or ()))}]"
                             for tag, ids in tips.items()))
    figures["ab_settle_s"] = time.monotonic() - t
    say(f"side {{A,B}}: A has B's events, and B A's last word, {figures['ab_settle_s']:.2f} s after the sends")
    # Side {C}.
    by_server, elapsed = make_events(net, run, room_id, "C", n, clients)
    figures.update(c_send_s=elapsed, c_rate=n / elapsed)
    say(f"side {{C}}: {n} events sent in {elapsed:.2f} s = {n / elapsed:.0f} events/s, {clients} connections")
    last_c = net.users["C"].send(room_id, {"msgtype": "m.text", "body": LAST_WORDS["C"]})
    run.labels[last_c] = LAST_WORDS["C"]
    tips_c = forward_extremities(polls.admins["C"], room_id)
    if tips_c != {last_c}:
        run.note("before the heal, C's forward extremities are not C's last word alone: "
                 f"[{', '.join(run.describe(e) for e in sorted(tips_c or ()))}]")
    # The partition held.
    for tag, other in (("A", last_c), ("B", last_c), ("C", last_ab)):
        if polls.has(tag, room_id, other):
            raise Failure(f"in the partition {tag} has {run.describe(other)}")
    figures["cut_s"] = time.monotonic() - cut_at
    return {"AB": last_ab, "C": last_c}


def heal_and_measure(net, polls, run, room_id, lasts, deadline):
    """Heals, then polls until converged or `deadline` seconds: the figures,
    or notes of what was missing. The converged states, or None."""
    net.heal()
    healed = run.healed = time.monotonic()
    refused, closed = sum(p.refused for p in net.proxies), sum(p.closed for p in net.proxies)
    say(f"healed after {run.figures['cut_s']:.1f} s cut off (the proxies closed {closed} open connections "
        f"and refused {refused} new ones)")
    want = {tag: lasts[OTHER[tag]] for tag in "ABC"}
    seen, states, first_same = {}, {}, None
    while True:
        tick = time.monotonic()
        for tag in "ABC":
            if tag not in seen and polls.has(tag, room_id, want[tag]):
                seen[tag] = time.monotonic() - healed
                say(f"  {tag} serves {LAST_WORDS[OTHER[tag]]} {seen[tag]:.2f} s after the heal")
        states = polls.states(room_id)
        now = time.monotonic() - healed
        if same(states.values()) and first_same is None:
            first_same = now
        if len(seen) == 3 and same(states.values()):
            run.converged = now
            break
        if now > deadline:
            break
        time.sleep(max(0.0, tick + TICK - time.monotonic()))
    run.figures.update({f"{tag}_saw_s": seen.get(tag) for tag in "ABC"})
    run.figures["state_first_same_s"] = first_same
    run.figures["converged_s"] = run.converged
    if run.converged is None:
        missing = [f"{tag} does not serve {LAST_WORDS[OTHER[tag]]}" for tag in "ABC" if tag not in seen]
        run.note(f"NOT CONVERGED within {deadline} s of the heal: "
                 + "; ".join(missing + [state_differences(run, states)]))
        return None
    say(f"converged {run.converged:.2f} s after the heal ({len(next(iter(states.values())))} state events "
        f"identical on A, B and C)")
    topic = next((e for t, k, e in states["A"] if t == "m.room.topic"), None)
    run.figures["topic"] = run.describe(topic) if topic else "none"
    return states


def state_differences(run, states, before=None):
    """The (type, state_key) on which the servers differ (or, with `before`, where `states` differs from it)."""
    if any(s is None for s in states.values()):
        return "state not readable on " + ", ".join(tag for tag, s in states.items() if s is None)
    pairs = dict(states) if before is None else {f"{tag} now": states[tag] for tag in states} | {
        f"{tag} at convergence": before[tag] for tag in before}
    as_maps = {name: {(t, k): e for t, k, e in s} for name, s in pairs.items()}
    keys = sorted(set().union(*(m.keys() for m in as_maps.values())))
    lines = []
    for key in keys:
        events = {name: m.get(key) for name, m in as_maps.items()}
        if len(set(events.values())) > 1:
            lines.append(f"{key[0]} {key[1]!r}: " + ", ".join(
                f"{name} {run.describe(e) if e else 'nothing'}" for name, e in events.items()))
    if not lines:
        return "the states are identical"
    return f"{len(lines)} state keys differ: " + "; ".join(lines[:8]) + ("; ..." if len(lines) > 8 else "")


def after_convergence(net, polls, run, room_id, lasts, sides_events, converged_states):
    """Not part of convergence, polled together from it: until the three
    servers have the same forward extremities, and until each serves every
    one of the other side's N events (each pass asks for the events still
    missing, three servers in parallel); at most EXTRAS_TIMEOUT s after
    convergence, and the counts are taken as final after STALLED s without
    one more served. Then the state once more."""
    missing = {tag: list(sides_events[OTHER[tag]]) for tag in "ABC"}
    conns = {tag: net.conn(tag) for tag in "ABC"}
    end = run.healed + run.converged + EXTRAS_TIMEOUT
    progress = time.monotonic()
    tips, tips_at, counted = {}, None, False

    def still_missing(tag):
        left = [e for e in missing[tag] if get_event(conns[tag], room_id, e) is None]
        return tag, left, time.monotonic()

    try:
        while True:
            started = time.monotonic()
            if tips_at is None:
                tips = polls.extremities(room_id)
                if same(tips.values()):
                    tips_at = time.monotonic() - run.healed
            if not counted:
                pending = [tag for tag in "ABC" if missing[tag]]
                for tag, left, at in pooled([lambda tag=tag: still_missing(tag) for tag in pending], 3):
                    if len(left) < len(missing[tag]):
                        progress = at
                    missing[tag] = left
                    if not left:
                        run.figures[f"{tag}_all_s"] = at - run.healed
                now = time.monotonic()
                counted = not any(missing.values()) or now > progress + STALLED
            if (tips_at is not None and counted) or time.monotonic() > end:
                break
            time.sleep(max(0.0, started + 0.5 - time.monotonic()))
    finally:
        for conn in conns.values():
            conn.close()
    run.figures["extremities_s"] = tips_at
    if tips_at is not None and tips["A"] != frozenset(lasts.values()):
        run.note("the forward extremities agree, but are ["
                 + ", ".join(run.describe(e) for e in sorted(tips["A"])) + "], not the two last words")
    elif tips_at is None:
        def listed(ids):
            if ids is None:
                return "?"
            if ids == frozenset(lasts.values()):
                return "the two last words"
            names = sorted(run.labels.get(e, e) for e in ids)
            return f"{len(ids)}: " + ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")

        run.note(f"forward extremities not the same on A, B and C {EXTRAS_TIMEOUT} s after convergence: "
                 + "; ".join(f"{tag} {listed(ids)}" for tag, ids in tips.items()))
    for tag in "ABC":
        total = len(sides_events[OTHER[tag]])
        run.figures.setdefault(f"{tag}_all_s", None)
        run.figures[f"{tag}_served"] = f"{total - len(missing[tag])}/{total}"
        if missing[tag]:
            kinds = {}
            for e in missing[tag]:
                kind = run.labels[e].split(":", 1)[1].split()[0]
                kinds[kind] = kinds.get(kind, 0) + 1
            run.note(f"{tag} does not serve {len(missing[tag])} of the other side's {total} events "
                     f"({', '.join(f'{n} {kind}' for kind, n in sorted(kinds.items()))}; waited up to "
                     f"{EXTRAS_TIMEOUT} s after convergence, {STALLED} s without progress); by connection and "
                     f"index: " + ", ".join(run.labels[e] for e in missing[tag][:6])
                     + (", ..." if len(missing[tag]) > 6 else ""))
    say("the other side's events served: " + ", ".join(
        f"{tag} {run.figures[f'{tag}_served']}" + (f" at {run.figures[f'{tag}_all_s']:.2f} s"
                                                    if run.figures[f"{tag}_all_s"] is not None else " in the end")
        for tag in "ABC") + "; forward extremities the same on the three: " + seconds(tips_at))
    final = polls.states(room_id)
    if final != converged_states:
        run.note("the state changed after convergence: " + state_differences(run, final, converged_states))


def synapse_pruned(net, room_id):
    """The events Synapse dropped from the room's inbound federation queue
    (past 100 staged it keeps only their forward extremities, logging
    "Pruning N events in room R from federation queue"), from its log."""
    pattern = re.compile(rf"Pruning (\d+) events in room {re.escape(room_id)} from federation queue")
    with open(net.logs["synapse C"], errors="replace") as f:
        return sum(int(m.group(1)) for m in pattern.finditer(f.read()))


def run_room(net, args, run):
    polls = Pollers(net)
    try:
        started = time.monotonic()
        room_id = set_up_room(net, polls, run)
        say(f"== {run.label}: room {room_id}, three members, set up in {time.monotonic() - started:.1f} s; "
            f"C cut off")
        before = set(run.labels)
        try:
            lasts = partition(net, polls, run, room_id, args.events, args.clients)
        except BaseException:
            net.heal()  # for the next room on these servers
            raise
        by_side = {side: [e for e, label in run.labels.items() if e not in before and label.startswith(f"side {side}:")]
                   for side in SIDES}
        states = heal_and_measure(net, polls, run, room_id, lasts, args.deadline)
        if run.converged is not None:
            after_convergence(net, polls, run, room_id, lasts, by_side, states)
        if net.kind == "synapse":
            run.figures["synapse_pruned"] = synapse_pruned(net, room_id)
    finally:
        polls.close()


# ---------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args):
        self.args = args
        self.binary = os.path.abspath(args.hearth)
        self.workdir = tempfile.mkdtemp(prefix="hearth-partheal-", dir="/tmp")
        self.procs, self.logs = [], {}
        self.runs = []

    def run(self):
        versions = self.args.versions.split(",")
        for kind in self.args.setups.split(","):
            runs = [Run(kind, version) for version in versions]
            self.runs += runs
            say(f"==== set-up {kind}: starting the servers")
            net = None
            try:
                started = time.monotonic()
                net = Network(self, kind)
                say(f"three servers, three users and three admins ready in {time.monotonic() - started:.1f} s")
                for run in runs:
                    try:
                        run_room(net, self.args, run)
                    except Exception as e:  # noqa: BLE001 - the run is reported failed, the others go on
                        run.failed = f"{type(e).__name__}: {e}"
                        say(f"FAILED: {run.label}: {run.failed}")
            except Exception as e:  # noqa: BLE001 - this set-up's runs are reported failed
                for run in runs:
                    run.failed = run.failed or f"set-up: {type(e).__name__}: {e}"
                say(f"FAILED: set-up {kind}: {type(e).__name__}: {e}")
            finally:
                if net:
                    net.close()
                    for proc in net.procs:
                        self.procs.remove(proc)

    def report(self, elapsed):
        a, runs = self.args, self.runs

        def row(label, fmt):
            cells = []
            for run in runs:
                try:
                    cells.append(fmt(run) if not run.failed else "failed")
                except KeyError:
                    cells.append("—")
            return f"| {label} | " + " | ".join(cells) + " |"

        def converged(run):
            if run.converged is not None:
                return f"{run.converged:.2f} s"
            if "ab_rate" in run.figures and "A_saw_s" in run.figures:
                return f"NOT within {a.deadline} s"
            raise KeyError

        def served(run):
            return ", ".join(seconds(run.figures[f"{tag}_all_s"]) if run.figures[f"{tag}_all_s"] is not None
                             else run.figures[f"{tag}_served"] for tag in "ABC")

        lines = ["| | " + " | ".join(run.label for run in runs) + " |", "|---" * (len(runs) + 1) + "|",
                 row(f"side {{A,B}}: {a.events} events sent", lambda r: f"{r.figures['ab_send_s']:.2f} s = "
                                                                      f"{r.figures['ab_rate']:.0f} events/s"),
                 row(f"side {{C}}: {a.events} events sent", lambda r: f"{r.figures['c_send_s']:.2f} s = "
                                                                  f"{r.figures['c_rate']:.0f} events/s"),
                 row("**converged** (each has the other side's last word, same state)", converged),
                 row("A serves C's last word", lambda r: seconds(r.figures["A_saw_s"])),
                 row("B serves C's last word", lambda r: seconds(r.figures["B_saw_s"])),
                 row("C serves A's last word", lambda r: seconds(r.figures["C_saw_s"])),
                 row("identical state first seen", lambda r: seconds(r.figures["state_first_same_s"])),
                 row(f"same forward extremities (≤ {EXTRAS_TIMEOUT} s after convergence)",
                     lambda r: seconds(r.figures["extremities_s"])),
                 row(f"A, B, C serve all {a.events} of the other side's events (≤ {EXTRAS_TIMEOUT} s after "
                     "convergence; else how many)", served),
                 row("Synapse C: events pruned from its inbound federation queue",
                     lambda r: str(r.figures["synapse_pruned"]))]
        details = ["", "Details per run:", ""]
        for run in runs:
            text = "failed: " + run.failed if run.failed else ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in run.figures.items())
            details.append(f"- {run.label}: {text}" + "".join(f"; NOTE: {n}" for n in run.notes))
        command = " ".join(shlex.quote(x) for x in [sys.executable, *sys.argv])
        notes = ["", f"- {a.clients} client connections per side (side {{A,B}}: half on A, half on B), one in ten "
                     "events a state event (topic or displayname); sides one after the other, C cut off meanwhile.",
                 f"- whole run {elapsed:.0f} s; {os.cpu_count()} cores; Hearth {self.binary}",
                 "", f"command: {command}"]
        text = "\n".join(lines + details + notes) + "\n"
        print(text, flush=True)
        if a.out:
            with open(a.out, "w") as f:
                f.write(f"<!-- benches/partition_heal.py, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"
                        f" UTC, Python {platform.python_version()} -->\n" + text)
            say(f"wrote {a.out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hearth", help="the hearth binary (a release build for figures)")
    parser.add_argument("--events", type=int, default=1000, help="events each side makes in the partition")
    parser.add_argument("--versions", default="12,10", help="room versions, comma-separated")
    parser.add_argument("--setups", default="hearth,synapse", help="hearth (A, B, C Hearth), synapse (C Synapse)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client connections per side")
    parser.add_argument("--deadline", type=int, default=300, help="seconds after the heal to wait for convergence")
    parser.add_argument("--hearth-log", default=LOG, help="Hearth's log filter")
    parser.add_argument("--out", help="also write the table as Markdown there")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if args.events < 10 or args.clients < 2:
        parser.error("--events has to be at least 10 (a state event each side), --clients at least 2")
    started = time.monotonic()
    bench = Bench(args)
    say(f"work directory {bench.workdir}; {args.events} events per side; room versions {args.versions}")
    try:
        bench.run()
    finally:
        stop(list(bench.procs))
    bad = [run for run in bench.runs if run.failed or run.converged is None]
    bench.report(time.monotonic() - started)
    if any(run.notes for run in bench.runs) and not (bad or args.keep):
        print("# runs with notes: rerun with --keep for the servers' logs")
    if bad or args.keep:
        for name, log in bench.logs.items():
            print(f"# {name}: {log}")
        why = "a run failed or did not converge" if bad else "--keep"
        print(f"# kept the work directory ({why}): {bench.workdir}")
    else:
        shutil.rmtree(bench.workdir, ignore_errors=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
