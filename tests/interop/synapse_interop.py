"""Hearth and Synapse federating with each other, through their client APIs.

Usage: synapse_interop.py PATH/TO/hearth
Run with the interop virtualenv's Python (tests/interop/requirements.txt:
Synapse and matrix-nio with end-to-end encryption); `make interop` does it.

Makes a test CA and a certificate for localhost, starts Hearth (server name
localhost:<port>) and Synapse (localhost:<other port>) on 127.0.0.1, each
with a plain client listener and a TLS federation listener trusting the test
CA, then checks, with users on both servers:
  a. joins: a room on Hearth joined from Synapse by alias, a room on Synapse
     joined from Hearth by ID and by alias;
  b. messages both ways;
  c. an edit, a reaction and a redaction from each side, seen on the other;
  d. invites to private rooms both ways, seen in /sync and accepted;
  e. a ban from each side, shown and enforced on both servers;
  f. backward pagination of history from before a Hearth user joined a
     Synapse room;
  g. end-to-end encrypted messages both ways (matrix-nio with vodozemac);
and, beside those, what clients commonly do across servers: each server's
public room directory read from the other (/publicRooms?server=), a DM
(createRoom with `invite`) from each side, and a rejoin after a ban that
only the room's server can refuse (make_join).
Prints one line per check (ok / FAIL / SKIP) and a summary line
"interop: N passed, M failed"; exits non-zero when anything failed. It takes
about 15 s; docs/INTEROP.md has the last results.
The work directory (configurations, databases, both logs) is deleted when
everything passed and kept, its path printed, otherwise.
"""

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients"))
from harness import http, print_log_tails, stop, wait_until  # noqa: E402
# The set-up (certificates, configurations, processes), shared with benches/federation.py.
from servers import (Failure, free_ports, make_certificates, start_hearth, start_synapse,  # noqa: E402
                     wait_for_server)

PASSWORD = "interop-pass-1"
FEDERATION_TIMEOUT = 30  # for the other server to see something

RESULTS = []  # (status, name, detail); status is "ok", "FAIL" or "SKIP"


class Skip(Exception):
    """A check that cannot run here (for example a missing library)."""


def expect(condition, reason):
    if not condition:
        raise Failure(reason)


def record(status, name, detail=""):
    RESULTS.append((status, name, detail))
    print(f"{status} - {name}" + (f": {detail}" if detail else ""), flush=True)


