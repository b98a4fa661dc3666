"""TURN credentials end to end: hearth's /voip/turnServer -> a real coturn Allocate.

Usage: turn.py [PATH/TO/hearth]
Starts coturn (`turnserver`, or $TURNSERVER) on a free loopback port with the
TURN REST API (a secret shared with hearth). A TURN client here (RFC 5389/5766
long-term credentials over UDP) first checks coturn with credentials computed
from the secret, then hearth: a user's /voip/turnServer answer, plugged into an
Allocate, gets a relayed address; a wrong password and an expired user name
are refused; a guest gets credentials too; a hearth without [turn] answers {}
and no token is 401. Without a hearth path only the coturn half runs.
The last line is the summary: "turn: N passed, N failed".
"""

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

from harness import finish, http, print_log_tails, start_hearth, stop, wait_until

REALM, SECRET, LIFETIME = "hearth.test", "turn-shared-secret-for-tests", 3600
COOKIE = 0x2112A442
ALLOCATE_REQUEST, ALLOCATE_SUCCESS, ALLOCATE_ERROR = 0x0003, 0x0103, 0x0113
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, LIFETIME_ATTR = 0x0006, 0x0008, 0x0009, 0x000D
REALM_ATTR, NONCE, XOR_RELAYED_ADDRESS, REQUESTED_TRANSPORT, FINGERPRINT = 0x0014, 0x0015, 0x0016, 0x0019, 0x8028
CHECKS = []


def check(name, condition, detail=""):
    CHECKS.append((name, bool(condition)))
    print(("ok   " if condition else "FAIL ") + name + (f": {detail}" if detail and not condition else ""))


def rest_credentials(user_id, expiry):
    """The TURN REST API's credentials: `<expiry>:<user>` and base64(HMAC-SHA1(secret, username))."""
    username = f"{expiry}:{user_id}"
    return username, base64.b64encode(hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()).decode()


# --- STUN/TURN messages (RFC 5389, RFC 5766) ---

def attribute(kind, value):
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def message(kind, txid, attrs, key=None):
    """A STUN message; with `key`, MESSAGE-INTEGRITY then FINGERPRINT, each over what precedes it."""
    body = b"".join(attribute(k, v) for k, v in attrs)
    if key is not None:
        header = struct.pack("!HHI", kind, len(body) + 24, COOKIE) + txid
        body += attribute(MESSAGE_INTEGRITY, hmac.new(key, header + body, hashlib.sha1).digest())
        header = struct.pack("!HHI", kind, len(body) + 8, COOKIE) + txid
        body += attribute(FINGERPRINT, struct.pack("!I", zlib.crc32(header + body) ^ 0x5354554E))
    return struct.pack("!HHI", kind, len(body), COOKIE) + txid + body


def parse(data):
    """(type, txid, [(attribute type, value, offset of the attribute)]) or None."""
    if len(data) < 20:
        return None
    kind, length, cookie = struct.unpack("!HHI", data[:8])
    if cookie != COOKIE or len(data) < 20 + length:
        return None
    attrs, at = [], 20
    while at + 4 <= 20 + length:
        a, n = struct.unpack("!HH", data[at:at + 4])
        attrs.append((a, data[at + 4:at + 4 + n], at))
        at += 4 + n + (-n % 4)
    return kind, data[8:20], attrs


def integrity_ok(data, attrs, key):
    """Whether the response's MESSAGE-INTEGRITY is the HMAC under `key` (coturn knew our password)."""
    for a, value, at in attrs:
        if a == MESSAGE_INTEGRITY:
            header = data[:2] + struct.pack("!H", at + 24 - 20) + data[4:20]
            return hmac.compare_digest(value, hmac.new(key, header + data[20:at], hashlib.sha1).digest())
    return False


def transact(sock, server, kind, attrs, key=None, timeout=5.0):
    """Sends one request, retransmitting over UDP until the matching response or the deadline."""
    txid = os.urandom(12)
    request, deadline = message(kind, txid, attrs, key), time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.sendto(request, server)
        sock.settimeout(min(0.5, max(0.01, deadline - time.monotonic())))
        try:
            while True:
                data, _ = sock.recvfrom(4096)
                parsed = parse(data)
                if parsed and parsed[1] == txid:
                    return data, parsed[0], parsed[2]
        except socket.timeout:
            continue
    return None, None, []


def error_code(attrs):
    value = next((v for a, v, _ in attrs if a == ERROR_CODE), None)
    return (value[2] & 7) * 100 + value[3] if value and len(value) >= 4 else None


