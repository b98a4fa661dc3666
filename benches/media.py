#!/usr/bin/env python3
"""Media benchmarks: Hearth against Synapse, the same client code for both.

Usage: benches/media.py PATH/TO/hearth [--synapse-python /tmp/synapse/bin/python [--postgres]] [--quick]
                        [--image-python PYTHON] [--out FILE.md] [--keep]

(python3 -m venv /tmp/synapse && /tmp/synapse/bin/pip install matrix-synapse)
Without --synapse-python only Hearth runs. Python's standard library only;
the test JPEGs are drawn with Pillow by the first of: this Python,
--image-python, the Synapse virtualenv's Python (Synapse depends on Pillow),
/tmp/benchvenv/bin/python.

Each server runs alone (Hearth, then Synapse), on 127.0.0.1 on a free port,
in its own temporary directory, with its default storage (RocksDB; SQLite
for Synapse), every rate limit lifted, a 100 MiB upload limit, authenticated
media on, and users made through shared-secret registration. Both log every
request at INFO, as they do by default. One user, one keep-alive connection,
requests one after another unless said otherwise:

  upload     POST /_matrix/media/v3/upload (application/octet-stream) of
             1 MiB × 50 and 50 MiB × 5 random files (fresh bytes each, so
             nothing is deduplicated; made before the clock starts): MiB/s
             over the time spent in the requests, and the median request.
  download   the same media through the authenticated
             GET /_matrix/client/v1/media/download/{server}/{id}, read in
             64 KiB chunks: MiB/s and the median. One more download of each
             size (not timed) is checked byte for byte.
  thumbnail  3 different 4000×3000 JPEGs (a smooth random picture with
             noise, a few MB each): the upload, then at once the first
             GET /_matrix/client/v1/media/thumbnail/…?width=320&height=240&method=scale
             and 10 more (served kept). Both servers make their configured
             thumbnails when an image is uploaded: Synapse before it answers
             the upload, Hearth in the background after answering; so the
             fair figure is "upload start → first thumbnail received".
  parallel   one more 50 MiB upload; the server's VmRSS just before, then
             100 threads (each its own connection, started together) each
             GET it whole, VmRSS sampled every 50 ms (VmHWM, reset just
             before through /proc/PID/clear_refs, as a check): baseline,
             peak, and the wall time of the 100 downloads. The client (100
             Python threads) shares the machine's cores with the server.

--quick: 1 MiB × 5, 50 MiB × 1, 1 JPEG with 3 kept requests, 10 parallel
downloads. A measurement that fails shows its error in its cell. Prints a
Markdown table (Hearth | Synapse) with the command line, for
docs/PERFORMANCE.md, and writes it to --out if given. The work directory,
/tmp/hearth-mediabench-*, is deleted at the end unless --keep.
"""

import argparse
import concurrent.futures
import datetime
import hashlib
import hmac
import http.client
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from federation import Postgres, proc_status  # noqa: E402  (the same /proc reading and cluster)

SECRET = "bench-secret"
PASSWORD = "bench-pass-1"
MIB = 1024 * 1024
CHUNK = 64 * 1024
START_DEADLINE = 180  # seconds for a server to answer /versions (Synapse makes its schema first)
REQUEST_TIMEOUT = 600
UNLIMITED = 1000000

HEARTH_RATE_LIMITS = ["login", "login_failures", "registration", "registration_checks", "message",
                      "room_creation", "membership", "typing", "to_device", "receipts"]

JPEG_SCRIPT = r"""
import random, sys
from PIL import Image
out, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    rnd = random.Random(4000 + i)
    small = Image.frombytes("RGB", (40, 30), bytes(rnd.randrange(256) for _ in range(40 * 30 * 3)))
    picture = small.resize((4000, 3000), Image.BICUBIC)
    noise = Image.effect_noise((4000, 3000), 40 + 10 * i).convert("RGB")
    Image.blend(picture, noise, 0.12).save(f"{out}/photo{i}.jpg", "JPEG", quality=85)
    print(f"{out}/photo{i}.jpg")
"""


