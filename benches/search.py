"""Search benchmarks: Hearth against Synapse on the same generated corpus.

Usage: benches/search.py PATH/TO/hearth [--synapse-python /tmp/synapse/bin/python [--postgres]]
                         [--messages N] [--rooms R] [--big-messages N] [--big-rooms R]
                         [--out FILE.md] [--keep]

The corpus: messages of 4-20 words drawn from a vocabulary of 30,000 made-up
words with Zipf frequencies (s = 1.1, as in natural text), seeded, sent by
10 users into rooms round-robin (each user a keep-alive connection, 10
client threads). A reader joined to every room searches. Each server runs
alone, every rate limit lifted, Hearth with `database.sync_writes` off
(no disk sync per send while loading), Synapse with its default SQLite (and
PostgreSQL with --postgres):

  load         sending the corpus (messages/s, for scale)
  indexing     Hearth: `hearth search reindex` of the whole corpus on the
               stopped server (messages/s); Synapse indexes inside each
               send (its load figure is its indexing figure)
  size         Hearth: the index directory (admin status); Synapse on
               PostgreSQL: pg_total_relation_size('event_search'); on SQLite:
               the event_search tables' pages (dbstat), when available
  one word, two words, filtered
               200 POST /search each (rank order, 10 results), words drawn
               from ranks 100-3,000 of the vocabulary (the second of two
               from ranks 20-120); filtered: one word and a `senders`
               filter of one user; p50 and p99 latency
  send → searchable
               50 times: a message with a word never used, sent while
               another client sends 100 messages/s into the other rooms;
               the time from the send's answer until a search for the word
               first returns it (p50, p99)

The default corpus (--messages 50,000 over --rooms 50) runs on every
server; --big-messages (default 1,000,000 over --big-rooms 1,000) runs on
Hearth alone (sending a million messages through Synapse's API takes hours
on this machine). Prints a Markdown table and writes it to --out if given.
"""

import argparse
import concurrent.futures
import datetime
import hashlib
import hmac
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from federation import Postgres  # noqa: E402
from media import PASSWORD, SECRET, Client, Failure, Hearth, Synapse, q, say  # noqa: E402

SENDERS = 10
VOCABULARY = 30_000
QUERIES = 200
SEARCHABLE_SAMPLES = 50


def words():
    """The vocabulary (made-up words, deterministic) and Zipf cumulative weights."""
    rng = random.Random(7)
    syllables = [c + v for c in "bcdfghjklmnprstvz" for v in "aeiou"] + ["qu", "th", "sh", "ch"]
    vocabulary, seen = [], set()
    while len(vocabulary) < VOCABULARY:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            vocabulary.append(word)
    total, cumulative = 0.0, []
    for rank in range(1, VOCABULARY + 1):
        total += 1 / rank ** 1.1
        cumulative.append(total)
    return vocabulary, cumulative


def corpus(count, vocabulary, cumulative, seed=11):
    rng = random.Random(seed)
    for _ in range(count):
        yield " ".join(rng.choices(vocabulary, cum_weights=cumulative, k=rng.randint(4, 20)))


class LoadingHearth(Hearth):
    """Hearth with `database.sync_writes` off: loading a million messages
    with a disk sync each would measure the disk, not search."""

    def config(self):
        return super().config().replace("[database]\n", "[database]\nsync_writes = false\n", 1)


def register(port, username, admin=False):
    """A user made through shared-secret registration: (client, user ID)."""
    client = Client(port)
    nonce = client.json("GET", "/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(SECRET.encode(), b"\x00".join([nonce.encode(), username.encode(), PASSWORD.encode(),
                                                  b"admin" if admin else b"notadmin"]), hashlib.sha1).hexdigest()
    answer = client.json("POST", "/_synapse/admin/v1/register",
                         {"nonce": nonce, "username": username, "password": PASSWORD, "admin": admin, "mac": mac})
    client.close()
    return Client(port, answer["access_token"]), answer["user_id"]


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def p50_p99(seconds):
    return f"p50 {percentile(seconds, 0.5) * 1000:.1f} ms, p99 {percentile(seconds, 0.99) * 1000:.1f} ms"


