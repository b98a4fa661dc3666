"""Two Hearth servers and one Synapse, partitioned and healed with
conflicting moderation on both sides: afterwards all three must hold the
same room state, the one that state resolution (v2; v2.1 in room version
12) gives.

Usage: synapse_partitions.py PATH/TO/hearth
Run with the interop virtualenv's Python (tests/interop/requirements.txt),
like synapse_interop.py.

Set-up: a test CA and a certificate for localhost (servers.py), Hearth A,
Hearth B and Synapse C on 127.0.0.1, each with a plain client listener and a
TLS federation listener, and a shared secret for one admin account each
("operator", for the forward extremities and Synapse's fetch_event). Each
server's name is `localhost:<proxy port>`, where a TCP proxy run by this
script forwards to the real federation listener; A and B reach each other
directly through `federation.resolve_overrides`, so the proxies carry
exactly the traffic to and from C. A partition makes every proxy close its
open connections and close each new one right after accepting it; healing
makes them forward again.

Users: owner and xavier on B, alice and watcher on A, carol and chris on C.
For each scenario, six rooms (room versions 10, 11 and 12, each with the
schedules "A first" and "C first"): owner creates the room on B
(public_chat) and gives chris 100, alice 50 and carol 50 (reading the
current m.room.power_levels; in version 12 the creator stays out of
`users`); alice, watcher and xavier join, then (once B has A's joins) carol
and chris. When all three servers show all six joined, the same state and
the same forward extremities, C is cut off. In every room side A (A and B,
through their client APIs) and side C (Synapse) then act, each side ending
with a message ("A's last word" from watcher once A has all of its side's
events, "C's last word" from chris), so that each side's branch ends in one
event that nobody soft-fails. "A first" runs all of side A's actions, then
all of side C's, "C first" the reverse; the second side starts once the
clock is 2 ms past the first side's last event (its origin_server_ts is
checked to be strictly later). The partition is checked to have held (C
has its own power levels, A its own, neither has the other's last word),
then healed. Once every server's forward extremities are exactly the two
last words (so the branches meet in nothing but the resolution of the two
sides' states), watcher (A) and chris (C) each send a message. A server
still holding another extremity after 60 s is a FAIL line for the room
(with the current states the servers then disagree on); the messages go
out anyway, and the room's result line notes it.

  Scenario 2, conflicting bans. Side A: owner gives alice 75 ("ownerPL"),
  alice bans carol, alice bans xavier. Side C: chris gives carol 75
  ("chrisPL"), carol bans alice, carol bans xavier, carol unbans xavier.
  Expected: "A first", and "C first" in version 12 (the creator's infinite
  power orders ownerPL first): chrisPL, alice banned by carol, carol
  joined, xavier left by carol's unban. "C first" in versions 10 and 11:
  ownerPL, carol banned by alice, alice joined, xavier left by carol's
  unban (alice's join, power 50, is placed before carol's, so alice's ban
  of xavier, 75, is ordered before carol's join and all of carol's events).
  The banned one of alice and carol then gets 403 sending on her own server.

  Scenario 3, concurrent power levels and join rules. Side A: owner sets
  join_rule invite ("ownerJR"), then alice 75 and state_default 60
  ("ownerPL"). Side C: chris sets join_rule knock ("chrisJR"), then carol 75
  ("chrisPL"). Expected: chrisJR and chrisPL, except "C first" in versions
  10 and 11: ownerJR and ownerPL.

For each room, within 60 s of the heal: every server serves both messages
sent after the heal, the three have the same forward extremities, Synapse
has every event of the partition and after (its admin fetch_event: both
servers hide soft-failed events from clients, so for Hearth the events it
does not serve are listed, not failed), and the full current state (GET
/rooms/{roomId}/state as watcher on A, owner on B, chris on C; a set of
(type, state_key, event_id)) is the same on A, B and C; then it has to hold
the expected event IDs. A difference is reported per state key with the
event each server has, with Hearth's "state resolution in ... replaced ..."
log lines for the room.

Prints one line per check (ok / FAIL) and a summary line
"partitions: N passed, M failed"; exits non-zero when anything failed. The
work directory (configurations, databases, the three logs) is deleted when
everything passed and kept, its path printed, otherwise.
"""