class Failure(Exception):
    """Something did not hold; the message says what was seen."""


def say(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def q(value):
    return urllib.parse.quote(value, safe="")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median_ms(seconds):
    return statistics.median(seconds) * 1000


# ---------------------------------------------------------------- HTTP


class Client:
    """One user's keep-alive connection to a server (http.client); a request
    that finds the reused connection closed is sent once more on a new one."""

    def __init__(self, port, token=None):
        self.port, self.token = port, token
        self.conn = None
        self.used = False

    def close(self):
        if self.conn:
            self.conn.close()
        self.conn, self.used = None, False

    def _open(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            self.used = False
        return self.conn

    def request(self, method, path, body=None, headers=None, sink=None):
        """(status, headers, body bytes); with `sink` a readinto buffer, the
        body is read in chunks into it and only its length is returned."""
        headers = dict(headers or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in (1, 2):
            conn = self._open()
            reused = self.used
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if reused and attempt == 1:
                    continue
                raise
            self.used = True
            if sink is None or response.status != 200:
                data = response.read()
            else:
                data, view = 0, memoryview(sink)
                while True:
                    n = response.readinto(view)
                    if not n:
                        break
                    data += n
            if response.will_close:
                self.close()
            return response.status, response.headers, data
        raise AssertionError("unreachable")

    def json(self, method, path, body=None, expected=200):
        payload = None if body is None else json.dumps(body).encode()
        status, _, data = self.request(method, path, payload, {"Content-Type": "application/json"})
        if status != expected:
            raise Failure(f"{method} {path} answered {status}: {data[:500]!r}")
        return json.loads(data)

    def upload(self, data, content_type="application/octet-stream"):
        """POSTs `data`: (mxc server, media ID, seconds)."""
        started = time.perf_counter()
        status, _, answer = self.request("POST", "/_matrix/media/v3/upload", data,
                                         {"Content-Type": content_type, "Content-Length": str(len(data))})
        elapsed = time.perf_counter() - started
        if status != 200:
            raise Failure(f"upload of {len(data)} bytes answered {status}: {answer[:500]!r}")
        uri = json.loads(answer)["content_uri"]
        server, media_id = uri[len("mxc://"):].split("/", 1)
        return server, media_id, elapsed

    def download(self, server, media_id, sink):
        """GETs the media through the authenticated endpoint: (bytes read, seconds)."""
        started = time.perf_counter()
        status, _, data = self.request("GET", f"/_matrix/client/v1/media/download/{q(server)}/{q(media_id)}",
                                       sink=sink)
        elapsed = time.perf_counter() - started
        if status != 200:
            raise Failure(f"download of {media_id} answered {status}: {data[:500]!r}")
        return data, elapsed

    def download_bytes(self, server, media_id):
        status, _, data = self.request("GET", f"/_matrix/client/v1/media/download/{q(server)}/{q(media_id)}")
        if status != 200:
            raise Failure(f"download of {media_id} answered {status}: {data[:500]!r}")
        return data

    def thumbnail(self, server, media_id):
        """The 320×240 scaled thumbnail: (content type, bytes, seconds)."""
        path = (f"/_matrix/client/v1/media/thumbnail/{q(server)}/{q(media_id)}"
                "?width=320&height=240&method=scale")
        started = time.perf_counter()
        status, headers, data = self.request("GET", path)
        elapsed = time.perf_counter() - started
        if status != 200:
            raise Failure(f"thumbnail of {media_id} answered {status}: {data[:500]!r}")
        return headers.get("Content-Type"), data, elapsed


def register(port, username):
    """A user made through shared-secret registration (/_synapse/admin/v1/register)."""
    client = Client(port)
    nonce = client.json("GET", "/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(SECRET.encode(), b"\x00".join([nonce.encode(), username.encode(), PASSWORD.encode(),
                                                  b"notadmin"]), hashlib.sha1).hexdigest()
    answer = client.json("POST", "/_synapse/admin/v1/register",
                         {"nonce": nonce, "username": username, "password": PASSWORD, "admin": False, "mac": mac})
    client.close()
    return Client(port, answer["access_token"])


# ---------------------------------------------------------------- memory


def reset_hwm(pid):
    """Resets VmHWM to the current RSS; False when the kernel does not allow it."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples VmRSS of a process every `interval` seconds on a thread: its peak, in KiB."""

    def __init__(self, pid, interval=0.05):
        self.pid, self.interval, self.peak, self.samples = pid, interval, 0, 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped.is_set():
            try:
                self.peak = max(self.peak, proc_status(self.pid, "VmRSS"))
                self.samples += 1
            except (OSError, Failure):
                return
            self.stopped.wait(self.interval)

    def stop(self):
        self.stopped.set()
        self.thread.join()
        return self.peak


# ---------------------------------------------------------------- servers


class Server:
    """A server process of ours: started, waited for, stopped."""

    label = "?"

    def __init__(self, directory):
        self.directory = directory
        self.port = free_port()
        self.proc = None
        self.version = "?"

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self):
        """Polls /_matrix/client/versions until it answers 200, the process exits, or the deadline passes."""
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if self.proc.poll() is not None:
                raise Failure(f"{self.label} exited with status {self.proc.returncode} while starting; "
                              f"see {self.log}\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/_matrix/client/versions")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise Failure(f"{self.label} did not answer /versions within {START_DEADLINE} s; see {self.log}")
            time.sleep(0.1)

    def log_tail(self, chars=3000):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Hearth(Server):
    label = "Hearth"

    def __init__(self, directory, binary):
        super().__init__(directory)
        self.binary = os.path.abspath(binary)
        self.log = os.path.join(directory, "hearth.log")

    def config(self):
        limits = "".join(f"[rate_limits.{name}]\nper_second = {float(UNLIMITED)}\nburst_count = {UNLIMITED}\n"
                         for name in HEARTH_RATE_LIMITS)
        return f"""server_name = "localhost"
log = "info"

[[listeners]]
address = "127.0.0.1"
port = {self.port}
resources = ["client", "media"]

[database]
path = {json.dumps(os.path.join(self.directory, "hearth-db"))}

[registration]
shared_secret = {json.dumps(SECRET)}

{limits}
[media]
max_upload_size = {100 * MIB}
enable_authenticated_media = true
"""

    def start(self):
        config = os.path.join(self.directory, "hearth.toml")
        with open(config, "w") as f:
            f.write(self.config())
        try:
            self.version = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                                          timeout=30).stdout.strip() or "hearth"
        except (OSError, subprocess.SubprocessError):
            self.version = "hearth"
        profile = os.path.basename(os.path.dirname(self.binary))  # cargo's target/<profile>/hearth
        if profile in ("debug", "release"):
            self.version += f", {profile}"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([self.binary, "--config", config, "serve"], cwd=self.directory,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "NO_COLOR": "1"})
        self.wait_ready()