def run_check(name, check):
    """Runs one check function: ok, FAIL with the reason, or SKIP when it raises Skip."""
    try:
        detail = check()
        record("ok", name, detail or "")
    except Skip as e:
        record("SKIP", name, str(e))
    except Failure as e:
        record("FAIL", name, str(e))
    except Exception as e:  # noqa: BLE001 - a bug in the check or a dead server: still one FAIL line
        record("FAIL", name, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")


def wait_for(what, condition, long_poll, timeout=FEDERATION_TIMEOUT):
    """The one waiting helper: evaluates `condition()` until it returns something
    truthy, calling `long_poll(seconds_left)` (a /sync long poll) in between, so
    the wait ends as soon as the other server delivers. Raises Failure at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure(f"{what}: not seen within {timeout} s")
        long_poll(min(left, 5.0))


# ---------------------------------------------------------------- client


def q(value):
    return urllib.parse.quote(value, safe="")


SYNC_FILTER = json.dumps({"room": {"timeline": {"limit": 100}}})


class Client:
    """A user on one server over the plain client API, with what its /sync
    has delivered so far (timeline events per room, pending invites)."""

    def __init__(self, server, base, user_id, token):
        self.server, self.base, self.user_id, self.token = server, base, user_id, token
        self.since = None
        self.timeline = {}  # room ID -> events, in order
        self.invites = {}  # room ID -> stripped state
        self.prev_batch = {}  # room ID -> the first prev_batch seen for it
        self.sync(0)

    def request(self, method, path, body=None):
        return http(method, self.base + path, body, self.token)

    def call(self, method, path, body=None, expected=200):
        """A request that has to answer `expected`; the response body."""
        status, answer = self.request(method, path, body)
        if status != expected:
            raise Failure(f"{method} {path} on {self.server} as {self.user_id} answered {status}: {answer}")
        return answer

    def sync(self, seconds):
        path = f"/_matrix/client/v3/sync?timeout={int(seconds * 1000)}&filter={q(SYNC_FILTER)}"
        if self.since:
            path += f"&since={q(self.since)}"
        answer = self.call("GET", path)
        self.since = answer["next_batch"]
        rooms = answer.get("rooms", {})
        for section in ("join", "leave"):
            for room_id, room in rooms.get(section, {}).items():
                timeline = room.get("timeline", {})
                self.prev_batch.setdefault(room_id, timeline.get("prev_batch"))
                self.timeline.setdefault(room_id, []).extend(timeline.get("events", []))
                self.invites.pop(room_id, None)
        for room_id, room in rooms.get("invite", {}).items():
            self.invites[room_id] = room.get("invite_state", {}).get("events", [])

    def wait(self, what, condition, timeout=FEDERATION_TIMEOUT):
        return wait_for(f"{what} (as {self.user_id} on {self.server})", condition, self.sync, timeout)

    def find(self, room_id, predicate):
        return next((e for e in self.timeline.get(room_id, []) if predicate(e)), None)

    def wait_event(self, room_id, what, predicate, timeout=FEDERATION_TIMEOUT):
        """Waits until this user's /sync delivered an event of `room_id` matching `predicate`."""
        return self.wait(what, lambda: self.find(room_id, predicate), timeout)

    def membership(self, room_id, user_id):
        status, answer = self.request("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.member/{q(user_id)}")
        return answer.get("membership") if status == 200 and isinstance(answer, dict) else None

    def send(self, room_id, content, event_type="m.room.message"):
        txn = f"t{time.monotonic_ns()}"
        return self.call("PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/{event_type}/{txn}", content)["event_id"]

    def join(self, room_or_alias, via=None):
        path = f"/_matrix/client/v3/join/{q(room_or_alias)}"
        if via:
            path += f"?server_name={q(via)}&via={q(via)}"
        return self.call("POST", path, {})["room_id"]


def register(server, base, username):
    """Registers `username` (the m.login.dummy stage) and returns its Client."""
    body = {"username": username, "password": PASSWORD, "initial_device_display_name": "interop"}
    status, answer = http("POST", base + "/_matrix/client/v3/register", body)
    if status == 401:
        body["auth"] = {"type": "m.login.dummy", "session": answer.get("session")}
        status, answer = http("POST", base + "/_matrix/client/v3/register", body)
    if status != 200:
        raise Failure(f"registering {username} on {server} answered {status}: {answer}")
    return Client(server, base, answer["user_id"], answer["access_token"])


def body_is(text):
    return lambda e: e.get("content", {}).get("body") == text


def member_event(user_id, membership):
    return lambda e: (e.get("type") == "m.room.member" and e.get("state_key") == user_id
                      and e.get("content", {}).get("membership") == membership)


def create_room(client, alias=None, preset="public_chat", **extra):
    body = {"preset": preset, "name": f"interop {alias or preset}", **extra}
    if alias:
        body["room_alias_name"] = alias
    if preset == "public_chat":
        body["visibility"] = "public"
    return client.call("POST", "/_matrix/client/v3/createRoom", body)["room_id"]


# ---------------------------------------------------------------- checks


class Scenario:
    """Users on both servers (alice, carol on Hearth; bob, dave on Synapse) and the rooms the checks share."""

    def __init__(self, hearth_url, hearth_name, synapse_url, synapse_name, workdir):
        self.hearth_name, self.synapse_name, self.workdir = hearth_name, synapse_name, workdir
        self.hearth_url, self.synapse_url = hearth_url, synapse_url
        self.alice = register(hearth_name, hearth_url, "alice")
        self.carol = register(hearth_name, hearth_url, "carol")
        self.bob = register(synapse_name, synapse_url, "bob")
        self.dave = register(synapse_name, synapse_url, "dave")
        self.hearth_room = self.synapse_room = None  # set by the joins (a)
        self.ban_hearth_done = self.ban_synapse_done = False  # set by the bans (e)

    def need(self, attribute, because):
        value = getattr(self, attribute)
        expect(value, f"not run: {because} failed")
        return value

    # a. joins

    def join_hearth_room_from_synapse_by_alias(self):
        room = create_room(self.alice, alias="hearth-room")
        alias = f"#hearth-room:{self.hearth_name}"
        joined = self.bob.join(alias)
        expect(joined == room, f"joined {joined}, the alias names {room}")
        self.alice.wait_event(room, "bob's join", member_event(self.bob.user_id, "join"))
        self.hearth_room = room
        return f"{alias} -> {room}"

    def join_synapse_room_from_hearth_by_id(self):
        room = create_room(self.bob, alias="synapse-room")
        joined = self.alice.join(room, via=self.synapse_name)
        expect(joined == room, f"joined {joined}")
        self.bob.wait_event(room, "alice's join", member_event(self.alice.user_id, "join"))
        self.synapse_room = room
        return room

    def join_synapse_room_from_hearth_by_alias(self):
        room = self.need("synapse_room", "the join by ID")
        alias = f"#synapse-room:{self.synapse_name}"
        joined = self.carol.join(alias)
        expect(joined == room, f"joined {joined}, the alias names {room}")
        self.bob.wait_event(room, "carol's join", member_event(self.carol.user_id, "join"))
        return f"{alias} -> {room}"

    def directory(self, reader, attribute, because):
        """`reader` lists the other server's public rooms (GET /publicRooms?server=)."""
        expected = self.need(attribute, because)
        other = self.synapse_name if reader.server == self.hearth_name else self.hearth_name
        answer = reader.call("GET", f"/_matrix/client/v3/publicRooms?server={q(other)}")
        listed = [r.get("room_id") for r in answer.get("chunk", [])]
        expect(expected in listed, f"{expected} not among {listed}")

    # b. messages

    def message(self, sender, receiver, room):
        text = f"hello from {sender.server} at {time.time()}"
        event_id = sender.send(room, {"msgtype": "m.text", "body": text})
        event = receiver.wait_event(room, "the message", body_is(text))
        expect(event["event_id"] == event_id, f"arrived as {event['event_id']}, sent as {event_id}")

    def message_hearth_to_synapse(self):
        self.message(self.alice, self.bob, self.need("hearth_room", "the join of the Hearth room"))

    def message_synapse_to_hearth(self):
        self.message(self.bob, self.alice, self.need("hearth_room", "the join of the Hearth room"))

    # c. edits, reactions, redactions

    def edit(self, sender, receiver):
        room = self.need("hearth_room", "the join of the Hearth room")
        original = sender.send(room, {"msgtype": "m.text", "body": f"typo from {sender.server}"})
        new_body = f"fixed from {sender.server}"
        edit = sender.send(room, {"msgtype": "m.text", "body": f"* {new_body}",
                                  "m.new_content": {"msgtype": "m.text", "body": new_body},
                                  "m.relates_to": {"rel_type": "m.replace", "event_id": original}})
        seen = receiver.wait_event(room, "the edit", lambda e: e["event_id"] == edit)
        content = seen.get("content", {})
        expect(content.get("m.relates_to") == {"rel_type": "m.replace", "event_id": original},
               f"the edit's relation arrived as {content.get('m.relates_to')}")
        expect(content.get("m.new_content", {}).get("body") == new_body,
               f"the edit's m.new_content arrived as {content.get('m.new_content')}")
        # The receiving server bundles the edit with the original it serves.
        event = receiver.call("GET", f"/_matrix/client/v3/rooms/{q(room)}/event/{q(original)}")
        bundled = event.get("unsigned", {}).get("m.relations", {}).get("m.replace", {})
        expect(bundled.get("event_id") == edit, f"the original's unsigned.m.relations on {receiver.server}: "
                                                f"{event.get('unsigned', {}).get('m.relations')}")

    def reaction(self, sender, receiver):
        room = self.need("hearth_room", "the join of the Hearth room")
        target = receiver.send(room, {"msgtype": "m.text", "body": f"react to me, {sender.server}"})
        sender.wait_event(room, "the message to react to", lambda e: e["event_id"] == target)
        key = "👍" if sender is self.alice else "🎉"
        reaction = sender.send(room, {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}},
                               "m.reaction")
        seen = receiver.wait_event(room, "the reaction", lambda e: e["event_id"] == reaction)
        relation = seen.get("content", {}).get("m.relates_to", {})
        expect(seen["type"] == "m.reaction" and relation.get("event_id") == target and relation.get("key") == key,
               f"the reaction arrived as {seen}")
        # The receiving server indexes the relation.
        path = f"/_matrix/client/v1/rooms/{q(room)}/relations/{q(target)}/m.annotation"
        related = [e["event_id"] for e in receiver.call("GET", path).get("chunk", [])]
        expect(reaction in related, f"GET {path} on {receiver.server} lists {related}, not {reaction}")

    def redaction(self, sender, receiver):
        room = self.need("hearth_room", "the join of the Hearth room")
        doomed = sender.send(room, {"msgtype": "m.text", "body": f"regrettable, from {sender.server}"})
        receiver.wait_event(room, "the message to redact", lambda e: e["event_id"] == doomed)
        path = f"/_matrix/client/v3/rooms/{q(room)}/redact/{q(doomed)}/r{time.monotonic_ns()}"
        redaction = sender.call("PUT", path, {"reason": "interop"})["event_id"]
        receiver.wait_event(room, "the redaction",
                            lambda e: e["event_id"] == redaction and e["type"] == "m.room.redaction")
        # The receiving server prunes its copy of the original.
        event = receiver.call("GET", f"/_matrix/client/v3/rooms/{q(room)}/event/{q(doomed)}")
        expect(event.get("content") == {}, f"the redacted event still has content {event.get('content')}")

    # d. invites

    def invite(self, inviter, invitee):
        room = create_room(inviter, preset="private_chat")
        inviter.call("POST", f"/_matrix/client/v3/rooms/{q(room)}/invite", {"user_id": invitee.user_id})
        invite_state = invitee.wait("the invite in rooms.invite", lambda: invitee.invites.get(room))
        expect(any(e.get("type") == "m.room.member" and e.get("state_key") == invitee.user_id
                   for e in invite_state), f"the invite's stripped state has no invite member event: {invite_state}")
        joined = invitee.join(room, via=inviter.user_id.split(":", 1)[1])
        expect(joined == room, f"joined {joined}")
        inviter.wait_event(room, "the invitee's join", member_event(invitee.user_id, "join"))

    def invite_at_creation(self, inviter, invitee):
        """createRoom naming the other server's user in `invite` (how clients start a DM)."""
        body = {"preset": "trusted_private_chat", "is_direct": True, "invite": [invitee.user_id]}
        room = inviter.call("POST", "/_matrix/client/v3/createRoom", body)["room_id"]
        invitee.wait("the invite in rooms.invite", lambda: invitee.invites.get(room))
        invitee.join(room, via=inviter.user_id.split(":", 1)[1])
        inviter.wait_event(room, "the invitee's join", member_event(invitee.user_id, "join"))

    # e. bans

    def ban_setup(self, banner, banned, room, host_name):
        """`banned` joins `room` (through `host_name`), then `banner` bans them."""
        banned.join(room, via=host_name)
        banner.wait_event(room, "the join before the ban", member_event(banned.user_id, "join"))
        banner.call("POST", f"/_matrix/client/v3/rooms/{q(room)}/ban", {"user_id": banned.user_id, "reason": "interop"})

    def ban_by_hearth(self):
        room = self.need("hearth_room", "the join of the Hearth room")
        self.ban_setup(self.alice, self.dave, room, self.hearth_name)
        self.bob.wait("dave's ban on Synapse", lambda: self.bob.membership(room, self.dave.user_id) == "ban")
        self.ban_hearth_done = True

    def ban_by_synapse(self):
        room = self.need("synapse_room", "the join of the Synapse room by ID")
        expect(self.alice.membership(room, self.carol.user_id) == "join",
               "carol is not in the Synapse room (the join by alias failed)")
        self.bob.call("POST", f"/_matrix/client/v3/rooms/{q(room)}/ban", {"user_id": self.carol.user_id,
                                                                          "reason": "interop"})
        self.alice.wait("carol's ban on Hearth", lambda: self.alice.membership(room, self.carol.user_id) == "ban")
        self.ban_synapse_done = True

    def banned_cannot_send(self, banned, room, flag):
        expect(getattr(self, flag, False), "not run: the ban did not reach the banned user's server")
        path = f"/_matrix/client/v3/rooms/{q(room)}/send/m.room.message/b{time.monotonic_ns()}"
        status, answer = banned.request("PUT", path, {"msgtype": "m.text", "body": "still here?"})
        expect(status == 403, f"sending answered {status}: {answer}")
        return f"{status} {answer.get('errcode') if isinstance(answer, dict) else answer}"

    def banned_cannot_rejoin(self, banned, room, host_name, host_member, flag):
        expect(getattr(self, flag, False), "not run: the ban did not reach the banned user's server")
        status, answer = banned.request("POST", f"/_matrix/client/v3/join/{q(room)}?server_name={q(host_name)}", {})
        expect(status != 200, f"rejoining answered 200: {answer}")
        expect(banned.membership(room, banned.user_id) != "join", "the banned user's server shows them joined")
        membership = host_member.membership(room, banned.user_id)
        expect(membership == "ban", f"the room's server shows membership {membership}")
        return f"{status} {answer.get('errcode') if isinstance(answer, dict) else answer}"

    def ban_alone(self, banner, banned):
        """A ban in a room where the banned user was their server's only member:
        their server learns of it, and a rejoin has to ask the room's server
        (make_join), which refuses."""
        room = create_room(banner, preset="public_chat")
        self.ban_setup(banner, banned, room, banner.server)
        banned.wait_event(room, "the ban in the banned user's /sync", member_event(banned.user_id, "ban"))
        status, answer = banned.request("POST", f"/_matrix/client/v3/join/{q(room)}?server_name={q(banner.server)}", {})
        expect(status != 200, f"rejoining answered 200: {answer}")
        membership = banner.membership(room, banned.user_id)
        expect(membership == "ban", f"the room's server shows membership {membership}")
        return f"{status} {answer.get('errcode') if isinstance(answer, dict) else answer}"

    # f. history

    def history(self):
        count = 30
        room = create_room(self.bob, preset="public_chat", initial_state=[
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "shared"}}])
        for i in range(1, count + 1):
            self.bob.send(room, {"msgtype": "m.text", "body": f"history {i}"})
        self.alice.join(room, via=self.synapse_name)
        self.alice.wait("the joined room in /sync", lambda: room in self.alice.timeline)
        start = self.alice.prev_batch.get(room)
        expect(start, f"no prev_batch for the room in /sync: {self.alice.timeline.get(room)}")
        wanted = {f"history {i}" for i in range(1, count + 1)}
        last = {}

        def paginate():
            """Pages back from the join; the history bodies and whether m.room.create came."""
            bodies = {e.get("content", {}).get("body") for e in self.alice.timeline[room]}
            token, created, pages = start, False, 0
            while token and pages < 20 and not created:
                answer = self.alice.call("GET", f"/_matrix/client/v3/rooms/{q(room)}/messages?dir=b&limit=10"
                                                f"&from={q(token)}")
                pages += 1
                chunk = answer.get("chunk", [])
                bodies |= {e.get("content", {}).get("body") for e in chunk}
                created = any(e.get("type") == "m.room.create" for e in chunk)
                token = answer.get("end") if chunk else None
            last.update(found=len(wanted & bodies), created=created, pages=pages)
            return wanted <= bodies and created

        # Polled rather than waited for with /sync: backfilled history is not news to /sync.
        if not wait_until(paginate, FEDERATION_TIMEOUT, interval=0.5):
            raise Failure(f"paging back from the join (prev_batch {start}) found {last['found']} of the {count} "
                          f"messages sent before it, m.room.create {'reached' if last['created'] else 'not reached'}"
                          f", {last['pages']} pages, within {FEDERATION_TIMEOUT} s")
        return f"{count} messages and m.room.create in {last['pages']} pages"

    # g. end-to-end encryption

    def e2ee(self):
        """Two matrix-nio clients with encryption (erin on Hearth, frank on
        Synapse) in an encrypted room on Hearth: a message each way, decrypted."""
        try:
            import nio
            from nio.crypto import ENCRYPTION_ENABLED
        except ImportError as e:
            raise Skip(f"matrix-nio is not installed: {e}")
        if not ENCRYPTION_ENABLED:
            raise Skip("matrix-nio has no encryption support (its e2e extra, vodozemac, is not installed)")
        logging.getLogger("nio").setLevel(logging.ERROR)  # its warnings about sessions it is setting up
        loop = asyncio.new_event_loop()
        run = loop.run_until_complete
        clients = []

        def login(base, name):
            config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
            store = os.path.join(self.workdir, f"nio-{name}")
            os.makedirs(store)
            client = nio.AsyncClient(base, name, store_path=store, config=config)
            clients.append(client)
            resp = run(client.register(name, PASSWORD))
            expect(isinstance(resp, nio.RegisterResponse), f"registering {name}: {resp}")
            resp = run(client.login(PASSWORD, device_name=f"{name} nio"))
            expect(isinstance(resp, nio.LoginResponse), f"logging {name} in: {resp}")
            if client.should_upload_keys:
                resp = run(client.keys_upload())
                expect(isinstance(resp, nio.KeysUploadResponse), f"{name}'s key upload: {resp}")
            return client

        def nio_sync(client):
            def long_poll(seconds):
                resp = run(client.sync(timeout=int(seconds * 1000)))
                expect(isinstance(resp, nio.SyncResponse), f"{client.user_id}'s sync: {resp}")
                if client.should_query_keys:
                    run(client.keys_query())
                if client.should_upload_keys:
                    run(client.keys_upload())
            return long_poll

        def received(client, room_id, body):
            """Syncs `client` until it has decrypted `body`; on failure, names the events it could not decrypt."""
            found = []

            def callback(room, event):
                if room.room_id == room_id:
                    found.append(event)
            client.add_event_callback(callback, (nio.RoomMessageText, nio.MegolmEvent))
            try:
                wait_for(f"{client.user_id} decrypting {body!r}",
                         lambda: any(getattr(e, "body", None) == body for e in found), nio_sync(client))
            except Failure as e:
                undecrypted = [ev for ev in found if isinstance(ev, nio.MegolmEvent)]
                raise Failure(f"{e}; undecryptable events: {[(ev.event_id, ev.session_id) for ev in undecrypted]}")

        try:
            erin = login(self.hearth_url, "erin")
            frank = login(self.synapse_url, "frank")
            resp = run(erin.room_create(name="interop e2ee", initial_state=[
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]))
            expect(isinstance(resp, nio.RoomCreateResponse), f"creating the encrypted room: {resp}")
            room_id = resp.room_id
            resp = run(erin.room_invite(room_id, frank.user_id))
            expect(isinstance(resp, nio.RoomInviteResponse), f"inviting frank: {resp}")
            wait_for("frank's invite", lambda: room_id in frank.invited_rooms, nio_sync(frank))
            resp = run(frank.join(room_id))
            expect(isinstance(resp, nio.JoinResponse), f"frank joining: {resp}")
            wait_for("the encrypted room on Synapse",
                     lambda: room_id in frank.rooms and frank.rooms[room_id].encrypted, nio_sync(frank))
            wait_for("frank's join on Hearth",
                     lambda: room_id in erin.rooms and frank.user_id in erin.rooms[room_id].users, nio_sync(erin))
            results = []
            for sender, receiver in ((erin, frank), (frank, erin)):
                body = f"secret from {sender.user_id}"
                nio_sync(sender)(0)
                resp = run(sender.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body},
                                            ignore_unverified_devices=True))
                expect(isinstance(resp, nio.RoomSendResponse), f"{sender.user_id} sending encrypted: {resp}")
                received(receiver, room_id, body)
                results.append(f"{sender.user_id} -> {receiver.user_id}")
            return ", ".join(results) + " decrypted"
        finally:
            for client in clients:
                run(client.close())
            loop.close()