import hashlib
import hmac
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients"))
from harness import http, print_log_tails, stop, wait_until  # noqa: E402
from servers import (Failure, free_ports, make_certificates, start_hearth, start_synapse,  # noqa: E402
                     wait_for_server)
# The client helpers and the result lines of the two-server interop test.
from synapse_interop import PASSWORD, RESULTS, Client, expect, q, record, register, run_check  # noqa: E402

VERSIONS = ("10", "11", "12")
SCHEDULES = ("A first", "C first")
SETTLE_TIMEOUT = 60  # for the three servers to agree, before the partition and after the heal
STEP_TIMEOUT = 30  # for A to see what B did in the partition
TIPS = ("A's last word", "C's last word")
AFTER = ("A after the heal", "C after the heal")


# ---------------------------------------------------------------- the proxies


def _close(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class Proxy:
    """A TCP proxy on 127.0.0.1:`port` to 127.0.0.1:`target` (a server's TLS
    federation listener, so the server name `localhost:<port>` reaches it).
    cut() closes the open connections and then every new one as soon as it is
    accepted; heal() forwards again."""

    def __init__(self, name, port, target):
        self.name, self.port, self.target = name, port, target
        self.lock = threading.Lock()
        self.open = True
        self.pairs = set()  # (client side, server side) of the forwarded connections
        self.forwarded = self.refused = self.closed = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(128)
        threading.Thread(target=self._accept, name=f"proxy {name}", daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # the listener was closed
            with self.lock:
                refuse = not self.open
                if refuse:
                    self.refused += 1
            if refuse:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            pair = (client, upstream)
            with self.lock:
                if not self.open:  # cut while connecting
                    self.refused += 1
                    _close(client)
                    _close(upstream)
                    continue
                self.pairs.add(pair)
                self.forwarded += 1
            done = []
            for source, sink in (pair, pair[::-1]):
                threading.Thread(target=self._pump, args=(source, sink, pair, done), daemon=True).start()

    def _pump(self, source, sink, pair, done):
        """Copies one direction; at its end half-closes the other side, and
        closes both sockets once both directions ended (or on an error)."""
        failed = False
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            failed = True
        with self.lock:
            done.append(source)
            finished = failed or len(done) == 2
            if finished:
                self.pairs.discard(pair)
        if finished:
            for sock in pair:
                _close(sock)

    def cut(self):
        with self.lock:
            self.open = False
            pairs, self.pairs = list(self.pairs), set()
            self.closed += len(pairs)
        for pair in pairs:
            for sock in pair:
                _close(sock)

    def heal(self):
        with self.lock:
            self.open = True

    def shut(self):
        self.cut()
        _close(self.listener)


# ---------------------------------------------------------------- requests


def poll(what, predicate, timeout, describe=None):
    """wait_until with a Failure at the deadline (`describe()` says what was seen)."""
    value = wait_until(predicate, timeout, interval=0.1)
    if not value:
        raise Failure(f"{what}: not within {timeout} s" + (f"; {describe()}" if describe else ""))
    return value


def full_state(client, room_id):
    """The room's current state as `client`'s server serves it: {(type, state_key): event}, or None."""
    status, answer = client.request("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/state")
    if status != 200 or not isinstance(answer, list):
        return None
    return {(e["type"], e["state_key"]): e for e in answer}


def get_event(client, room_id, event_id):
    status, answer = client.request("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/event/{q(event_id)}")
    return answer if status == 200 and isinstance(answer, dict) else None


def forward_extremities(admin, room_id):
    """The room's forward extremities on `admin`'s server (the admin API Synapse and Hearth share), or None."""
    status, answer = admin.request("GET", f"/_synapse/admin/v1/rooms/{q(room_id)}/forward_extremities")
    if status != 200 or not isinstance(answer, dict):
        return None
    return frozenset(r["event_id"] for r in answer.get("results", []))


def synapse_has(admin, event_id):
    """Whether Synapse has the event (its admin API; soft-failed events included, rejected ones not)."""
    return admin.request("GET", f"/_synapse/admin/v1/fetch_event/{q(event_id)}")[0] == 200


def put_state(client, room_id, event_type, content, state_key=""):
    """Sends a state event; the event as the sender's server serves it."""
    path = f"/_matrix/client/v3/rooms/{q(room_id)}/state/{event_type}/{q(state_key)}"
    event_id = client.call("PUT", path, content)["event_id"]
    event = get_event(client, room_id, event_id)
    expect(event, f"{client.server} does not serve {event_id}, which {client.user_id} just sent")
    return event


def send_message(client, room_id, body):
    event_id = client.send(room_id, {"msgtype": "m.text", "body": body})
    event = get_event(client, room_id, event_id)
    expect(event, f"{client.server} does not serve {event_id}, which {client.user_id} just sent")
    return event


def set_power(client, room_id, users, **top):
    """Reads m.room.power_levels on `client`'s server, changes the levels of
    `users` and the top-level keys `top`, sends it."""
    path = f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.power_levels/"
    content = client.call("GET", path)
    content["users"] = {**content.get("users", {}), **users}
    content.update(top)
    return put_state(client, room_id, "m.room.power_levels", content)


def membership_change(client, room_id, action, target, membership):
    """POST /ban or /unban; the member event it made (read from the state,
    which it has to have changed)."""
    client.call("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/{action}", {"user_id": target,
                                                                           "reason": "partition test"})
    event = (full_state(client, room_id) or {}).get(("m.room.member", target))
    expect(event and event["content"].get("membership") == membership and event["sender"] == client.user_id,
           f"after {client.user_id} {action}ned {target} on {client.server}, the state has {event}")
    return event


def register_admin(server, base, username, secret):
    """An admin account through the shared-secret registration (Synapse's admin API, which Hearth has too)."""
    url = base + "/_synapse/admin/v1/register"
    status, answer = http("GET", url)
    expect(status == 200, f"GET {url} answered {status}: {answer}")
    nonce = answer["nonce"]
    mac = hmac.new(secret.encode(), b"\0".join([nonce.encode(), username.encode(), PASSWORD.encode(), b"admin"]),
                   hashlib.sha1).hexdigest()
    status, answer = http("POST", url, {"nonce": nonce, "username": username, "password": PASSWORD, "admin": True,
                                        "mac": mac})
    expect(status == 200, f"registering the admin {username} on {server} answered {status}: {answer}")
    return Client(server, base, answer["user_id"], answer["access_token"])


# ---------------------------------------------------------------- the servers and their users


class Room:
    """One room of a scenario: the events the script made, by label."""

    def __init__(self, scenario, version, schedule):
        self.scenario, self.version, self.schedule = scenario, version, schedule
        self.room_id = None
        self.events = {}  # label -> event
        self.labels = {}  # event ID -> label
        self.partitioned = []  # labels of the events sent in the partition and after it
        self.broken = None  # why the room left the scenario early
        self.notes = []  # what the result lines add

    def name(self, title):
        return f"scenario {self.scenario} ({title}), room version {self.version}, {self.schedule}"

    def add(self, label, event, partitioned=True):
        self.events[label] = event
        self.labels[event["event_id"]] = label
        if partitioned:
            self.partitioned.append(label)
        return event

    def id(self, label):
        return self.events[label]["event_id"]

    def label(self, event_id):
        label = self.labels.get(event_id)
        return f"{event_id} ({label})" if label else event_id


class Network:
    """Hearth A, Hearth B, Synapse C, their proxies, the six users and the three admins."""

    def __init__(self, binary, workdir, procs, logs, proxies):
        self.workdir, self.logs = workdir, logs
        tls = make_certificates(workdir)
        secret = secrets.token_hex(16)
        (a_client, a_real, a_proxy, b_client, b_real, b_proxy, c_client, c_real, c_proxy) = free_ports(9)
        self.proxies = [Proxy("A", a_proxy, a_real), Proxy("B", b_proxy, b_real), Proxy("C", c_proxy, c_real)]
        proxies.extend(self.proxies)
        a_name, b_name, c_name = (f"localhost:{p}" for p in (a_proxy, b_proxy, c_proxy))
        hearths = {}
        for tag, client_port, real, name, other, other_real in (("A", a_client, a_real, a_name, b_name, b_real),
                                                                ("B", b_client, b_real, b_name, a_name, a_real)):
            directory = os.path.join(workdir, f"hearth-{tag.lower()}")
            os.makedirs(directory)
            proc, url, server_name, logs[f"hearth {tag}"] = start_hearth(
                binary, directory, tls, client_port, real, server_name=name, shared_secret=secret,
                resolve_overrides={other: f"127.0.0.1:{other_real}"})
            procs.append(proc)
            hearths[tag] = (proc, url, server_name)
        synapse, c_url, c_server, logs["synapse C"], logs["synapse C (stdout)"] = start_synapse(
            workdir, tls, c_client, c_real, server_name=c_name, extra={"registration_shared_secret": secret})
        procs.append(synapse)
        wait_for_server("hearth A", hearths["A"][0], hearths["A"][1], logs["hearth A"])
        wait_for_server("hearth B", hearths["B"][0], hearths["B"][1], logs["hearth B"])
        wait_for_server("synapse C", synapse, c_url, logs["synapse C (stdout)"])
        self.a, self.b, self.c = hearths["A"][2], hearths["B"][2], c_server
        urls = {"A": hearths["A"][1], "B": hearths["B"][1], "C": c_url}
        names = {"A": self.a, "B": self.b, "C": self.c}
        print(f"# Hearth A {self.a} (federation 127.0.0.1:{a_real}, client {urls['A']}), "
              f"Hearth B {self.b} (federation 127.0.0.1:{b_real}, client {urls['B']}), "
              f"Synapse C {self.c} (federation 127.0.0.1:{c_real}, client {urls['C']})", flush=True)
        self.owner = register(self.b, urls["B"], "owner")
        self.xavier = register(self.b, urls["B"], "xavier")
        self.alice = register(self.a, urls["A"], "alice")
        self.watcher = register(self.a, urls["A"], "watcher")
        self.carol = register(self.c, urls["C"], "carol")
        self.chris = register(self.c, urls["C"], "chris")
        self.members = [self.owner, self.xavier, self.alice, self.watcher, self.carol, self.chris]
        # Who reads each server's state: joined throughout, whatever the resolution.
        self.readers = {"A": self.watcher, "B": self.owner, "C": self.chris}
        self.admins = {tag: register_admin(names[tag], urls[tag], "operator", secret) for tag in "ABC"}

    def cut(self):
        for proxy in self.proxies:
            proxy.cut()

    def heal(self):
        for proxy in self.proxies:
            proxy.heal()

    def states(self, room_id):
        return {server: full_state(reader, room_id) for server, reader in self.readers.items()}

    def extremities(self, room_id):
        return {server: forward_extremities(admin, room_id) for server, admin in self.admins.items()}

    # ---- before the partition

    def set_up(self, room):
        """Creates the room on B, gives the powers, lets everyone join; waits
        until A, B and C show all six joined, the same state and the same
        forward extremities."""
        r = room.room_id = self.owner.call("POST", "/_matrix/client/v3/createRoom", {
            "preset": "public_chat", "room_version": room.version,
            "name": f"partition scenario {room.scenario} v{room.version} {room.schedule}"})["room_id"]
        room.add("setupPL", set_power(self.owner, r, {self.alice.user_id: 50, self.carol.user_id: 50,
                                                       self.chris.user_id: 100}), partitioned=False)
        for client in (self.alice, self.watcher, self.xavier):
            client.join(r, via=None if client.server == self.b else self.b)
        # watcher's join is made on A (resident by then) and reaches B in its own time; C, not yet in
        # the room, only learns of it through B's state when carol joins, so B has to have it first.
        poll(f"{r}: alice's and watcher's joins on B", lambda: all(
            (full_state(self.owner, r) or {}).get(("m.room.member", m.user_id), {}).get("content", {})
            .get("membership") == "join" for m in (self.alice, self.watcher)), STEP_TIMEOUT)
        for client in (self.carol, self.chris):
            client.join(r, via=self.b)
        seen, tips = {}, {}

        def settled():
            seen.update(self.states(r))
            tips.update(self.extremities(r))
            if any(state is None for state in seen.values()) or any(t is None for t in tips.values()):
                return False
            ids = {server: {k: e["event_id"] for k, e in state.items()} for server, state in seen.items()}
            joined = all(seen["B"].get(("m.room.member", m.user_id), {}).get("content", {}).get("membership")
                         == "join" for m in self.members)
            return joined and ids["A"] == ids["B"] == ids["C"] and tips["A"] == tips["B"] == tips["C"]

        poll(f"{r}: all six joined, the same state and forward extremities on A, B and C", settled, SETTLE_TIMEOUT,
             lambda: f"{differences(seen, room)}; forward extremities {describe_tips(tips, room)}")
        expect(seen["B"][("m.room.power_levels", "")]["event_id"] == room.id("setupPL"),
               "the power levels are not the ones set")
        for member in self.members:
            room.add(f"{localpart(member)}'s join", seen["B"][("m.room.member", member.user_id)], partitioned=False)

    # ---- in the partition

    def last_word(self, room, side):
        """The message that ends a side's branch: from chris on C, or from
        watcher on A once A has every event of side A (owner's come from B)."""
        if side == "C":
            return room.add("C's last word", send_message(self.chris, room.room_id, "C's last word"))
        ours = [label for label in room.partitioned if label not in TIPS and self.side_of(room, label) == "A"]
        poll("side A's events on A", lambda: all(get_event(self.watcher, room.room_id, room.id(label))
                                                 for label in ours), STEP_TIMEOUT,
             lambda: "missing: " + ", ".join(label for label in ours
                                             if not get_event(self.watcher, room.room_id, room.id(label))))
        return room.add("A's last word", send_message(self.watcher, room.room_id, "A's last word"))

    def side_of(self, room, label):
        sender = room.events[label]["sender"]
        return "C" if sender.endswith(":" + self.c) else "A"


def localpart(client):
    return client.user_id.split(":")[0][1:]


# ---------------------------------------------------------------- reporting


def describe(room, event):
    if event is None:
        return "nothing"
    label = room.labels.get(event["event_id"])
    if label:
        return f"{event['event_id']} ({label})"
    extra = f"{event['content'].get('membership')} " if event["type"] == "m.room.member" else ""
    return f"{event['event_id']} ({extra}by {event['sender']})"


def differences(states, room):
    """One line per state key on which the servers differ, with each server's event."""
    if not states or any(state is None for state in states.values()):
        return f"state not readable on {[s for s, state in (states or {}).items() if state is None]}"
    lines = []
    keys = set().union(*(state.keys() for state in states.values()))
    for key in sorted(keys):
        events = {server: state.get(key) for server, state in states.items()}
        if len({e["event_id"] if e else None for e in events.values()}) > 1:
            lines.append(f"{key[0]} {key[1]!r}: " + ", ".join(f"{server} {describe(room, e)}"
                                                              for server, e in events.items()))
    return "; ".join(lines) if lines else "no differences"


def describe_tips(tips, room):
    return ", ".join(f"{server} [{', '.join(sorted(room.label(e) for e in ids)) if ids is not None else '?'}]"
                     for server, ids in tips.items())


def resolution_log(net, room):
    """Hearth's 'state resolution in ROOM replaced ...' lines for the room."""
    lines = []
    for name in ("hearth A", "hearth B"):
        try:
            with open(net.logs[name], errors="replace") as f:
                lines += [f"  {name}: {line.strip()}" for line in f
                          if "state resolution in" in line and room.room_id in line]
        except OSError:
            pass
    if not lines:
        return "\n  (no 'state resolution in ... replaced' lines for the room in Hearth A's or B's log)"
    for label, event in room.events.items():  # the log names events by ID
        lines = [line.replace(event["event_id"], f"{event['event_id']} ({label})") for line in lines]
    return "\n" + "\n".join(lines[-20:])


# ---------------------------------------------------------------- one scenario


def run_scenario(net, number, title, side_a, side_c, expected, after=None):
    """Six rooms set up, C cut off, both sides act in every room, healed,
    then per room: the two branches meet, a message from each side, the
    same state everywhere, the expected one (`expected(room)`: [(key,
    label)]), and the `after(room)` checks."""
    rooms = [Room(number, version, schedule) for version in VERSIONS for schedule in SCHEDULES]
    started = time.monotonic()
    for room in rooms:
        try:
            net.set_up(room)
        except Exception as e:  # noqa: BLE001 - one FAIL line for the room, the others go on
            room.broken = f"set-up: {type(e).__name__}: {e}"
            record("FAIL", room.name(title), room.broken)
    live = [room for room in rooms if not room.broken]
    print(f"# scenario {number}: {len(live)} rooms set up in {time.monotonic() - started:.1f} s: "
          + ", ".join(f"v{r.version} {r.schedule} {r.room_id}" for r in live), flush=True)

    net.cut()
    cut_at = time.monotonic()
    try:
        for room in live:
            try:
                sides = {"A": side_a, "C": side_c}
                first, second = ("A", "C") if room.schedule == "A first" else ("C", "A")
                before = sides[first](net, room) + [net.last_word(room, first)]
                last_ts = max(e["origin_server_ts"] for e in before)
                # The second side's first event has to come strictly later: wait for the clock.
                poll("the clock moving on", lambda: time.time() * 1000 >= last_ts + 2, 5)
                after_events = sides[second](net, room) + [net.last_word(room, second)]
                first_ts = min(e["origin_server_ts"] for e in after_events)
                expect(first_ts > last_ts, f"the second side's first event has origin_server_ts {first_ts}, "
                                           f"the first side's last {last_ts}")
                # The partition held: each side has its own power levels, not the other's last word.
                for server, label in (("A", "ownerPL"), ("C", "chrisPL")):
                    pl = (full_state(net.readers[server], room.room_id) or {}).get(("m.room.power_levels", ""))
                    expect(pl and pl["event_id"] == room.id(label),
                           f"in the partition {server} has power levels {describe(room, pl)}, not {label}")
                for server, label in (("A", "C's last word"), ("C", "A's last word")):
                    expect(not get_event(net.readers[server], room.room_id, room.id(label)),
                           f"in the partition {server} has {label}")
            except Exception as e:  # noqa: BLE001
                room.broken = f"in the partition: {type(e).__name__}: {e}"
                record("FAIL", room.name(title), room.broken)
    finally:
        net.heal()
    healed_at = time.monotonic()
    refused = sum(p.refused for p in net.proxies)
    closed = sum(p.closed for p in net.proxies)
    print(f"# scenario {number}: C cut off for {healed_at - cut_at:.1f} s (the proxies closed {closed} "
          f"open connections and refused {refused} new ones), healed", flush=True)

    # The branches meet: every server's forward extremities are the two last words.
    live = [room for room in live if not room.broken]
    deadline = healed_at + SETTLE_TIMEOUT
    for room in live:
        want = frozenset(room.id(label) for label in TIPS)
        tips = {}

        def met():
            tips.update(net.extremities(room.room_id))
            return all(t == want for t in tips.values())

        if not wait_until(met, max(deadline - time.monotonic(), 0), interval=0.2):
            extra = "; ".join(f"{server} +[{', '.join(sorted(room.label(e) for e in ids - want))}]"
                              for server, ids in tips.items() if ids is not None and ids - want)
            record("FAIL", f"{room.name(title)}: after the heal the forward extremities are the two last words",
                   f"not within {SETTLE_TIMEOUT} s: {describe_tips(tips, room)}; so the current states differ: "
                   f"{differences(net.states(room.room_id), room)}")
            room.notes.append(f"the messages after the heal were sent with more forward extremities than the "
                              f"two last words ({extra})")
    print(f"# scenario {number}: waited {time.monotonic() - healed_at:.1f} s after the heal for the branches to "
          f"meet", flush=True)
    for room in live:
        try:
            room.add("A after the heal", send_message(net.watcher, room.room_id, "after the heal, from A"))
            room.add("C after the heal", send_message(net.chris, room.room_id, "after the heal, from C"))
        except Exception as e:  # noqa: BLE001
            room.broken = f"after the heal: {type(e).__name__}: {e}"
            record("FAIL", room.name(title), room.broken)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    for room in rooms:
        if not room.broken:
            run_check(room.name(title), lambda room=room: check_room(net, room, expected(room), deadline))
            for name, check in (after(room) if after else []):
                run_check(f"{room.name(title)}: {name}", check)


def check_room(net, room, expected, deadline):
    """By `deadline`: every server serves both messages sent after the heal,
    the forward extremities are the same on all three, Synapse has every
    event of the partition and after, and the three states are identical;
    then the expected entries."""
    seen, tips, trouble = {}, {}, {}

    def converged():
        trouble.clear()
        for server, reader in net.readers.items():
            lacking = [label for label in AFTER if not get_event(reader, room.room_id, room.id(label))]
            if lacking:
                trouble[f"not served on {server}"] = lacking
        lacking = [label for label in room.partitioned if not synapse_has(net.admins["C"], room.id(label))]
        if lacking:
            trouble["not on C (fetch_event)"] = lacking
        tips.update(net.extremities(room.room_id))
        seen.update(net.states(room.room_id))
        if trouble or any(t is None for t in tips.values()) or any(s is None for s in seen.values()):
            return False
        ids = [{k: e["event_id"] for k, e in state.items()} for state in seen.values()]
        return tips["A"] == tips["B"] == tips["C"] and ids[0] == ids[1] == ids[2]

    if not wait_until(converged, max(deadline - time.monotonic(), 0), interval=0.2):
        raise Failure("".join(f"{note}; " for note in room.notes) + f"not converged within {SETTLE_TIMEOUT} s: "
                      + "".join(f"{what}: {', '.join(labels)}; " for what, labels in trouble.items())
                      + f"forward extremities {describe_tips(tips, room)}; "
                      + f"state differences: {differences(seen, room)}" + resolution_log(net, room))
    wrong = []
    for key, label in expected:
        got = seen["A"].get(key)
        if not got or got["event_id"] != room.id(label):
            wrong.append(f"{key[0]} {key[1]!r}: expected {room.id(label)} ({label}), all three have "
                         f"{describe(room, got)}")
    if wrong:
        raise Failure("".join(f"{note}; " for note in room.notes)
                      + "the servers agree, on another state than the expected one: " + "; ".join(wrong)
                      + resolution_log(net, room))
    hidden = []
    for server in ("A", "B"):
        labels = [label for label in room.partitioned
                  if not get_event(net.readers[server], room.room_id, room.id(label))]
        if labels:
            hidden.append(f"{server}: {', '.join(labels)}")
    return (f"{len(seen['A'])} state events identical on A, B, C; "
            + ", ".join(f"{key[0].removeprefix('m.room.')}{' ' + key[1].split(':')[0] if key[1] else ''}"
                        f" = {label}" for key, label in expected)
            + (f"; hidden from clients (soft-failed, or missing) on {'; '.join(hidden)}" if hidden else "")
            + "".join(f"; NOTE: {note}" for note in room.notes))


# ---------------------------------------------------------------- scenario 2: conflicting bans


def bans_side_a(net, room):
    r = room.room_id
    owner_pl = room.add("ownerPL", set_power(net.owner, r, {net.alice.user_id: 75}))
    # alice (on A) needs 75 to ban carol (50): wait until A has owner's power levels from B.
    poll("ownerPL on A", lambda: (full_state(net.alice, r) or {}).get(("m.room.power_levels", ""), {})
         .get("event_id") == owner_pl["event_id"], STEP_TIMEOUT)
    return [owner_pl,
            room.add("alice's ban of carol", membership_change(net.alice, r, "ban", net.carol.user_id, "ban")),
            room.add("alice's ban of xavier", membership_change(net.alice, r, "ban", net.xavier.user_id, "ban"))]


def bans_side_c(net, room):
    r = room.room_id
    return [room.add("chrisPL", set_power(net.chris, r, {net.carol.user_id: 75})),
            room.add("carol's ban of alice", membership_change(net.carol, r, "ban", net.alice.user_id, "ban")),
            room.add("carol's ban of xavier", membership_change(net.carol, r, "ban", net.xavier.user_id, "ban")),
            room.add("carol's unban of xavier",
                     membership_change(net.carol, r, "unban", net.xavier.user_id, "leave"))]


def c_wins(room):
    """Whether side C's power levels win: when they are the later of the two
    (origin_server_ts), or in version 12, where the creator's infinite power
    orders owner's power levels first whatever the clock."""
    return room.schedule == "A first" or room.version == "12"


def bans_expected(net):
    """xavier ends unbanned by carol everywhere: alice's join (power 50) is
    placed before carol's (50, later), which lets alice's ban of xavier
    (75) be ordered before carol's join, so before all of carol's events;
    carol's unban comes last."""
    def expected(room):
        member = lambda user: ("m.room.member", user.user_id)  # noqa: E731
        xavier = (member(net.xavier), "carol's unban of xavier")
        if c_wins(room):
            return [(("m.room.power_levels", ""), "chrisPL"), (member(net.alice), "carol's ban of alice"),
                    (member(net.carol), "carol's join"), xavier]
        return [(("m.room.power_levels", ""), "ownerPL"), (member(net.carol), "alice's ban of carol"),
                (member(net.alice), "alice's join"), xavier]
    return expected


def banned_cannot_send(net):
    def checks(room):
        banned = net.alice if c_wins(room) else net.carol

        def check():
            path = f"/_matrix/client/v3/rooms/{q(room.room_id)}/send/m.room.message/b{time.monotonic_ns()}"
            status, answer = banned.request("PUT", path, {"msgtype": "m.text", "body": "still here?"})
            expect(status == 403, f"{banned.user_id} sending on {banned.server} answered {status}: {answer}")
            return f"{banned.user_id} on {banned.server}: {status} " \
                   f"{answer.get('errcode') if isinstance(answer, dict) else answer}"
        return [(f"the banned {localpart(banned)} cannot send on her server", check)]
    return checks


# ---------------------------------------------------------------- scenario 3: power levels and join rules


def rules_side_a(net, room):
    r = room.room_id
    return [room.add("ownerJR", put_state(net.owner, r, "m.room.join_rules", {"join_rule": "invite"})),
            room.add("ownerPL", set_power(net.owner, r, {net.alice.user_id: 75}, state_default=60))]


def rules_side_c(net, room):
    r = room.room_id
    return [room.add("chrisJR", put_state(net.chris, r, "m.room.join_rules", {"join_rule": "knock"})),
            room.add("chrisPL", set_power(net.chris, r, {net.carol.user_id: 75}))]


def rules_expected(room):
    side = "chris" if c_wins(room) else "owner"
    return [(("m.room.join_rules", ""), f"{side}JR"), (("m.room.power_levels", ""), f"{side}PL")]


# ---------------------------------------------------------------- main


def start_and_run(binary, workdir, procs, logs, proxies):
    started = time.monotonic()
    net = Network(binary, workdir, procs, logs, proxies)
    print(f"# three servers, six users and three admins ready in {time.monotonic() - started:.1f} s", flush=True)
    run_scenario(net, 2, "conflicting bans", bans_side_a, bans_side_c, bans_expected(net), banned_cannot_send(net))
    run_scenario(net, 3, "concurrent power levels and join rules", rules_side_a, rules_side_c, rules_expected)


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    workdir = tempfile.mkdtemp(prefix="hearth-partitions-")
    started = time.monotonic()
    procs, logs, proxies = [], {}, []
    try:
        start_and_run(binary, workdir, procs, logs, proxies)
    except (Failure, OSError, subprocess.SubprocessError) as e:
        record("FAIL", "set-up (certificates, proxies, servers, users)", str(e))
    finally:
        stop(procs)
        for proxy in proxies:
            proxy.shut()
    passed = sum(1 for status, _, _ in RESULTS if status == "ok")
    failed = sum(1 for status, _, _ in RESULTS if status == "FAIL")
    print(f"# {time.monotonic() - started:.0f} s in all")
    if failed or not RESULTS:
        print_log_tails({name: log for name, log in logs.items() if os.path.exists(log)})
        print(f"# kept the work directory for the logs: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"partitions: {passed} passed, {failed} failed")
    sys.exit(1 if failed or not RESULTS else 0)


if __name__ == "__main__":
    main()