class Synapse(Server):
    label = "Synapse"

    def __init__(self, directory, python, database=None, label="Synapse"):
        super().__init__(directory)
        self.python = python
        self.database = database  # Synapse's `database` configuration; None: SQLite
        self.label = label
        self.log = os.path.join(directory, "homeserver.log")
        self.output = os.path.join(directory, "stdout.log")

    def config(self):
        unlimited = {"per_second": UNLIMITED, "burst_count": UNLIMITED}
        log_config = os.path.join(self.directory, "log.yaml")
        with open(log_config, "w") as f:  # homeserver.log at INFO, as the generated configuration does
            json.dump({
                "version": 1,
                "formatters": {"precise": {
                    "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"}},
                "handlers": {"file": {"class": "logging.FileHandler", "formatter": "precise",
                                      "filename": self.log, "encoding": "utf8"}},
                "root": {"level": "INFO", "handlers": ["file"]},
                "disable_existing_loggers": False,
            }, f, indent=2)
        return {
            "server_name": "localhost",
            "pid_file": os.path.join(self.directory, "homeserver.pid"),
            "listeners": [{"port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                           "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}],
            "database": self.database or {"name": "sqlite3",
                                          "args": {"database": os.path.join(self.directory, "homeserver.db")}},
            "log_config": log_config,
            "media_store_path": os.path.join(self.directory, "media_store"),
            "signing_key_path": os.path.join(self.directory, "signing.key"),
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "macaroon_secret_key": secrets.token_hex(32),
            "form_secret": secrets.token_hex(32),
            "registration_shared_secret": SECRET,
            "report_stats": False,
            "max_upload_size": "100M",
            "enable_authenticated_media": True,
            "media_upload_limits": [],
            "rc_message": unlimited,
            "rc_registration": unlimited,
            "rc_login": {"address": unlimited, "account": unlimited, "failed_attempts": unlimited},
            "rc_joins": {"local": unlimited, "remote": unlimited},
            "rc_joins_per_room": unlimited,
            "rc_room_creation": unlimited,
            "rc_presence": {"per_user": unlimited},
            "rc_media_create": unlimited,
        }

    def start(self):
        config = os.path.join(self.directory, "homeserver.yaml")
        with open(config, "w") as f:  # JSON, which YAML reads
            json.dump(self.config(), f, indent=2)
        command = [self.python, "-m", "synapse.app.homeserver", "-c", config]
        self.version = "Synapse " + subprocess.run(
            [self.python, "-c", "import synapse; print(synapse.__version__)"], capture_output=True, text=True,
            check=True, timeout=120).stdout.strip()
        subprocess.run(command + ["--generate-keys"], cwd=self.directory, check=True, timeout=120,
                       stdout=subprocess.DEVNULL)
        with open(self.output, "w") as out:
            # The python process itself is the server (its RSS is measured).
            self.proc = subprocess.Popen(command, cwd=self.directory, stdout=out, stderr=subprocess.STDOUT)
        self.wait_ready()

    def log_tail(self, chars=3000):
        text = super().log_tail(chars)
        try:
            with open(self.output, errors="replace") as f:
                text += f.read()[-chars:]
        except OSError:
            pass
        return text


