"""Sliding sync benchmarks: Hearth against Synapse, as Element X syncs.

Usage: benches/sliding_sync.py PATH/TO/hearth [--synapse-python /tmp/synapse/bin/python [--postgres]]
                               [--rooms 1000] [--clients 100] [--out FILE.md] [--keep]

Every request is Element X's room list request over the unstable endpoint
(`POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`): one
list, its first 20 rooms, `timeline_limit` 1, the 17 `required_state` pairs
matrix-rust-sdk sends (with `$LAZY` and `$ME`), and the account data,
receipts and typing extensions. Each server runs alone, every rate limit
lifted, Synapse on SQLite (and on PostgreSQL with --postgres):

  first response    a user in --rooms rooms (each with a message): a new
                    connection's first response (a new `conn_id` each
                    time, so no server keeps it); 20 times, p50 and p99
  incremental       the same user: a message into a random room, then the
                    connection's next response (with `pos`, `timeout` 0),
                    which carries it; 50 times, p50 and p99
  send -> wake-up   --clients users in one room, each long-polling its own
                    connection (`timeout` 30 s); a message is sent and each
                    poll is timed from the send's answer to its return
                    with the message; 30 rounds, p50 and p99 over all
                    (the Rust client of `benches/sync.rs -- --only sliding`,
                    built first: `cargo bench --no-run --bench sync`)

Prints a Markdown table and writes it to --out if given.
"""

import argparse
import concurrent.futures
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from federation import Postgres  # noqa: E402
from media import SECRET, Client, Failure, Hearth, Synapse, q, say  # noqa: E402
from search import p50_p99, register, report  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
REQUIRED_STATE = [
    ["m.room.name", ""], ["m.room.encryption", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"],
    ["m.room.topic", ""], ["m.room.avatar", ""], ["m.room.canonical_alias", ""], ["m.room.power_levels", ""],
    ["org.matrix.msc3401.call.member", "*"], ["m.room.join_rules", ""], ["m.room.tombstone", ""],
    ["m.room.create", ""], ["m.room.history_visibility", ""], ["io.element.functional_members", ""],
    ["m.space.parent", "*"], ["m.space.child", "*"], ["org.matrix.msc3672.beacon_info", "*"],
]
ROWS = ["rooms filled", "first response", "incremental", "send -> wake-up"]


def body(conn_id):
    return {
        "conn_id": conn_id,
        "lists": {"all_rooms": {"ranges": [[0, 19]], "timeline_limit": 1, "required_state": REQUIRED_STATE,
                                "filters": {}}},
        "extensions": {"account_data": {"enabled": True}, "receipts": {"enabled": True, "rooms": ["*"]},
                       "typing": {"enabled": True}},
    }


def sliding(client, conn_id, pos=None, timeout=0):
    query = f"?timeout={timeout}" + (f"&pos={q(pos)}" if pos else "")
    return client.json("POST", PATH + query, body(conn_id))


class Run:
    def __init__(self, server, rooms, clients):
        self.server, self.rooms, self.clients = server, rooms, clients
        self.results = {}

    def fill(self):
        """A user in `rooms` rooms, each with a message."""
        port = self.server.port
        self.user, self.user_id = register(port, "reader")
        token = self.user.token
        started = time.perf_counter()
        local = threading.local()

        def make(i):
            if not hasattr(local, "client"):
                local.client = Client(port, token)
            room = local.client.json("POST", "/_matrix/client/v3/createRoom", {"name": f"room {i}"})["room_id"]
            local.client.json("PUT", f"/_matrix/client/v3/rooms/{q(room)}/send/m.room.message/m{i}",
                              {"msgtype": "m.text", "body": f"first message in room {i}"})
            return room

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            self.room_ids = list(pool.map(make, range(self.rooms)))
        self.results["rooms filled"] = f"{self.rooms} in {time.perf_counter() - started:.0f} s"

    def first_response(self):
        seconds = []
        for i in range(20):
            started = time.perf_counter()
            answer = sliding(self.user, f"first{i}")
            seconds.append(time.perf_counter() - started)
            if answer["lists"]["all_rooms"]["count"] != self.rooms or len(answer.get("rooms", {})) != 20:
                raise Failure(f"first response: {answer['lists']} and {len(answer.get('rooms', {}))} rooms")
        self.results["first response"] = p50_p99(seconds)

    def incremental(self):
        sender = Client(self.server.port, self.user.token)
        pos = sliding(self.user, "incremental")["pos"]
        rng = random.Random(5)
        seconds = []
        for i in range(50):
            room = rng.choice(self.room_ids)
            sender.json("PUT", f"/_matrix/client/v3/rooms/{q(room)}/send/m.room.message/inc{i}",
                        {"msgtype": "m.text", "body": f"incremental {i}"})
            started = time.perf_counter()
            answer = sliding(self.user, "incremental", pos)
            seconds.append(time.perf_counter() - started)
            timeline = answer.get("rooms", {}).get(room, {}).get("timeline", [])
            if not any(e["content"].get("body") == f"incremental {i}" for e in timeline):
                raise Failure(f"incremental response {i} lacks the message: {str(answer)[:500]}")
            pos = answer["pos"]
        sender.close()
        self.results["incremental"] = p50_p99(seconds)

    def wake_up(self):
        """Measured by the Rust client of benches/sync.rs (a Python client
        with 100 threads would measure itself): its `--only sliding`."""
        command = ["cargo", "bench", "--quiet", "--bench", "sync", "--", "--http",
                   f"http://127.0.0.1:{self.server.port}", SECRET, "--only", "sliding",
                   "--clients", str(self.clients)]
        output = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        line = next((l for l in output.stdout.splitlines() if "sliding sync" in l), None)
        if output.returncode != 0 or line is None:
            raise Failure(f"benches/sync.rs --only sliding failed: {output.stdout[-500:]} {output.stderr[-1500:]}")
        self.results["send -> wake-up"] = f"{self.clients} clients: {line.split(': ', 1)[1]}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("hearth")
    parser.add_argument("--synapse-python")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--rooms", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--out")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="hearth-slidingbench-")
    columns, postgres = [], None
    plans = [("Hearth", "hearth")]
    if args.synapse_python:
        plans.append(("Synapse (SQLite)", "synapse"))
        if args.postgres:
            postgres = Postgres()
            missing = postgres.available()
            if missing:
                raise Failure(f"--postgres: {missing}")
            say(postgres.start())
            plans.append(("Synapse (PostgreSQL)", "synapse-pg"))
    try:
        for label, kind in plans:
            directory = os.path.join(work, kind)
            os.makedirs(directory)
            if kind == "hearth":
                server = Hearth(directory, args.hearth)
            elif kind == "synapse":
                server = Synapse(directory, args.synapse_python)
            else:
                server = Synapse(directory, args.synapse_python, postgres.database("hearth_slidingbench"), label)
            server.start()
            run = Run(server, args.rooms, args.clients)
            try:
                run.fill()
                say(f"{label}: {run.results['rooms filled']}")
                run.first_response()
                run.incremental()
                run.wake_up()
            except Failure as e:
                run.results.setdefault("error", str(e))
                say(f"{label}: {e}")
            finally:
                server.stop()
            columns.append((label, server.version, run.results))
            say(f"{label}: {run.results}")
    finally:
        if postgres:
            postgres.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report("benches/sliding_sync.py", columns, ROWS, args.out)

if __name__ == "__main__":
    main()