def allocate(port, username, password):
    """A TURN Allocate (UDP relay) with long-term credentials, from a fresh 5-tuple.

    Returns a dict: `challenge` (the unauthenticated attempt's error code), `realm`, `nonce`,
    then `kind`, `error` of the authenticated attempt, `relayed` (host, port) and `integrity`."""
    server = ("127.0.0.1", port)
    transport = [(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0])), (LIFETIME_ATTR, struct.pack("!I", 60))]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        _, kind, attrs = transact(sock, server, ALLOCATE_REQUEST, transport)
        found = {a: v for a, v, _ in attrs}
        result = {"challenge": error_code(attrs) if kind == ALLOCATE_ERROR else kind,
                  "realm": found.get(REALM_ATTR, b"").decode(), "nonce": found.get(NONCE)}
        if result["challenge"] != 401 or not result["nonce"]:
            return result
        key = hashlib.md5(f"{username}:{result['realm']}:{password}".encode()).digest()
        for _ in range(2):  # a second time only after a 438 Stale Nonce, with the new nonce
            creds = [(USERNAME, username.encode()), (REALM_ATTR, result["realm"].encode()), (NONCE, result["nonce"])]
            data, kind, attrs = transact(sock, server, ALLOCATE_REQUEST, transport + creds, key)
            result.update(kind=kind, error=error_code(attrs) if kind == ALLOCATE_ERROR else None)
            if result["error"] != 438:
                break
            result["nonce"] = next((v for a, v, _ in attrs if a == NONCE), result["nonce"])
        relayed = next((v for a, v, _ in attrs if a == XOR_RELAYED_ADDRESS), None)
        if relayed and relayed[1] == 1:
            xport = struct.unpack("!H", relayed[2:4])[0] ^ (COOKIE >> 16)
            xaddr = struct.unpack("!I", relayed[4:8])[0] ^ COOKIE
            result["relayed"] = (socket.inet_ntoa(struct.pack("!I", xaddr)), xport)
        result["integrity"] = kind == ALLOCATE_SUCCESS and integrity_ok(data, attrs, key)
        return result  # the allocation lapses after its 60 s LIFETIME, or with turnserver


def check_allocations(port, username, password, who):
    """A good Allocate with these credentials, then the same user name with a wrong password and expired."""
    got = allocate(port, username, password)
    check(f"{who}: unauthenticated Allocate is challenged (401, REALM, NONCE)",
          got["challenge"] == 401 and got["realm"] == REALM and got["nonce"], got)
    check(f"{who}: Allocate succeeds with a relayed address",
          got.get("kind") == ALLOCATE_SUCCESS and got.get("relayed", ("",))[0] == "127.0.0.1", got)
    check(f"{who}: success response's MESSAGE-INTEGRITY is under our key", got.get("integrity"), got)
    wrong = password[:-2] + ("A" if password[-2] != "A" else "B") + password[-1]
    got = allocate(port, username, wrong)
    check(f"{who}: a wrong password is refused (401)", got.get("kind") == ALLOCATE_ERROR and got.get("error") == 401, got)
    user_id = username.split(":", 1)[1]
    expired, expired_password = rest_credentials(user_id, int(time.time()) - 60)
    got = allocate(port, expired, expired_password)
    check(f"{who}: an expired user name is refused", got.get("kind") == ALLOCATE_ERROR and got.get("error") == 401, got)


# --- processes ---

def free_port():
    """A loopback port free for both UDP and TCP."""
    while True:
        with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            t.bind(("127.0.0.1", 0))
            try:
                u.bind(("127.0.0.1", t.getsockname()[1]))
            except OSError:
                continue
            return t.getsockname()[1]


