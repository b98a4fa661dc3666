"""A real Matrix client library (matrix-nio) against a real `hearth` process.

Usage: nio_smoke.py PATH/TO/hearth
Starts hearth on an ephemeral port with a temporary database, then registers,
logs in, lists devices, sets a display name and logs out through nio.
The last line is the summary: "nio: N passed, N failed".
"""

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import nio

CHECKS = []


def check(name, condition, detail=""):
    CHECKS.append((name, bool(condition)))
    print(("ok   " if condition else "FAIL ") + name + (f": {detail}" if detail and not condition else ""))


def start_server(binary, workdir):
    config = os.path.join(workdir, "hearth.toml")
    with open(config, "w") as f:
        f.write(
            "[[listeners]]\naddress = \"127.0.0.1\"\nport = 0\n"
            f"[database]\npath = \"{workdir}/db\"\ncache_mb = 8\n"
            "[registration]\nenabled = true\n"
        )
    proc = subprocess.Popen(
        [binary, "--config", config, "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "NO_COLOR": "1"},
    )
    found = {}
    ready = threading.Event()

    def read():
        for line in proc.stdout:
            m = re.search(r"listening on (http://\S+)", line)
            if m and not ready.is_set():
                found["url"] = m.group(1)
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(60):
        proc.kill()
        raise SystemExit("hearth did not report a listening address within 60 s")
    return proc, found["url"]


async def scenario(base):
    client = nio.AsyncClient(base, "alice")
    resp = await client.register("alice", "s3cret-pass", device_name="nio register")
    check("register", isinstance(resp, nio.RegisterResponse), resp)
    await client.close()

    client = nio.AsyncClient(base, "@alice:localhost")
    resp = await client.login("s3cret-pass", device_name="nio laptop")
    check("login", isinstance(resp, nio.LoginResponse), resp)
    check("login user_id", getattr(resp, "user_id", None) == "@alice:localhost", resp)

    resp = await client.whoami()
    check("whoami", isinstance(resp, nio.WhoamiResponse) and resp.user_id == "@alice:localhost", resp)

    resp = await client.devices()
    ok = isinstance(resp, nio.DevicesResponse)
    names = sorted(d.display_name for d in resp.devices) if ok else []
    check("list devices", ok and names == ["nio laptop", "nio register"], resp)

    resp = await client.set_displayname("Alice Nio")
    check("set display name", isinstance(resp, nio.ProfileSetDisplayNameResponse), resp)
    resp = await client.get_displayname("@alice:localhost")
    check("get display name", isinstance(resp, nio.ProfileGetDisplayNameResponse) and resp.displayname == "Alice Nio", resp)

    resp = await client.logout()
    check("logout", isinstance(resp, nio.LogoutResponse), resp)
    resp = await client.whoami()
    check("token revoked after logout", not isinstance(resp, nio.WhoamiResponse), resp)

    bad = nio.AsyncClient(base, "alice")
    resp = await bad.login("wrong password")
    check("wrong password refused", isinstance(resp, nio.LoginError) and resp.status_code == "M_FORBIDDEN", resp)
    await bad.close()
    await client.close()


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as workdir:
        proc, base = start_server(binary, workdir)
        try:
            asyncio.run(asyncio.wait_for(scenario(base), 120))
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    passed = sum(1 for _, ok in CHECKS if ok)
    failed = len(CHECKS) - passed
    print(f"nio: {passed} passed, {failed} failed")
    sys.exit(1 if failed or not CHECKS else 0)


if __name__ == "__main__":
    main()
