"""Push notifications end to end: hearth -> push gateway -> WebPush push service.

Usage: push_gateway.py PATH/TO/hearth
Plays a browser: a WebPush subscription (a P-256 key and an auth secret)
served by a local "push service" that decrypts what it receives.
The push gateway is Sygnal (a webpush app) when a `sygnal` command is found
($SYGNAL, or beside this Python). Sygnal is not on PyPI: otherwise a stand-in
built here answers the Push Gateway API as Sygnal does and sends the payload
Sygnal's webpush pushkin sends, through pywebpush as Sygnal does. Then a real
`hearth`: bad pushers refused, a pusher set and listed, a message pushed and
decrypted, and a gone subscription (410) makes the gateway reject the
pushkey, so hearth deletes the pusher.
The last line is the summary: "push: N passed, N failed".
"""

import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
import pywebpush
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from py_vapid import Vapid

from harness import finish, http, print_log_tails, start_hearth, stop, wait_until

APP_ID = "org.hearth.test.web"
CONTACT = "push-test@hearth.invalid"
CHECKS = []


def check(name, condition, detail=""):
    CHECKS.append((name, bool(condition)))
    print(("ok   " if condition else "FAIL ") + name + (f": {detail}" if detail and not condition else ""))


def b64u(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64u(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def point(public_key):
    return public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def log_message(self, *args):
        pass


def serve(handler_class, **attributes):
    """A threaded HTTP server on an ephemeral loopback port; the attributes go on the server."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    server.lock, server.received = threading.Lock(), []
    for name, value in attributes.items():
        setattr(server, name, value)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class PushService(Handler):
    """The browser vendor's push service: records and decrypts each POST; 201, or 410 once `gone`."""

    def do_POST(self):
        record = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": self.body()}
        try:
            plain = http_ece.decrypt(record["body"], private_key=self.server.key, auth_secret=self.server.auth,
                                     version="aes128gcm")
            record["payload"] = json.loads(plain)
        except Exception as e:  # kept for the checks to report
            record["error"] = repr(e)
        with self.server.lock:
            self.server.received.append(record)
        self.reply(410 if self.server.gone else 201)


def notify_error(body):
    """Why Sygnal would refuse this Push Gateway API body with 400, or None."""
    def typed(obj, key, kind, required=False):
        return isinstance(obj[key], kind) if key in obj else not required

    n = body.get("notification") if isinstance(body, dict) else None
    if not isinstance(n, dict) or not isinstance(n.get("devices"), list) or not n["devices"]:
        return "expected an object in 'notification' with a non-empty list in 'devices'"
    counts = n.get("counts", {})
    if not isinstance(counts, dict) or not typed(counts, "unread", int) or not typed(counts, "missed_calls", int):
        return "counts must be an object of integers"
    for d in n["devices"]:
        if not isinstance(d, dict) or not typed(d, "app_id", str, True) or not typed(d, "pushkey", str, True):
            return "each device needs string app_id and pushkey"
        if not typed(d, "pushkey_ts", int) or not typed(d, "data", dict) or not typed(d, "tweaks", dict):
            return "pushkey_ts must be an integer, data and tweaks objects"
        if not typed(d.get("tweaks", {}), "sound", str):
            return "the sound tweak must be a string"
    return None


def webpush_payload(n, data):
    """What Sygnal's webpush pushkin encrypts: the notification's set fields, counts flattened."""
    payload = dict(data["default_payload"]) if isinstance(data.get("default_payload"), dict) else {}
    for field in ("room_id", "room_name", "room_alias", "membership", "event_id", "sender",
                  "sender_display_name", "user_is_target", "type"):
        if n.get(field):
            payload[field] = n[field]
    payload.update({k: v for k, v in n.get("counts", {}).items() if k in ("unread", "missed_calls")})
    if isinstance(n.get("content"), dict):
        payload["content"] = {k: v for k, v in n["content"].items() if k != "formatted_body"}
    return payload


class StandInGateway(Handler):
    """Push Gateway API v1 with one webpush app, answering as Sygnal does; records each body."""

    def do_GET(self):
        self.reply(200 if self.path == "/health" else 404)

    def do_POST(self):
        try:
            body = json.loads(self.body())
        except ValueError:
            body = None
        error = "unknown path" if self.path != "/_matrix/push/v1/notify" else notify_error(body)
        with self.server.lock:
            self.server.received.append({"body": body, "error": error})
        if error:
            return self.reply(400, error.encode())
        try:
            n = body["notification"]
            rejected = [d["pushkey"] for d in n["devices"] if self.deliver(n, d)]
        except Exception as e:  # the push service unreachable: an error, and no pushkey rejected
            return self.reply(500, repr(e).encode())
        self.reply(200, json.dumps({"rejected": rejected}).encode())

    def deliver(self, n, device):
        """Sends one WebPush message; whether the pushkey is to be rejected."""
        data = device.get("data") or {}
        if device["app_id"] != APP_ID or not isinstance(data.get("endpoint"), str) or not isinstance(data.get("auth"), str):
            return True
        subscription = {"endpoint": data["endpoint"], "keys": {"p256dh": device["pushkey"], "auth": data["auth"]}}
        try:
            pywebpush.webpush(subscription, json.dumps(webpush_payload(n, data)), ttl=900,
                              vapid_private_key=self.server.vapid, vapid_claims={"sub": f"mailto:{CONTACT}"},
                              requests_session=self.server.session)
        except pywebpush.WebPushException as e:
            return e.response is not None and e.response.status_code in (404, 410)
        return False


def start_sygnal(command, workdir, vapid_file, push_netloc):
    """Runs Sygnal on a free loopback port: (process, base URL, log file)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging = {"version": 1, "disable_existing_loggers": False, "root": {"level": "INFO", "handlers": ["err"]},
               "handlers": {"err": {"class": "logging.StreamHandler"}}}
    config = {"http": {"port": port, "bind_addresses": ["127.0.0.1"]}, "log": {"setup": logging},
              "apps": {APP_ID: {"type": "webpush", "vapid_private_key": vapid_file,
                                "vapid_contact_email": CONTACT, "allowed_endpoints": [push_netloc]}}}
    path, log = os.path.join(workdir, "sygnal.yaml"), os.path.join(workdir, "sygnal.log")
    with open(path, "w") as f:
        json.dump(config, f)  # JSON is YAML
    env = {k: v for k, v in os.environ.items() if k.upper() not in ("HTTPS_PROXY", "HTTP_PROXY")}
    with open(log, "w") as out:
        proc = subprocess.Popen([command], env={**env, "SYGNAL_CONF": path}, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            return http("GET", base + "/health")[0] == 200
        except OSError:
            return proc.poll() is not None  # no use waiting once it has exited

    if not wait_until(healthy, 60) or proc.poll() is not None:
        proc.kill()
        raise SystemExit("sygnal did not start:\n" + open(log).read()[-3000:])
    return proc, base, log


def start_gateway_hearth(binary, workdir):
    """Hearth allowed to reach the loopback gateway: (process, URL, output lines)."""
    return start_hearth(binary, workdir, "[outbound]\nallow_private_addresses = true\n")


def vapid_ok(header, vapid_public, audience):
    """`vapid t=JWT,k=KEY`: our key, our audience and contact, and a valid ES256 signature."""
    m = re.fullmatch(r"vapid t=([\w-]+)\.([\w-]+)\.([\w-]+),\s*k=([\w-]+)", header or "")
    if not m or unb64u(m.group(4)) != point(vapid_public):
        return False
    signature = unb64u(m.group(3))
    try:
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        vapid_public.verify(der, f"{m.group(1)}.{m.group(2)}".encode(), ec.ECDSA(hashes.SHA256()))
    except Exception:
        return False
    claims = json.loads(unb64u(m.group(2)))
    return claims.get("aud") == audience and claims.get("sub") == f"mailto:{CONTACT}"


def scenario(base, push, push_url, gateway_url, standin, vapid_public):
    def api(name, method, path, body=None, token=None, expect=200):
        status, answer = http(method, base + "/_matrix/client/v3" + path, body, token)
        check(name, status == expect, (status, answer))
        return answer if isinstance(answer, dict) else {}

    def received(event_id):
        with push.lock:
            return next((r for r in push.received if r.get("payload", {}).get("event_id") == event_id), None)

    pushkey, auth = b64u(point(push.key.public_key())), b64u(push.auth)
    endpoint, notify_url = push_url + "/push/abc", gateway_url + "/_matrix/push/v1/notify"

    # The gateway alone, called as hearth will call it.
    device = {"app_id": APP_ID, "pushkey": pushkey, "pushkey_ts": int(time.time()),
              "data": {"endpoint": endpoint, "auth": auth}, "tweaks": {"sound": "default"}}
    direct = {"notification": {"event_id": "$direct", "room_id": "!r:localhost", "type": "m.room.message",
                               "sender": "@x:localhost", "prio": "high", "counts": {"unread": 3}, "devices": [device]}}
    status, answer = http("POST", notify_url, direct)
    got = wait_until(lambda: received("$direct"), 20)
    check("gateway delivers a notification sent to it directly",
          status == 200 and answer == {"rejected": []} and got and got["payload"].get("unread") == 3, (status, answer, got))

    password = {"password": "s3cret-pass", "auth": {"type": "m.login.dummy"}}
    alice = api("register alice", "POST", "/register", {"username": "alice", **password}).get("access_token")
    bob = api("register bob", "POST", "/register", {"username": "bob", **password}).get("access_token")

    good = {"kind": "http", "app_id": APP_ID, "pushkey": pushkey, "app_display_name": "Test",
            "device_display_name": "Browser", "lang": "en", "data": {"url": notify_url, "endpoint": endpoint, "auth": auth}}
    bad = {
        "http pusher without data.url": {**good, "data": {"endpoint": endpoint, "auth": auth}},
        "data.url not http(s)": {**good, "data": {**good["data"], "url": "ftp://127.0.0.1/notify"}},
        "email pusher": {**good, "kind": "email", "app_id": "m.email", "pushkey": "alice@example.org"},
        "missing app_id": {k: v for k, v in good.items() if k != "app_id"},
    }
    for what, body in bad.items():
        api(f"refused: {what}", "POST", "/pushers/set", body, alice, expect=400)
    listed = api("list pushers", "GET", "/pushers", token=alice)
    check("refused pushers left nothing", listed == {"pushers": []}, listed)

    room_id = api("create room", "POST", "/createRoom", {"preset": "public_chat", "name": "Push room"}, alice).get("room_id")
    api("bob joins", "POST", f"/join/{room_id}", {}, bob)
    api("set http pusher", "POST", "/pushers/set", good, alice)
    listed = api("list pushers again", "GET", "/pushers", token=alice).get("pushers", [])
    check("pusher listed with its fields", len(listed) == 1 and all(listed[0].get(k) == v for k, v in good.items()), listed)

    message = {"msgtype": "m.text", "body": "ping"}
    event_id = api("bob sends a message", "PUT", f"/rooms/{room_id}/send/m.room.message/t1", message, bob).get("event_id")
    got = wait_until(lambda: received(event_id), 20)
    check("push service receives the message's push", got, [r.get("payload") or r.get("error") for r in push.received])
    got = got or {"headers": {}, "payload": {}}
    headers, payload = got["headers"], got["payload"]
    check("push sent to the subscription's endpoint", got.get("path") == "/push/abc", got.get("path"))
    check("content-encoding aes128gcm", headers.get("content-encoding") == "aes128gcm", headers)
    check("VAPID authorization (our key, audience, contact, signature)",
          vapid_ok(headers.get("authorization"), vapid_public, push_url), headers.get("authorization"))
    check("payload names room, event, sender and type", payload.get("room_id") == room_id and payload.get("event_id") == event_id
          and payload.get("sender") == "@bob:localhost" and payload.get("type") == "m.room.message", payload)
    check("payload unread count is 1", payload.get("unread") == 1, payload)
    check("payload carries the content", payload.get("content", {}).get("body") == "ping", payload)

    if standin:  # what hearth itself sent, which only the stand-in can show
        with standin.lock:
            notes = [r for r in standin.received if (r["body"] or {}).get("notification", {}).get("event_id") == event_id]
        check("gateway accepted hearth's notification", notes and not notes[0]["error"], notes)
        n = notes[0]["body"]["notification"] if notes else {}
        d = (n.get("devices") or [{}])[0]
        check("notification fields", n.get("room_id") == room_id and n.get("sender") == "@bob:localhost"
              and n.get("counts", {}).get("unread") == 1 and n.get("prio") in ("high", "low"), n)
        check("device: app_id, pushkey, pushkey_ts in seconds", d.get("app_id") == APP_ID and d.get("pushkey") == pushkey
              and isinstance(d.get("pushkey_ts"), int) and abs(d["pushkey_ts"] - time.time()) < 600, d)
        check("device data is the pusher's without url", d.get("data") == {"endpoint": endpoint, "auth": auth}, d)

    push.gone = True
    status, answer = http("POST", notify_url, direct)
    check("gateway rejects a gone subscription's pushkey", status == 200 and answer == {"rejected": [pushkey]}, (status, answer))
    message = {"msgtype": "m.text", "body": "pong"}
    second = api("bob sends another message", "PUT", f"/rooms/{room_id}/send/m.room.message/t2", message, bob).get("event_id")
    again = wait_until(lambda: received(second), 20) or {}
    check("push service is asked again (and answers 410)", again)
    # Counted by room, as Synapse does by default: still the one room with unread notifications.
    check("its unread count is still 1 (one room unread)", again.get("payload", {}).get("unread") == 1, again.get("payload"))
    gone = wait_until(lambda: http("GET", base + "/_matrix/client/v3/pushers", token=alice) == (200, {"pushers": []}), 20, 0.25)
    check("rejected pusher deleted", gone, http("GET", base + "/_matrix/client/v3/pushers", token=alice))


def main():
    binary = sys.argv[1]
    vapid = Vapid()
    vapid.generate_keys()
    push, push_url = serve(PushService, gone=False, key=ec.generate_private_key(ec.SECP256R1()), auth=os.urandom(16))
    beside = os.path.join(os.path.dirname(sys.executable), "sygnal")
    sygnal = os.environ.get("SYGNAL") or (beside if os.path.exists(beside) else None)
    procs, standin, logs = [], None, {}
    with tempfile.TemporaryDirectory() as workdir:
        try:
            vapid_file = os.path.join(workdir, "vapid.pem")
            vapid.save_key(vapid_file)
            if sygnal:
                proc, gateway_url, logs["sygnal"] = start_sygnal(sygnal, workdir, vapid_file, push_url.split("//")[1])
                procs.append(proc)
                print(f"gateway: Sygnal ({sygnal})")
            else:
                session = requests.Session()
                session.trust_env = False  # no proxy for the loopback push service
                standin, gateway_url = serve(StandInGateway, session=session, vapid=Vapid.from_file(vapid_file))
                print("gateway: stand-in (no sygnal command found)")
            proc, base, logs["hearth"] = start_gateway_hearth(binary, workdir)
            procs.append(proc)
            scenario(base, push, push_url, gateway_url, standin, vapid.public_key)
        finally:
            stop(procs)
            for server in (push, standin):
                if server:
                    server.shutdown()
            if not all(ok for _, ok in CHECKS) or sys.exc_info()[0]:
                print_log_tails(logs)
    finish("push", CHECKS)


if __name__ == "__main__":
    main()