def run_scenario(s):
    checks = [
        ("a. room on Hearth joined from Synapse by alias", s.join_hearth_room_from_synapse_by_alias),
        ("a. room on Synapse joined from Hearth by ID (server_name/via)", s.join_synapse_room_from_hearth_by_id),
        ("a. room on Synapse joined from Hearth by alias", s.join_synapse_room_from_hearth_by_alias),
        ("a. Synapse lists the public rooms of Hearth (/publicRooms?server=)",
         lambda: s.directory(s.bob, "hearth_room", "the join of the Hearth room")),
        ("a. Hearth lists the public rooms of Synapse (/publicRooms?server=)",
         lambda: s.directory(s.alice, "synapse_room", "the join of the Synapse room by ID")),
        ("b. message Hearth -> Synapse", s.message_hearth_to_synapse),
        ("b. message Synapse -> Hearth", s.message_synapse_to_hearth),
        ("c. edit from Hearth seen on Synapse", lambda: s.edit(s.alice, s.bob)),
        ("c. edit from Synapse seen on Hearth", lambda: s.edit(s.bob, s.alice)),
        ("c. reaction from Hearth seen on Synapse", lambda: s.reaction(s.alice, s.bob)),
        ("c. reaction from Synapse seen on Hearth", lambda: s.reaction(s.bob, s.alice)),
        ("c. redaction from Hearth applied on Synapse", lambda: s.redaction(s.alice, s.bob)),
        ("c. redaction from Synapse applied on Hearth", lambda: s.redaction(s.bob, s.alice)),
        ("d. invite from Hearth to a Synapse user, seen and accepted", lambda: s.invite(s.alice, s.bob)),
        ("d. invite from Synapse to a Hearth user, seen and accepted", lambda: s.invite(s.bob, s.alice)),
        ("d. createRoom on Hearth with invite: [a Synapse user] (a DM), accepted",
         lambda: s.invite_at_creation(s.alice, s.bob)),
        ("d. createRoom on Synapse with invite: [a Hearth user] (a DM), accepted",
         lambda: s.invite_at_creation(s.bob, s.alice)),
        ("e. ban by Hearth of a Synapse user shows on Synapse", s.ban_by_hearth),
        ("e. ban by Hearth: the banned Synapse user cannot send",
         lambda: s.banned_cannot_send(s.dave, s.hearth_room, "ban_hearth_done")),
        ("e. ban by Hearth: the banned Synapse user cannot rejoin",
         lambda: s.banned_cannot_rejoin(s.dave, s.hearth_room, s.hearth_name, s.alice, "ban_hearth_done")),
        ("e. ban by Synapse of a Hearth user shows on Hearth", s.ban_by_synapse),
        ("e. ban by Synapse: the banned Hearth user cannot send",
         lambda: s.banned_cannot_send(s.carol, s.synapse_room, "ban_synapse_done")),
        ("e. ban by Synapse: the banned Hearth user cannot rejoin",
         lambda: s.banned_cannot_rejoin(s.carol, s.synapse_room, s.synapse_name, s.bob, "ban_synapse_done")),
        ("e. ban by Hearth of the only Synapse user in a Hearth room: seen on Synapse, rejoin refused by Hearth",
         lambda: s.ban_alone(s.alice, s.dave)),
        ("e. ban by Synapse of the only Hearth user in a Synapse room: seen on Hearth, rejoin refused by Synapse",
         lambda: s.ban_alone(s.bob, s.carol)),
        ("f. history from before the join paged back across servers (/messages dir=b)", s.history),
        ("g. end-to-end encrypted messages both ways (matrix-nio)", s.e2ee),
    ]
    for name, check in checks:
        run_check(name, check)