def stun_binding_ok(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return transact(sock, ("127.0.0.1", port), 0x0001, [], timeout=0.3)[1] == 0x0101


def start_coturn(command, workdir):
    """Runs turnserver with the TURN REST API on a free loopback port: (process, port, log file, seconds to start)."""
    port, log = free_port(), os.path.join(workdir, "turnserver.log")
    args = [command, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
            "--min-port=49152", "--max-port=65535", f"--realm={REALM}", "--use-auth-secret",
            f"--static-auth-secret={SECRET}", "--no-tls", "--no-dtls", "--no-cli", "--no-rfc5780",
            "--allow-loopback-peers", "--log-file=stdout", "--simple-log",
            f"--pidfile={workdir}/turnserver.pid", f"--userdb={workdir}/turndb"]
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if not wait_until(lambda: proc.poll() is not None or stun_binding_ok(port), 30) or proc.poll() is not None:
        proc.kill()
        raise SystemExit("turnserver did not answer a STUN Binding request:\n" + open(log).read()[-3000:])
    return proc, port, log, time.monotonic() - started


def start_turn_hearth(binary, workdir, name, extra):
    """Hearth with guests allowed and `extra` TOML: (process, URL, output lines)."""
    return start_hearth(binary, workdir, "guest_access = true\n" + extra, name)


def hearth_scenario(with_turn, without_turn, port, uris):
    def api(name, base, method, path, body=None, token=None, expect=200):
        status, answer = http(method, base + "/_matrix/client/v3" + path, body, token)
        check(name, status == expect, (status, answer))
        return answer if isinstance(answer, dict) else {}

    user = api("register a user", with_turn, "POST", "/register",
               {"username": "caller", "password": "s3cret-pass", "auth": {"type": "m.login.dummy"}})
    asked = int(time.time())
    turn = api("GET /voip/turnServer", with_turn, "GET", "/voip/turnServer", token=user.get("access_token"))
    m = re.fullmatch(r"(\d+):(.+)", str(turn.get("username")))
    check("username is <expiry>:<user id>", m and m.group(2) == user.get("user_id"), turn)
    check("expiry is about now + user_lifetime_secs",
          m and asked + LIFETIME - 5 <= int(m.group(1)) <= int(time.time()) + LIFETIME + 5, turn)
    check("ttl is user_lifetime_secs", turn.get("ttl") == LIFETIME, turn)
    check("uris as configured", turn.get("uris") == uris, turn)
    check("password is the REST API's HMAC of the username",
          m and turn.get("password") == rest_credentials(m.group(2), m.group(1))[1], turn)
    if m and isinstance(turn.get("password"), str):
        check_allocations(port, turn["username"], turn["password"], "hearth's credentials")

    guest = api("register a guest", with_turn, "POST", "/register?kind=guest", {})
    turn = api("a guest's GET /voip/turnServer (allow_guests)", with_turn, "GET", "/voip/turnServer",
               token=guest.get("access_token"))
    check("guest credentials name the guest", str(turn.get("username")).endswith(":" + str(guest.get("user_id"))), turn)

    status, answer = http("GET", with_turn + "/_matrix/client/v3/voip/turnServer")
    check("no token: 401 M_MISSING_TOKEN", status == 401 and isinstance(answer, dict)
          and answer.get("errcode") == "M_MISSING_TOKEN", (status, answer))
    other = api("register on the hearth without [turn]", without_turn, "POST", "/register",
                {"username": "caller", "password": "s3cret-pass", "auth": {"type": "m.login.dummy"}})
    status, answer = http("GET", without_turn + "/_matrix/client/v3/voip/turnServer", token=other.get("access_token"))
    check("without [turn]: 200 {}", status == 200 and answer == {}, (status, answer))


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: turn.py PATH/TO/hearth")
    binary = sys.argv[1]
    command = os.environ.get("TURNSERVER") or shutil.which("turnserver")
    if not command:
        raise SystemExit("no turnserver command (apt-get install coturn, or set $TURNSERVER)")
    procs, logs = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        try:
            proc, port, logs["turnserver"], took = start_coturn(command, workdir)
            procs.append(proc)
            print(f"turnserver answered STUN on 127.0.0.1:{port} after {took:.2f}s")
            username, password = rest_credentials("@test:localhost", int(time.time()) + LIFETIME)
            check_allocations(port, username, password, "computed credentials")
            uris = [f"turn:127.0.0.1:{port}?transport=udp", f"turn:127.0.0.1:{port}?transport=tcp"]
            section = (f"[turn]\nuris = {json.dumps(uris)}\nshared_secret = {json.dumps(SECRET)}\n"
                       f"user_lifetime_secs = {LIFETIME}\nallow_guests = true\n")
            proc, with_turn, logs["hearth"] = start_turn_hearth(binary, workdir, "hearth", section)
            procs.append(proc)
            proc, without_turn, logs["hearth-without-turn"] = start_turn_hearth(binary, workdir, "plain", "")
            procs.append(proc)
            hearth_scenario(with_turn, without_turn, port, uris)
        finally:
            stop(procs)
            if not all(ok for _, ok in CHECKS) or sys.exc_info()[0]:
                print_log_tails(logs)
    finish("turn", CHECKS)


if __name__ == "__main__":
    main()