class Run:
    """One server with one corpus."""

    def __init__(self, server, messages, rooms, vocabulary, cumulative):
        self.server, self.messages, self.rooms = server, messages, rooms
        self.vocabulary, self.cumulative = vocabulary, cumulative
        self.results = {}

    def search(self, client, term, extra=None):
        criteria = {"search_term": term, "filter": {"limit": 10}}
        criteria.update(extra or {})
        started = time.perf_counter()
        answer = client.json("POST", "/_matrix/client/v3/search",
                             {"search_categories": {"room_events": criteria}})
        return time.perf_counter() - started, answer["search_categories"]["room_events"]

    def setup(self):
        port = self.server.port
        self.reader, _ = register(port, "reader", admin=True)
        self.senders = [register(port, f"sender{i}") for i in range(SENDERS)]
        owner = self.senders[0][0]
        self.room_ids = []
        for r in range(self.rooms):
            self.room_ids.append(owner.json("POST", "/_matrix/client/v3/createRoom",
                                            {"preset": "public_chat"})["room_id"])
        say(f"{self.server.label}: {self.rooms} rooms made; joining")

        def join_all(client):
            for room in self.room_ids:
                client.json("POST", f"/_matrix/client/v3/join/{q(room)}", {})

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(join_all, [self.reader] + [c for c, _ in self.senders[1:]]))

    def load(self):
        texts = list(corpus(self.messages, self.vocabulary, self.cumulative))
        started = time.perf_counter()
        counter = iter(range(self.messages))
        lock = threading.Lock()

        def send_some(index):
            client = self.senders[index][0]
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                room = self.room_ids[n % self.rooms]
                client.json("PUT", f"/_matrix/client/v3/rooms/{q(room)}/send/m.room.message/l{n}",
                            {"msgtype": "m.text", "body": texts[n]})
                if n and n % 50_000 == 0:
                    say(f"{self.server.label}: {n} sent")

        with concurrent.futures.ThreadPoolExecutor(SENDERS) as pool:
            list(pool.map(send_some, range(SENDERS)))
        elapsed = time.perf_counter() - started
        self.results["load"] = f"{self.messages / elapsed:,.0f} messages/s ({elapsed:.0f} s)"

    def wait_indexed(self):
        if not isinstance(self.server, Hearth):
            return
        deadline = time.monotonic() + 3600
        while True:
            status = self.reader.json("GET", "/_hearth/admin/v1/search")
            if status["indexed_position"] >= status["stream_position"] and not status["rebuild_pending"]:
                return status
            if time.monotonic() > deadline:
                raise Failure(f"the index did not catch up: {status}")
            time.sleep(0.5)

    def measure_indexing(self, binary, config):
        """Hearth: a full reindex on the stopped server."""
        self.server.stop()
        started = time.perf_counter()
        subprocess.run([binary, "--config", config, "search", "reindex"], check=True, timeout=7200,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = time.perf_counter() - started
        self.results["indexing"] = f"{self.messages / elapsed:,.0f} messages/s ({elapsed:.1f} s for the corpus)"
        self.server.start()

    def measure_size(self, postgres=None, database=None):
        if isinstance(self.server, Hearth):
            status = self.wait_indexed()
            self.results["size"] = f"{status['size_bytes'] / 2**20:.0f} MiB ({status['documents']:,} documents)"
        elif postgres:
            size = postgres.psql("SELECT pg_total_relation_size('event_search')", database)
            self.results["size"] = f"{int(size) / 2**20:.0f} MiB (event_search)"
        else:
            import sqlite3
            try:
                db = sqlite3.connect(os.path.join(self.server.directory, "homeserver.db"))
                pages = db.execute("SELECT SUM(pgsize) FROM dbstat WHERE name LIKE 'event_search%'").fetchone()[0]
                self.results["size"] = f"{pages / 2**20:.0f} MiB (event_search tables)"
            except sqlite3.Error as e:
                self.results["size"] = f"n/a ({e})"

    def measure_queries(self):
        rng = random.Random(5)
        middle = self.vocabulary[100:3000]
        kinds = {
            "one word": [(rng.choice(middle), None) for _ in range(QUERIES)],
            "two words": [(f"{rng.choice(middle)} {rng.choice(self.vocabulary[20:120])}", None)
                          for _ in range(QUERIES)],
            "filtered": [(rng.choice(middle), {"filter": {"limit": 10, "senders": [self.senders[3][1]]}})
                         for _ in range(QUERIES)],
        }
        for kind, queries in kinds.items():
            for term, extra in queries[:10]:  # warm-up
                self.search(self.reader, term, extra)
            times, hits = [], 0
            for term, extra in queries:
                elapsed, found = self.search(self.reader, term, extra)
                times.append(elapsed)
                hits += len(found["results"])
            self.results[kind] = f"{p50_p99(times)} ({hits / len(queries):.1f} results)"

    def measure_searchable(self):
        stop = threading.Event()
        background = self.senders[1][0]

        def chatter():
            n = 0
            while not stop.is_set():
                room = self.room_ids[1 + n % (self.rooms - 1)]
                background.json("PUT", f"/_matrix/client/v3/rooms/{q(room)}/send/m.room.message/b{n}",
                                {"msgtype": "m.text", "body": "background chatter"})
                n += 1
                time.sleep(0.01)

        thread = threading.Thread(target=chatter, daemon=True)
        thread.start()
        sender = self.senders[0][0]
        delays, first_try = [], 0
        try:
            for i in range(SEARCHABLE_SAMPLES):
                word = f"zzfresh{i}x{random.randrange(1 << 30)}"
                sender.json("PUT", f"/_matrix/client/v3/rooms/{q(self.room_ids[0])}/send/m.room.message/f{i}",
                            {"msgtype": "m.text", "body": f"needle {word}"})
                sent = time.perf_counter()
                tries = 0
                while True:
                    tries += 1
                    _, found = self.search(self.reader, word)
                    if found["results"]:
                        break
                    if time.perf_counter() - sent > 60:
                        raise Failure(f"{word} not searchable after 60 s")
                delays.append(time.perf_counter() - sent)
                first_try += tries == 1
        finally:
            stop.set()
            thread.join()
        self.results["send → searchable"] = f"{p50_p99(delays)} (found by the first search {first_try}/{len(delays)})"


ROWS = ["load", "indexing", "size", "one word", "two words", "filtered", "send → searchable"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("hearth")
    parser.add_argument("--synapse-python")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--big-messages", type=int, default=1_000_000)
    parser.add_argument("--big-rooms", type=int, default=1_000)
    parser.add_argument("--out")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    vocabulary, cumulative = words()
    work = tempfile.mkdtemp(prefix="hearth-searchbench-")
    columns, postgres = [], None
    plans = [("Hearth", "hearth", args.messages, args.rooms)]
    if args.synapse_python:
        plans.append(("Synapse (SQLite)", "synapse", args.messages, args.rooms))
        if args.postgres:
            postgres = Postgres()
            missing = postgres.available()
            if missing:
                raise Failure(f"--postgres: {missing}")
            say(postgres.start())
            plans.append(("Synapse (PostgreSQL)", "synapse-pg", args.messages, args.rooms))
    if args.big_messages:
        plans.append(("Hearth", "hearth", args.big_messages, args.big_rooms))
    try:
        for label, kind, messages, rooms in plans:
            directory = os.path.join(work, f"{kind}-{messages}")
            os.makedirs(directory)
            database = None
            if kind == "hearth":
                server = LoadingHearth(directory, args.hearth)
            elif kind == "synapse":
                server = Synapse(directory, args.synapse_python)
            else:
                database = "hearth_searchbench"
                server = Synapse(directory, args.synapse_python, postgres.database(database), label)
            server.start()
            run = Run(server, messages, rooms, vocabulary, cumulative)
            try:
                say(f"{label}: {messages:,} messages over {rooms} rooms")
                run.setup()
                run.load()
                say(f"{label}: loaded, {run.results['load']}")
                if kind == "hearth":
                    run.wait_indexed()
                    run.measure_indexing(server.binary, os.path.join(directory, "hearth.toml"))
                else:
                    run.results["indexing"] = "inside each send (see load)"
                run.measure_size(postgres if kind == "synapse-pg" else None, database)
                run.measure_queries()
                run.measure_searchable()
            except Failure as e:
                run.results.setdefault("error", str(e))
                say(f"{label}: {e}")
            finally:
                server.stop()
            columns.append((f"{label}, {messages:,} messages / {rooms} rooms", server.version, run.results))
            say(f"{label}: {run.results}")
    finally:
        if postgres:
            postgres.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report("benches/search.py", columns, ROWS, args.out)


def report(script, columns, rows, out=None):
    """Prints the columns ((name, version, results) each) as a Markdown
    table of `rows` (and errors), and writes it to `out` if given."""
    lines = [
        f"Measured {datetime.date.today()} on {platform.node()} ({os.cpu_count()} cores), "
        f"`{' '.join(shlex.quote(a) for a in [script] + sys.argv[1:])}`",
        "",
        "| | " + " | ".join(f"{name} ({version})" for name, version, _ in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for row in rows + ["error"]:
        if any(row in results for _, _, results in columns):
            lines.append(f"| {row} | " + " | ".join(results.get(row, "") for _, _, results in columns) + " |")
    table = "\n".join(lines)
    print(table)
    if out:
        with open(out, "w") as f:
            f.write(table + "\n")

if __name__ == "__main__":
    main()
