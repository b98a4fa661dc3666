"""synadm, the Synapse admin command-line tool, against a real `hearth`.

Usage: synadm_tool.py PATH/TO/hearth
Starts hearth on an ephemeral port (registration shared secret and server
notices on), makes an admin "root" by shared-secret registration, alice and
bob by ordinary registration, a room "Doomed room" (alias #doomed) where
alice reports bob's message, and an upload of alice's. Then runs the real `synadm` (the one
installed next to this Python, PyPI synadm==0.49.2) as a subprocess with its
own configuration file and JSON output, and checks the exit status and the
parsed output of each command, and, where a command changes something,
checks the change over the admin API too:
version; user list, search, details, whois, membership (by default synadm
names rooms by their aliases, asked with the admin's token over the client
API, as Synapse lets server admins), media, login as a user; creating carol with `user modify`, her login with `matrix login` (r0)
and a password reset; deactivating bob (answering its confirmation prompt);
registration tokens new, list, details, update, delete; rooms list, search
(by name and by room ID), power levels, alias resolution both ways, details,
members, state; event reports through `synadm raw`; a server
notice sent by regex; deleting "Doomed room" (delete API v2) and waiting on
`room delete-status` until it is complete.
synadm's own home-server-name discovery (the keys API) is used throughout:
commands are given bare localparts.
The last line is the summary: "synadm: N passed, N failed".
"""

import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse

import requests

from harness import finish, print_log_tails, start_hearth, stop, wait_until

SHARED_SECRET = "synadm-shared-secret"
EXTRA_CONFIG = f'shared_secret = "{SHARED_SECRET}"\n[server_notices]\nsystem_mxid_localpart = "notices"\n'
CHECKS = []
SESSION = requests.Session()
SESSION.trust_env = False  # no proxy for loopback


def check(name, condition, detail=""):
    CHECKS.append((name, bool(condition)))
    print(("ok   " if condition else "FAIL ") + name + (f": {detail}" if detail and not condition else ""))
    return bool(condition)


def q(value):
    return urllib.parse.quote(value, safe="")