# ---------------------------------------------------------------- test images


def pillow_python(candidates):
    """The first Python of `candidates` that imports PIL, or None."""
    for python in candidates:
        if not python or not os.path.exists(python):
            continue
        try:
            if subprocess.run([python, "-c", "import PIL"], capture_output=True, timeout=60).returncode == 0:
                return python
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def make_jpegs(python, directory, count):
    os.makedirs(directory, exist_ok=True)
    done = subprocess.run([python, "-c", JPEG_SCRIPT, directory, str(count)], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        raise Failure(f"drawing the JPEGs with {python} failed: {done.stderr[-1000:]}")
    paths = done.stdout.split()
    return [open(p, "rb").read() for p in paths]


# ---------------------------------------------------------------- the measurements


class Bench:
    def __init__(self, args):
        self.args = args
        quick = args.quick
        self.small_n = 5 if quick else 50
        self.big_n = 1 if quick else 5
        self.jpeg_n = 1 if quick else 3
        self.kept_n = 3 if quick else 10
        self.parallel_n = 10 if quick else 100
        self.workdir = tempfile.mkdtemp(prefix="hearth-mediabench-")
        self.results = {}  # server label -> {row key: cell text}
        self.versions = {}
        self.notes = []
        self.servers = []
        self.failed_servers = []  # their directories (logs) are kept
        self.jpegs = None
        self.errors = 0  # cells showing an error
        self.jpeg_error = None

    def rows(self):
        """(key, label) of the table's rows, in order."""
        s, b, j, p = self.small_n, self.big_n, self.jpeg_n, self.parallel_n
        return [
            ("up_small", f"upload 1 MiB × {s}, sequential: throughput (median request)"),
            ("up_big", f"upload 50 MiB × {b}, sequential: throughput (median request)"),
            ("down_small", f"download 1 MiB × {s}, sequential: throughput (median request)"),
            ("down_big", f"download 50 MiB × {b}, sequential: throughput (median request)"),
            ("jpeg_upload", f"upload of a 4000×3000 JPEG (median of {j})"),
            ("thumb_first", f"first 320×240 thumbnail request, right after the upload (median of {j})"),
            ("thumb_total", f"upload start → first thumbnail received (median of {j})"),
            ("thumb_kept", f"thumbnail served kept (median of {self.kept_n} × {j})"),
            ("par_rss", f"{p} parallel downloads of one 50 MiB file: RSS before → peak (sampled; VmHWM)"),
            ("par_wall", f"{p} parallel downloads of one 50 MiB file: wall time (aggregate)"),
        ]

    def record(self, label, key, fn):
        """Runs one measurement; its cell, or the error in it."""
        try:
            text = fn()
        except Exception as e:  # noqa: BLE001 - shown in the table, the rest goes on
            text = f"error: {type(e).__name__}: {str(e)[:300]}".replace("|", "/").replace("\n", " ")
            self.errors += 1
            say(f"{label}: {key} failed: {text}")
        else:
            say(f"{label}: {key}: {text}")
        self.results.setdefault(label, {})[key] = text
        return text

    def prepare_jpegs(self):
        python = pillow_python([sys.executable, self.args.image_python, self.args.synapse_python,
                                "/tmp/benchvenv/bin/python"])
        if python is None:
            self.jpeg_error = "no Python with Pillow (see --image-python)"
            self.notes.append("no thumbnails: no Python with Pillow to draw the JPEGs; pass --image-python "
                              "(python3 -m venv /tmp/benchvenv && /tmp/benchvenv/bin/pip install pillow)")
            return
        try:
            self.jpegs = make_jpegs(python, os.path.join(self.workdir, "jpegs"), self.jpeg_n)
        except (Failure, OSError, subprocess.SubprocessError) as e:
            self.jpeg_error = str(e)
            return
        sizes = ", ".join(f"{len(j) / MIB:.1f}" for j in self.jpegs)
        say(f"drew {len(self.jpegs)} JPEGs of 4000×3000 with {python}: {sizes} MiB")
        self.notes.append(f"test JPEGs: 4000×3000, {sizes} MiB (Pillow, quality 85)")

    def run_server(self, server):
        label = server.label
        say(f"starting {label} in {server.directory}")
        self.servers.append(server)
        server.start()
        self.versions[label] = server.version
        say(f"{label} ({server.version}) answers on port {server.port}, pid {server.pid}")
        user = register(server.port, "bench")
        sink = bytearray(CHUNK)
        uploads = {}

        def upload_run(key, size, count):
            times = []
            media = []
            for _ in range(count):
                data = os.urandom(size)
                server_name, media_id, elapsed = user.upload(data)
                times.append(elapsed)
                media.append((server_name, media_id, hashlib.sha256(data).hexdigest()))
            uploads[key] = (size, media)
            return f"{size * count / MIB / sum(times):.1f} MiB/s ({median_ms(times):.1f} ms)"

        def download_run(key, up_key):
            if up_key not in uploads:
                raise Failure("nothing uploaded (the upload failed)")
            size, media = uploads[up_key]
            times = []
            for server_name, media_id, _ in media:
                got, elapsed = user.download(server_name, media_id, sink)
                if got != size:
                    raise Failure(f"{media_id}: {got} bytes instead of {size}")
                times.append(elapsed)
            server_name, media_id, digest = media[0]  # not timed: the bytes are the ones uploaded
            if hashlib.sha256(user.download_bytes(server_name, media_id)).hexdigest() != digest:
                raise Failure(f"{media_id} came back different")
            return f"{size * len(media) / MIB / sum(times):.1f} MiB/s ({median_ms(times):.1f} ms)"

        self.record(label, "up_small", lambda: upload_run("small", MIB, self.small_n))
        self.record(label, "up_big", lambda: upload_run("big", 50 * MIB, self.big_n))
        self.record(label, "down_small", lambda: download_run("small", "small"))
        self.record(label, "down_big", lambda: download_run("big", "big"))
        self.thumbnails(label, user)
        self.parallel(label, server, user)
        user.close()

    def thumbnails(self, label, user):
        figures = {"upload": [], "first": [], "total": [], "kept": [], "sizes": set()}

        def run():
            if self.jpegs is None:
                raise Failure(self.jpeg_error or "no JPEGs")
            for jpeg in self.jpegs:
                server_name, media_id, up = user.upload(jpeg, "image/jpeg")
                content_type, data, first = user.thumbnail(server_name, media_id)
                figures["upload"].append(up)
                figures["first"].append(first)
                figures["total"].append(up + first)
                figures["sizes"].add(f"{content_type}, {len(data) / 1024:.0f} KiB")
                for _ in range(self.kept_n):
                    figures["kept"].append(user.thumbnail(server_name, media_id)[2])
            self.notes.append(f"{label}'s 320×240 thumbnails: " + "; ".join(sorted(figures["sizes"])))

        error = None
        try:
            run()
        except Exception as e:  # noqa: BLE001
            error = e

        def cell(key):
            def fn():
                if error is not None:
                    raise error
                return f"{median_ms(figures[key]):.1f} ms"
            return fn

        for key, fig in (("jpeg_upload", "upload"), ("thumb_first", "first"), ("thumb_total", "total"),
                         ("thumb_kept", "kept")):
            self.record(label, key, cell(fig))

    def parallel(self, label, server, user):
        n = self.parallel_n
        figures = {}

        def run():
            size = 50 * MIB
            server_name, media_id, _ = user.upload(os.urandom(size))
            time.sleep(1)  # let the upload's buffers be released before the baseline
            clients = [Client(server.port, user.token) for _ in range(n)]
            for c in clients:  # connected before the clock starts
                c._open().connect()
            barrier = threading.Barrier(n + 1)
            results = [None] * n

            def fetch(k):
                buffer = bytearray(CHUNK)
                barrier.wait()
                try:
                    got, elapsed = clients[k].download(server_name, media_id, buffer)
                    results[k] = got if got == size else Failure(f"{got} bytes instead of {size}")
                except Exception as e:  # noqa: BLE001
                    results[k] = e
                finally:
                    clients[k].close()

            threads = [threading.Thread(target=fetch, args=(k,), daemon=True) for k in range(n)]
            for t in threads:
                t.start()
            before = proc_status(server.pid, "VmRSS")
            hwm_reset = reset_hwm(server.pid)
            sampler = RssSampler(server.pid, 0.05)
            barrier.wait()
            started = time.perf_counter()
            deadline = time.monotonic() + REQUEST_TIMEOUT
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            wall = time.perf_counter() - started
            peak = sampler.stop()
            hwm = proc_status(server.pid, "VmHWM") if hwm_reset else None
            failures = [r for r in results if not isinstance(r, int)]
            figures.update(before=before, peak=max(peak, before), hwm=hwm, wall=wall, samples=sampler.samples,
                           failures=failures, ok=n - len(failures), size=size)

        error = None
        try:
            run()
        except Exception as e:  # noqa: BLE001
            error = e

        def rss():
            if error is not None:
                raise error
            hwm = f"; {figures['hwm'] / 1024:.0f}" if figures["hwm"] is not None else ""
            return f"{figures['before'] / 1024:.0f} → {figures['peak'] / 1024:.0f} MiB{hwm}"

        def wall():
            if error is not None:
                raise error
            text = (f"{figures['wall']:.2f} s ({figures['ok'] * figures['size'] / MIB / figures['wall']:.0f} "
                    f"MiB/s)")
            if figures["failures"]:
                first = figures["failures"][0]
                text += f"; {len(figures['failures'])} of {n} failed: {type(first).__name__}: {first}"
            return text

        self.record(label, "par_rss", rss)
        self.record(label, "par_wall", wall)

    def run(self):
        self.prepare_jpegs()
        kinds = [("Hearth", lambda d: Hearth(d, self.args.hearth))]
        python = self.args.synapse_python
        if python:
            kinds.append(("Synapse", lambda d: Synapse(d, python)))
        postgres = None
        if python and self.args.postgres:
            # Debian's cluster, as benches/federation.py runs it.
            postgres = Postgres()
            missing = postgres.available()
            if missing:
                raise Failure(f"--postgres: {missing}")
            self.notes.append(f"Synapse (PostgreSQL): {postgres.start()}")
            label = "Synapse (PostgreSQL)"
            kinds.append((label, lambda d: Synapse(d, python, postgres.database("hearth_mediabench"), label)))
        try:
            self.run_servers(kinds)
        finally:
            if postgres:
                postgres.close()

    def run_servers(self, kinds):
        for label, make in kinds:
            directory = os.path.join(self.workdir, label.lower().replace(" ", "-").strip("()"))
            os.makedirs(directory)
            server = make(directory)
            try:
                self.run_server(server)
            except Exception as e:  # noqa: BLE001 - the other server still runs
                say(f"{label} failed: {type(e).__name__}: {e}")
                first_line = str(e).split("\n")[0][:300]
                self.notes.append(f"{label} failed: {type(e).__name__}: {first_line}")
                self.results.setdefault(label, {})
                self.failed_servers.append(label)
            finally:
                self.versions.setdefault(label, server.version)
                server.stop()
                self.servers.remove(server)
            if not self.args.keep and label not in self.failed_servers:  # the next server gets the disk
                shutil.rmtree(directory, ignore_errors=True)

    def stop_all(self):
        for server in list(self.servers):
            server.stop()

    def report(self, command):
        labels = list(self.results)
        head = [f"{label} ({self.versions.get(label, '?')})" for label in labels]
        lines = ["| what | " + " | ".join(head) + " |", "|---" * (len(labels) + 1) + "|"]
        for key, text in self.rows():
            lines.append(f"| {text} | " + " | ".join(self.results[l].get(key, "— (see below)") for l in labels)
                         + " |")
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        footer = ["", f"Command: `{command}`", "",
                  f"Measured {when}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                  f"Hearth binary {os.path.abspath(self.args.hearth)}.", ""]
        footer += [f"- {note}" for note in self.notes]
        text = "\n".join(lines + footer) + "\n"
        print()
        print(text, flush=True)
        if self.args.out:
            with open(self.args.out, "w") as f:
                f.write(text)
            say(f"wrote {self.args.out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hearth", help="the hearth binary (a release build, for figures worth recording)")
    parser.add_argument("--synapse-python", help="the Python of a virtualenv with matrix-synapse; "
                                                 "without it only Hearth runs")
    parser.add_argument("--postgres", action="store_true",
                        help="also Synapse on PostgreSQL (Debian's cluster; psycopg2 in --synapse-python)")
    parser.add_argument("--quick", action="store_true", help="small counts, for a fast check")
    parser.add_argument("--image-python", help="a Python with Pillow, to draw the test JPEGs")
    parser.add_argument("--out", help="also write the Markdown table to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    args = parser.parse_args()
    if not os.access(args.hearth, os.X_OK):
        parser.error(f"{args.hearth} is not an executable")
    command = " ".join(shlex.quote(a) for a in ["benches/media.py"] + sys.argv[1:])

    def terminated(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminated)
    bench = Bench(args)
    failed = False
    try:
        bench.run()
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001
        failed = True
        print(f"FAILED: {type(e).__name__}: {e}", flush=True)
    finally:
        bench.stop_all()
    if bench.results:
        bench.report(command)
    if args.keep or bench.failed_servers:
        print(f"# kept the work directory: {bench.workdir}")
    else:
        shutil.rmtree(bench.workdir, ignore_errors=True)
    sys.exit(1 if failed or bench.failed_servers or bench.errors else 0)


if __name__ == "__main__":
    main()