def start_and_run(binary, workdir, procs, logs):
    """Both servers, then the checks; `procs` and `logs` are filled in as things start."""
    started = time.monotonic()
    tls = make_certificates(workdir)
    ports = free_ports(4)
    hearth, hearth_url, hearth_name, logs["hearth"] = start_hearth(binary, workdir, tls, *ports[:2])
    procs.append(hearth)
    synapse, synapse_url, synapse_name, logs["synapse"], logs["synapse (stdout)"] = start_synapse(
        workdir, tls, *ports[2:])
    procs.append(synapse)
    wait_for_server("hearth", hearth, hearth_url, logs["hearth"])
    wait_for_server("synapse", synapse, synapse_url, logs["synapse (stdout)"])
    print(f"# Hearth {hearth_name} (client API {hearth_url}), Synapse {synapse_name} "
          f"(client API {synapse_url}), ready in {time.monotonic() - started:.1f} s", flush=True)
    run_scenario(Scenario(hearth_url, hearth_name, synapse_url, synapse_name, workdir))


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    workdir = tempfile.mkdtemp(prefix="hearth-interop-")
    started = time.monotonic()
    procs, logs = [], {}
    try:
        start_and_run(binary, workdir, procs, logs)
    except (Failure, OSError, subprocess.SubprocessError) as e:
        record("FAIL", "set-up (certificates, servers, users)", str(e))
    finally:
        stop(procs)
    passed = sum(1 for status, _, _ in RESULTS if status == "ok")
    failed = sum(1 for status, _, _ in RESULTS if status == "FAIL")
    skipped = len(RESULTS) - passed - failed
    print(f"# {time.monotonic() - started:.0f} s in all")
    if failed or not RESULTS:
        print_log_tails({name: log for name, log in logs.items() if os.path.exists(log)})
        print(f"# kept the work directory for the logs: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"interop: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    sys.exit(1 if failed or not RESULTS else 0)


if __name__ == "__main__":
    main()