def api(method, base, path, body=None, token=None, **kwargs):
    """One request: (status, parsed JSON body or text)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = SESSION.request(method, base + path, json=body, headers=headers, timeout=30, **kwargs)
    try:
        return resp.status_code, resp.json()
    except ValueError:
        return resp.status_code, resp.text


def seed_call(name, method, base, path, body=None, token=None, **kwargs):
    """A setup request that must succeed; the scenario cannot go on without it."""
    status, answer = api(method, base, path, body, token, **kwargs)
    if status != 200 or not isinstance(answer, dict):
        check(f"setup: {name}", False, (status, answer))
        raise RuntimeError(f"setup step failed: {name}")
    return answer


def shared_secret_register(base, username, password, admin):
    nonce = seed_call("shared-secret nonce", "GET", base, "/_synapse/admin/v1/register")["nonce"]
    message = "\0".join([nonce, username, password, "admin" if admin else "notadmin"]).encode()
    mac = hmac.new(SHARED_SECRET.encode(), message, hashlib.sha1).hexdigest()
    body = {"nonce": nonce, "username": username, "password": password, "admin": admin, "mac": mac}
    return seed_call(f"shared-secret registration of {username}", "POST", base, "/_synapse/admin/v1/register", body)


def json_docs(text):
    """The JSON documents synadm printed, in order, from text that also holds prose and prompts."""
    decoder, docs, position = json.JSONDecoder(), [], 0
    while True:
        starts = [i for i in (text.find("{", position), text.find("[", position)) if i >= 0]
        if not starts:
            return docs
        start = min(starts)
        try:
            doc, end = decoder.raw_decode(text, start)
        except ValueError:
            position = start + 1
            continue
        docs.append(doc)
        position = end


class Synadm:
    """Runs the synadm command installed next to this Python with its own config and HOME."""

    def __init__(self, workdir, base, token):
        self.exe = os.path.join(os.path.dirname(sys.executable), "synadm")
        if not os.path.exists(self.exe):
            raise SystemExit(f"no synadm at {self.exe}: pip install -r requirements.txt into this venv")
        home = os.path.join(workdir, "home")
        os.makedirs(home, exist_ok=True)
        self.config = os.path.join(workdir, "synadm.yaml")
        # The keys synadm's configurator writes (synadm/cli/__init__.py); every
        # one must be set or synadm asks for it. `homeserver: auto-retrieval`
        # makes it learn the server name from /_matrix/key/v2/server.
        with open(self.config, "w") as f:
            f.write("\n".join([
                "user: root",
                f"token: {token}",
                "protocol: http",
                f"base_url: {base}",
                "admin_path: /_synapse/admin",
                "matrix_path: /_matrix",
                "format: json",
                "timeout: 30",
                "server_discovery: well-known",
                "homeserver: auto-retrieval",
                "ssl_verify: false",
                "",
            ]))
        self.env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self.env.update({"HOME": home, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
                         "PYTHONWARNINGS": "ignore", "COLUMNS": "200"})

    def run(self, args, batch=True, stdin=""):
        """(exit status, JSON documents printed, stdout, stderr)."""
        command = [self.exe, "-c", self.config, "-o", "json"] + (["--batch"] if batch else []) + list(args)
        try:
            done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120, env=self.env)
        except subprocess.TimeoutExpired as e:
            text = lambda b: (b.decode(errors="replace") if isinstance(b, bytes) else b) or ""
            return None, [], text(e.stdout), f"timed out after 120 s: {text(e.stderr)}"
        docs = json_docs(done.stdout)
        if not docs:  # a lone scalar, such as the room ID `room resolve` prints
            try:
                docs = [json.loads(done.stdout)]
            except ValueError:
                pass
        return done.returncode, docs, done.stdout, done.stderr


def log_problems(stderr, allowed=()):
    """synadm's WARNING/ERROR/CRITICAL log lines (a non-2xx answer is logged as
    'WARNING Synapse returned status code N'), less the expected ones."""
    return [line for line in stderr.splitlines()
            if line.split(" ", 1)[0] in ("WARNING", "ERROR", "CRITICAL") and not any(a in line for a in allowed)]


def trim(text, limit=1500):
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"


def run_check(tool, name, args, predicate, batch=True, stdin="", allowed_warnings=(), want_json=True):
    """Runs synadm; passes when it exits 0, logged no unexpected warning, printed
    JSON (when `want_json`) without an errcode, and `predicate(last document)`
    holds (it gets the stdout when there is no JSON). Returns the last document."""
    rc, docs, out, err = tool.run(args, batch, stdin)
    last = docs[-1] if docs else None
    problems = []
    if rc != 0:
        problems.append(f"exit status {rc}")
    bad_logs = log_problems(err, allowed_warnings)
    if bad_logs:
        problems.append(f"synadm logged {bad_logs}")
    if want_json and last is None:
        problems.append("no JSON printed")
    if isinstance(last, dict) and "errcode" in last:
        problems.append(f"the server answered an error {last}")
    if not problems:
        try:
            verdict = predicate(last if want_json else out)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            verdict = f"unexpected output shape ({type(e).__name__}: {e})"
        if verdict is not True:
            problems.append(f"unexpected content{'' if verdict in (False, None) else f' ({verdict})'}")
    detail = ""
    if problems:
        detail = (f"{'; '.join(problems)}\n    command: synadm {' '.join(args)}\n    stdout: {trim(out)}"
                  f"\n    stderr: {trim(err)}")
    check(f"synadm {name}", not problems, detail)
    return last


def names(users_doc):
    return {u["name"] for u in users_doc["users"]}


def seed(base):
    """The admin root, alice and bob, "Doomed room" with bob's reported message, and an upload of alice's."""
    root = shared_secret_register(base, "root", "root-pass-1", admin=True)
    server = root["home_server"]
    tokens = {"root": root["access_token"]}
    for name in ("alice", "bob"):
        body = {"username": name, "password": f"{name}-pass-1", "auth": {"type": "m.login.dummy"}}
        tokens[name] = seed_call(f"register {name}", "POST", base, "/_matrix/client/v3/register", body)["access_token"]
    room = seed_call("alice creates Doomed room", "POST", base, "/_matrix/client/v3/createRoom",
                     {"preset": "public_chat", "name": "Doomed room", "room_alias_name": "doomed"},
                     tokens["alice"])["room_id"]
    seed_call("bob joins", "POST", base, f"/_matrix/client/v3/join/{q(room)}", {}, tokens["bob"])
    spam = seed_call("bob's message", "PUT", base, f"/_matrix/client/v3/rooms/{q(room)}/send/m.room.message/t1",
                     {"msgtype": "m.text", "body": "buy cheap pills"}, tokens["bob"])["event_id"]
    seed_call("alice reports it", "POST", base, f"/_matrix/client/v3/rooms/{q(room)}/report/{q(spam)}",
              {"reason": "spam", "score": -100}, tokens["alice"])
    upload = SESSION.post(base + "/_matrix/media/v3/upload", params={"filename": "notes.txt"}, data=b"alice's notes\n",
                          headers={"Authorization": f"Bearer {tokens['alice']}", "Content-Type": "text/plain"},
                          timeout=30)
    if upload.status_code != 200:
        check("setup: alice uploads a file", False, (upload.status_code, upload.text))
        raise RuntimeError("setup step failed: upload")
    media_id = upload.json()["content_uri"].rsplit("/", 1)[1]
    return server, tokens, room, spam, media_id


def scenario(base, workdir):
    server, tokens, room, spam, media_id = seed(base)
    root = tokens["root"]
    alice, bob, carol = (f"@{n}:{server}" for n in ("alice", "bob", "carol"))
    alias = f"#doomed:{server}"
    tool = Synadm(workdir, base, root)

    # Reading: the server, users, one user.
    run_check(tool, "version", ["version"],
              lambda d: isinstance(d.get("server_version"), str) and "Hearth" in d["server_version"] or d)
    run_check(tool, "user list shows root, alice and bob with the total",
              ["user", "list"],
              lambda d: names(d) == {f"@root:{server}", alice, bob} and d["total"] == 3 and "next_token" not in d)
    run_check(tool, "user list --name ali finds alice alone", ["user", "list", "--name", "ali"],
              lambda d: names(d) == {alice} and d["total"] == 1)
    run_check(tool, "user list --limit 1 pages with next_token", ["user", "list", "--limit", "1"],
              lambda d: len(d["users"]) == 1 and d["total"] == 3 and d.get("next_token") == "1")
    run_check(tool, "user details alice (bare localpart: name found by the keys API)", ["user", "details", "alice"],
              lambda d: d["name"] == alice and d["admin"] is False and d["deactivated"] is False
              and d["is_guest"] is False)
    run_check(tool, "user whois alice", ["user", "whois", "alice"],
              lambda d: d["user_id"] == alice and isinstance(d["devices"], dict) and len(d["devices"]) >= 1)
    # By default synadm shows each room by its aliases, looked up with the
    # admin's token (GET /_matrix/client/r0/rooms/{roomId}/aliases) in rooms
    # the admin is not in.
    run_check(tool, "user membership alice (rooms shown by alias)", ["user", "membership", "alice"],
              lambda d: alias in d["joined_rooms"] and room not in d["joined_rooms"]
              and d["total"] == len(d["joined_rooms"]))
    run_check(tool, "user membership alice --ids", ["user", "membership", "alice", "--ids"],
              lambda d: room in d["joined_rooms"] and d["total"] == len(d["joined_rooms"]))
    run_check(tool, "user media alice lists her upload", ["user", "media", "alice"],
              lambda d: [m["media_id"] for m in d["media"]] == [media_id] and d["total"] == 1
              and d["media"][0]["upload_name"] == "notes.txt")
    run_check(tool, "media list --user-id alice", ["media", "list", "--user-id", "alice"],
              lambda d: [m["media_id"] for m in d["media"]] == [media_id])

    puppet = run_check(tool, "user login alice (a token to act as her)", ["user", "login", "alice"],
                       lambda d: isinstance(d.get("access_token"), str))
    if isinstance(puppet, dict) and puppet.get("access_token"):
        status, who = api("GET", base, "/_matrix/client/v3/account/whoami", token=puppet["access_token"])
        check("the login token acts as alice", status == 200 and who.get("user_id") == alice, (status, who))

    # Creating carol: synadm first shows her (absent) details, a 404 it logs.
    run_check(tool, "user modify carol creates her", ["user", "modify", "carol", "-P", "carol-pass-1", "-n", "Carol"],
              lambda d: d["name"] == carol and d["displayname"] == "Carol" and d["deactivated"] is False,
              allowed_warnings=("returned status code 404",))
    status, got = api("GET", base, f"/_synapse/admin/v2/users/{q(carol)}", token=root)
    check("carol exists over the admin API", status == 200 and got.get("displayname") == "Carol"
          and got.get("deactivated") is False and got.get("admin") is False, (status, got))
    login = run_check(tool, "matrix login carol (r0 login with her new password)",
                      ["matrix", "login", "carol", "-p", "carol-pass-1"],
                      lambda d: d["user_id"] == carol and isinstance(d["access_token"], str))
    run_check(tool, "user password carol --no-logout", ["user", "password", "carol", "-p", "carol-pass-2", "--no-logout"],
              lambda d: d == {})
    if isinstance(login, dict) and login.get("access_token"):
        status, who = api("GET", base, "/_matrix/client/v3/account/whoami", token=login["access_token"])
        check("carol's session outlived the reset (--no-logout)", status == 200 and who.get("user_id") == carol,
              (status, who))
    status, answer = api("POST", base, "/_matrix/client/v3/login",
                         {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "carol"},
                          "password": "carol-pass-2"})
    check("carol logs in with the reset password", status == 200 and answer.get("user_id") == carol, (status, answer))

    # Registration tokens.
    run_check(tool, "regtok new", ["regtok", "new", "--token", "synadm-token", "--uses-allowed", "3"],
              lambda d: d["token"] == "synadm-token" and d["uses_allowed"] == 3 and d["pending"] == 0
              and d["completed"] == 0 and d["expiry_time"] is None)
    run_check(tool, "regtok new (server-generated, length 12)", ["regtok", "new", "--length", "12"],
              lambda d: isinstance(d["token"], str) and len(d["token"]) == 12 and d["uses_allowed"] is None)
    run_check(tool, "regtok list shows it", ["regtok", "list"],
              lambda d: "synadm-token" in [t["token"] for t in d["registration_tokens"]]
              and len(d["registration_tokens"]) == 2)
    run_check(tool, "regtok update --uses-allowed 5", ["regtok", "update", "synadm-token", "--uses-allowed", "5"],
              lambda d: d["token"] == "synadm-token" and d["uses_allowed"] == 5)
    run_check(tool, "regtok details", ["regtok", "details", "synadm-token"],
              lambda d: d["token"] == "synadm-token" and d["uses_allowed"] == 5)
    run_check(tool, "regtok delete", ["regtok", "delete", "synadm-token"],
              lambda out: "Registration token successfully deleted." in out or out, want_json=False)
    run_check(tool, "regtok list no longer shows it", ["regtok", "list"],
              lambda d: "synadm-token" not in [t["token"] for t in d["registration_tokens"]])
    status, got = api("GET", base, "/_synapse/admin/v1/registration_tokens/synadm-token", token=root)
    check("the deleted token is gone over the admin API", status == 404, (status, got))

    # Rooms.
    run_check(tool, "room list shows Doomed room", ["room", "list"],
              lambda d: room in [r["room_id"] for r in d["rooms"] if r["name"] == "Doomed room"]
              and d["total_rooms"] == len(d["rooms"]))
    run_check(tool, "room search Doomed", ["room", "search", "Doomed"],
              lambda d: [r["room_id"] for r in d["rooms"]] == [room] and d["total_rooms"] == 1)
    # synadm's room-ID lookups go through the room list's search_term,
    # which Synapse matches against the whole room ID too.
    run_check(tool, "room search by the room ID", ["room", "search", room],
              lambda d: [r["room_id"] for r in d["rooms"]] == [room] and d["total_rooms"] == 1)
    run_check(tool, "room power-levels --room-id", ["room", "power-levels", "--room-id", room],
              lambda d: [r["room_id"] for r in d["rooms"]] == [room] and d["rooms_w_power_levels_curr_batch"] == 1
              and isinstance(d["rooms"][0]["power_levels"], dict))
    run_check(tool, "room resolve the alias", ["room", "resolve", alias], lambda d: d == room)
    run_check(tool, "room resolve --reverse (the room's aliases, asked by the admin)",
              ["room", "resolve", "--reverse", room], lambda d: d == {"aliases": [alias]})
    run_check(tool, "room details", ["room", "details", room],
              lambda d: d["room_id"] == room and d["name"] == "Doomed room" and d["joined_members"] == 2
              and d["creator"] == alice and d["join_rules"] == "public" and d["canonical_alias"] == alias)
    run_check(tool, "room members", ["room", "members", room],
              lambda d: sorted(d["members"]) == sorted([alice, bob]) and d["total"] == 2)
    run_check(tool, "room state holds the name", ["room", "state", room],
              lambda d: any(e["type"] == "m.room.name" and e["content"].get("name") == "Doomed room"
                            for e in d["state"]))

    # Event reports: synadm has no command of its own for them; its `raw`
    # command is how its users reach that admin API.
    reports = run_check(tool, "raw v1/event_reports lists alice's report", ["raw", "v1/event_reports"],
                        lambda d: d["total"] == 1 and d["event_reports"][0]["event_id"] == spam
                        and d["event_reports"][0]["reason"] == "spam" and d["event_reports"][0]["user_id"] == alice)
    if isinstance(reports, dict) and reports.get("event_reports"):
        report_id = reports["event_reports"][0]["id"]
        run_check(tool, "raw v1/event_reports/<id> shows the reported event", ["raw", f"v1/event_reports/{report_id}"],
                  lambda d: d["event_json"]["content"]["body"] == "buy cheap pills" and d["sender"] == bob
                  and d["room_id"] == room and d["score"] == -100)

    # Server notices, by regex over the user list synadm pages through.
    run_check(tool, "notice send --regex to alice and carol",
              ["notice", "send", "--regex", f"@(alice|carol):{server}", "Maintenance at noon"],
              lambda d: isinstance(d, list) and len(d) == 2 and all(str(o.get("event_id", "")).startswith("$") for o in d))

    # Deactivating bob, answering synadm's prompt (no --batch).
    run_check(tool, "user deactivate bob (prompt answered y)", ["user", "deactivate", "bob"],
              lambda d: d == {"id_server_unbind_result": "success"}, batch=False, stdin="y\n")
    status, got = api("GET", base, f"/_synapse/admin/v2/users/{q(bob)}", token=root)
    check("bob is deactivated over the admin API", status == 200 and got.get("deactivated") is True, (status, got))
    run_check(tool, "user list leaves bob out", ["user", "list"], lambda d: bob not in names(d) and alice in names(d))
    run_check(tool, "user list --deactivated shows him deactivated", ["user", "list", "--deactivated"],
              lambda d: any(u["name"] == bob and u["deactivated"] is True for u in d["users"]))

    # Deleting the room (v2: asynchronous), then its status until complete.
    deleted = run_check(tool, "room delete (v2)", ["room", "delete", room],
                        lambda d: isinstance(d.get("delete_id"), str) and d["delete_id"] != "")
    delete_id = deleted.get("delete_id") if isinstance(deleted, dict) else None
    if delete_id:
        seen = {}

        def complete():
            rc, docs, _, _ = tool.run(["room", "delete-status", "--delete-id", delete_id])
            seen["last"] = (rc, docs[-1] if docs else None)
            doc = seen["last"][1]
            return rc == 0 and isinstance(doc, dict) and doc.get("status") in ("complete", "failed")

        wait_until(complete, 60, 0.2)
        doc = seen.get("last", (None, None))[1] or {}
        check("room delete-status --delete-id reaches complete",
              doc.get("status") == "complete" and doc.get("room_id") == room and doc.get("delete_id") == delete_id,
              seen.get("last"))
        result = doc.get("shutdown_room") or {}
        check("the deletion kicked alice and removed the alias",
              alice in result.get("kicked_users", []) and result.get("local_aliases") == [alias], doc)
        run_check(tool, "room delete-status --room-id", ["room", "delete-status", "--room-id", room],
                  lambda d: [(r["delete_id"], r["status"]) for r in d["results"]] == [(delete_id, "complete")])
    run_check(tool, "room list no longer shows Doomed room", ["room", "list"],
              lambda d: room not in [r["room_id"] for r in d["rooms"]]
              and "Doomed room" not in [r["name"] for r in d["rooms"]])
    status, got = api("GET", base, f"/_synapse/admin/v1/rooms/{q(room)}", token=root)
    check("the room is gone over the admin API", status == 404, (status, got))
    rc, docs, out, err = tool.run(["room", "delete", room])
    check("synadm room delete of the deleted room says so and fails",
          rc == 1 and "Room not found." in out, f"exit {rc}, stdout {trim(out)}, stderr {trim(err)}")


def main():
    binary = sys.argv[1]
    procs, logs = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        try:
            proc, base, logs["hearth"] = start_hearth(binary, workdir, EXTRA_CONFIG)
            procs.append(proc)
            started = time.monotonic()
            try:
                scenario(base, workdir)
            except RuntimeError as e:  # a setup step failed (already counted)
                print(f"stopped: {e}")
            print(f"(synadm scenario took {time.monotonic() - started:.1f} s)")
        finally:
            stop(procs)
            if not all(ok for _, ok in CHECKS) or sys.exc_info()[0]:
                print_log_tails(logs)
    finish("synadm", CHECKS)


if __name__ == "__main__":
    main()
