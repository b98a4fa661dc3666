"""Third-party (email) invites end to end: hearth and an identity server.

Usage: third_party_invites.py PATH/TO/hearth
A fake identity server (Identity Service API v2 over TLS, self-signed for
127.0.0.1; an ed25519 key per stored invite) and a real `hearth`: an invite
to a bound address invites its user; one to an unbound address is stored at
the identity server and announced in the room; a signed 3pid/onbind turns
it into an invite, unless forged or its key revoked; so does a join with
third_party_signed; bad input changes nothing.
The last line is the summary: "3pid: N passed, N failed".
"""

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from harness import start_hearth

ID_TOKEN, PEPPER = "tok", "pepper"
CHECKS = []
SESSION = requests.Session()
SESSION.trust_env = False  # no proxy for loopback


def check(name, condition, detail=""):
    CHECKS.append((name, bool(condition)))
    print(("ok   " if condition else "FAIL ") + name + (f": {detail}" if detail and not condition else ""))


def b64(raw):
    return base64.b64encode(raw).rstrip(b"=").decode()


def address_hash(address, medium="email"):
    return base64.urlsafe_b64encode(hashlib.sha256(f"{address} {medium} {PEPPER}".encode()).digest()).rstrip(b"=").decode()


def public_b64(key):
    return b64(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def sign(obj, key, server):
    """Signs `obj` as signedjson does: canonical JSON without signatures/unsigned."""
    bare = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    canonical = json.dumps(bare, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return {**bare, "signatures": {server: {"ed25519:0": b64(key.sign(canonical))}}}


def self_signed(workdir):
    """A PEM file with a certificate for 127.0.0.1 and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    path = os.path.join(workdir, "identity.pem")
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


class IdentityServer(BaseHTTPRequestHandler):
    """Identity Service API v2, as far as a homeserver uses it; every call recorded."""

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def record(self, body=None):
        path = urllib.parse.urlsplit(self.path)
        call = {"path": path.path, "query": urllib.parse.parse_qs(path.query),
                "auth": self.headers.get("Authorization"), "body": body}
        with self.server.lock:
            self.server.calls.append(call)
        return call

    def authorized(self, call):
        """Whether the request has the token (v2 requires one); answers 401 if not."""
        ok = call["auth"] == f"Bearer {ID_TOKEN}"
        if not ok:
            self.reply(401, {"errcode": "M_UNAUTHORIZED", "error": "bad token"})
        return ok

    def do_GET(self):
        call = self.record()
        if call["path"] == "/_matrix/identity/v2/hash_details":
            if self.authorized(call):
                self.reply(200, {"lookup_pepper": PEPPER, "algorithms": ["sha256"]})
        elif call["path"] == "/_matrix/identity/v2/pubkey/isvalid":
            key = call["query"].get("public_key", [""])[0]
            with self.server.lock:
                valid = key in self.server.issued and key not in self.server.revoked
            self.reply(200, {"valid": valid})
        else:
            self.reply(404, {"errcode": "M_NOT_FOUND"})

    def do_POST(self):
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        except ValueError:
            body = None
        call = self.record(body)
        if not self.authorized(call):
            return
        if not isinstance(body, dict):
            return self.reply(400, {"errcode": "M_NOT_JSON"})
        if call["path"] == "/_matrix/identity/v2/lookup":
            if body.get("algorithm") != "sha256" or body.get("pepper") != PEPPER:
                return self.reply(400, {"errcode": "M_INVALID_PEPPER"})
            found = {h: self.server.bound[h] for h in body.get("addresses", []) if h in self.server.bound}
            self.reply(200, {"mappings": found})
        elif call["path"] == "/_matrix/identity/v2/store-invite":
            key, token = ed25519.Ed25519PrivateKey.generate(), os.urandom(12).hex()
            with self.server.lock:
                self.server.keys[token] = key
                self.server.issued.add(public_b64(key))
            url = f"https://{self.server.name}/_matrix/identity/v2/pubkey/isvalid"
            self.reply(200, {"token": token, "display_name": str(body.get("address", "?"))[:1].upper() + "***",
                             "public_keys": [{"public_key": public_b64(key), "key_validity_url": url}]})
        else:
            self.reply(404, {"errcode": "M_NOT_FOUND"})

    def log_message(self, *args):
        pass


def start_identity_server(workdir):
    server = ThreadingHTTPServer(("127.0.0.1", 0), IdentityServer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(self_signed(workdir))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.lock, server.calls, server.keys, server.issued, server.revoked, server.bound = (
        threading.Lock(), [], {}, set(), set(), {})
    server.name = f"127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_identity_hearth(binary, workdir):
    """Hearth allowed to reach the loopback identity server: (process, URL, output)."""
    extra = (
        "[rate_limits.registration]\nper_second = 100.0\nburst_count = 100\n"
        "[rate_limits.message]\nper_second = 100.0\nburst_count = 100\n"
        "[outbound]\nallow_private_addresses = true\ndanger_accept_invalid_certs = true\n"
    )
    return start_hearth(binary, workdir, extra)


def scenario(base, ids):
    def http(method, path, body=None, token=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = SESSION.request(method, base + path, json=body, headers=headers, timeout=60)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text

    def api(name, method, path, body=None, token=None, expect=200):
        status, answer = http(method, "/_matrix/client/v3" + path, body, token)
        check(name, status == expect, (status, answer))
        return answer if isinstance(answer, dict) else {}

    def calls(path):
        with ids.lock:
            return [c for c in ids.calls if c["path"] == "/_matrix/identity/v2/" + path]

    def state():
        status, events = http("GET", f"/_matrix/client/v3/rooms/{room}/state", token=tokens["alice"])
        return events if status == 200 and isinstance(events, list) else []

    def member(user):
        """(status, content) of the user's member state, as alice sees it."""
        return http("GET", f"/_matrix/client/v3/rooms/{room}/state/m.room.member/{user}", token=tokens["alice"])

    def membership(user):
        status, content = member(user)
        return content.get("membership") if status == 200 and isinstance(content, dict) else status

    def invite_by_email(name, who, address, expect=200, id_server=None):
        """Invites by address; the token and key of the invite the identity server stored for it, if any."""
        body = {"id_server": id_server or ids.name, "id_access_token": ID_TOKEN, "medium": "email", "address": address}
        stored = len(ids.keys)
        api(name, "POST", f"/rooms/{room}/invite", body, tokens[who], expect)
        with ids.lock:
            return list(ids.keys.items())[-1] if len(ids.keys) > stored else (None, None)

    def onbind(user, address, token, key):
        """The identity server's call once `address` is bound to `user`: (status, answer, signed)."""
        signed = sign({"mxid": user, "token": token}, key, ids.name)
        invite = {"address": address, "medium": "email", "mxid": user, "room_id": room,
                  "sender": "@alice:localhost", "token": token, "signed": signed}
        return (*http("POST", "/_matrix/federation/v1/3pid/onbind",
                      {"address": address, "medium": "email", "mxid": user, "invites": [invite]}), signed)

    password = {"password": "s3cret-pass", "auth": {"type": "m.login.dummy"}}
    tokens = {name: api(f"register {name}", "POST", "/register", {"username": name, **password}).get("access_token")
              for name in ("alice", "bob", "carol", "dave", "erin", "frank", "mallory")}
    room = api("alice creates a private room", "POST", "/createRoom",
               {"preset": "private_chat", "name": "Invite room"}, tokens["alice"]).get("room_id")
    ids.bound[address_hash("bob@example.org")] = "@bob:localhost"

    # 1. A bound address: its user is invited.
    invite_by_email("invite bob@example.org (bound)", "alice", "bob@example.org")
    check("bob's membership is invite", membership("@bob:localhost") == "invite", member("@bob:localhost"))
    details, lookups = calls("hash_details"), calls("lookup")
    check("IS asked for hash_details with the bearer token", details and details[-1]["auth"] == f"Bearer {ID_TOKEN}",
          details)
    check("IS lookup: sha256 of 'address medium pepper', with the token", lookups and lookups[-1]["body"] == {
        "addresses": [address_hash("bob@example.org")], "algorithm": "sha256", "pepper": PEPPER}
        and lookups[-1]["auth"] == f"Bearer {ID_TOKEN}", lookups)
    check("no invite stored for a bound address", not calls("store-invite"), calls("store-invite"))

    # 2. An unbound address: stored at the IS and announced in the room.
    carol_token, carol_key = invite_by_email("invite carol@example.org (unbound)", "alice", "carol@example.org")
    stores = calls("store-invite")
    body = (stores[-1]["body"] if stores else None) or {}
    check("IS got store-invite with room (and its name), sender, medium, address and the token",
          body.get("room_id") == room and body.get("room_name") == "Invite room" and body.get("sender")
          == "@alice:localhost" and body.get("medium") == "email" and body.get("address") == "carol@example.org"
          and stores[-1]["auth"] == f"Bearer {ID_TOKEN}", stores)
    tpi = next((e for e in state() if e["type"] == "m.room.third_party_invite"), {})
    check("m.room.third_party_invite keyed by the IS token", tpi.get("state_key") == carol_token, tpi)
    content = tpi.get("content", {})
    check("third_party_invite content: display_name and public_keys",
          content.get("display_name") == "C***" and content.get("public_keys", [{}])[0].get("public_key")
          == public_b64(carol_key) and content["public_keys"][0].get("key_validity_url", "").startswith(
              f"https://{ids.name}/"), content)
    check("carol is not a member yet", membership("@carol:localhost") == 404, member("@carol:localhost"))

    # 3. Carol binds her address: the IS tells hearth, signed.
    status, answer, signed = onbind("@carol:localhost", "carol@example.org", carol_token, carol_key)
    check("onbind for carol -> 200", status == 200, (status, answer))
    event = next((e for e in state() if e["type"] == "m.room.member" and e["state_key"] == "@carol:localhost"), {})
    invited = event.get("content", {})
    check("carol's membership is invite, sent by alice", invited.get("membership") == "invite"
          and event.get("sender") == "@alice:localhost", event)
    check("carol's invite carries the display name and the signed object",
          invited.get("third_party_invite", {}).get("display_name") == "C***"
          and invited.get("third_party_invite", {}).get("signed") == signed, invited)
    check("IS asked whether the key is valid", any(c["query"].get("public_key") == [public_b64(carol_key)]
                                                   for c in calls("pubkey/isvalid")), calls("pubkey/isvalid"))
    api("carol joins", "POST", f"/join/{room}", {}, tokens["carol"])
    check("carol's membership is join", membership("@carol:localhost") == "join", member("@carol:localhost"))

    # 4. A forged signature: a key that is not in the invite.
    erin_token, erin_key = invite_by_email("invite erin@example.org (unbound)", "alice", "erin@example.org")
    status, answer, _ = onbind("@erin:localhost", "erin@example.org", erin_token, ed25519.Ed25519PrivateKey.generate())
    check("onbind signed by another key refused", not 200 <= status < 300, (status, answer))
    check("erin not invited after the forged onbind", membership("@erin:localhost") == 404, member("@erin:localhost"))
    status, answer, _ = onbind("@erin:localhost", "erin@example.org", erin_token, erin_key)
    check("the same onbind signed by the invite's key -> erin invited",
          status == 200 and membership("@erin:localhost") == "invite", (status, answer, member("@erin:localhost")))

    # 5. A revoked key: the IS no longer vouches for it.
    frank_token, frank_key = invite_by_email("invite frank@example.org (unbound)", "alice", "frank@example.org")
    with ids.lock:
        ids.revoked.add(public_b64(frank_key))
    status, answer, _ = onbind("@frank:localhost", "frank@example.org", frank_token, frank_key)
    check("onbind with a revoked key refused", not 200 <= status < 300, (status, answer))
    check("frank not invited with a revoked key", membership("@frank:localhost") == 404, member("@frank:localhost"))
    check("IS asked whether frank's key is valid", any(c["query"].get("public_key") == [public_b64(frank_key)]
                                                       for c in calls("pubkey/isvalid")), calls("pubkey/isvalid"))
    with ids.lock:
        ids.revoked.discard(public_b64(frank_key))
    status, answer, _ = onbind("@frank:localhost", "frank@example.org", frank_token, frank_key)
    check("the same onbind once the key is valid again -> frank invited",
          status == 200 and membership("@frank:localhost") == "invite", (status, answer, member("@frank:localhost")))

    # 6. A join with third_party_signed.
    dave_token, dave_key = invite_by_email("invite dave@example.org (unbound)", "alice", "dave@example.org")
    signed = sign({"sender": "@alice:localhost", "mxid": "@dave:localhost", "token": dave_token}, dave_key, ids.name)
    forged = sign(dict(signed), ed25519.Ed25519PrivateKey.generate(), ids.name)
    api("dave's join with a forged third_party_signed refused", "POST", f"/join/{room}",
        {"third_party_signed": forged}, tokens["dave"], expect=403)
    api("dave joins with third_party_signed", "POST", f"/join/{room}", {"third_party_signed": signed}, tokens["dave"])
    check("dave's membership is join", membership("@dave:localhost") == "join", member("@dave:localhost"))
    status, history = http("GET", f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100", token=tokens["alice"])
    invites = [e for e in history.get("chunk", []) if e.get("state_key") == "@dave:localhost"
               and e["content"].get("membership") == "invite"] if status == 200 else []
    check("before it, an invite of dave from alice with the signed object", invites and invites[0]["sender"]
          == "@alice:localhost" and invites[0]["content"].get("third_party_invite", {}).get("signed") == signed,
          (status, invites))

    # 7. Bad input changes nothing.
    before, stores_before = [e["event_id"] for e in state()], len(calls("store-invite"))
    invite_by_email("id_server that is no server name -> 400", "alice", "x@example.org", 400, "not a server/name")
    invite_by_email("invite by a user not in the room -> 403", "mallory", "y@example.org", 403)
    check("no new room state after bad invites", [e["event_id"] for e in state()] == before,
          [e for e in state() if e["event_id"] not in before])
    check("no invite stored at the IS for bad invites", len(calls("store-invite")) == stores_before,
          calls("store-invite")[stores_before:])


def main():
    binary = sys.argv[1]
    started = time.monotonic()
    proc, ids, output = None, None, []
    with tempfile.TemporaryDirectory() as workdir:
        try:
            ids = start_identity_server(workdir)
            proc, base, output = start_identity_hearth(binary, workdir)
            scenario(base, ids)
        finally:
            if proc:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if ids:
                ids.shutdown()
                ids.server_close()
            if not all(ok for _, ok in CHECKS) or sys.exc_info()[0]:
                print("--- the end of hearth's output ---\n" + "".join(output)[-4000:])
    passed = sum(1 for _, ok in CHECKS if ok)
    failed = len(CHECKS) - passed
    print(f"({time.monotonic() - started:.1f} s)")
    print(f"3pid: {passed} passed, {failed} failed")
    sys.exit(1 if failed or not CHECKS else 0)


if __name__ == "__main__":
    main()
