"""What the client tests share: a real `hearth` started on an ephemeral port
with a temporary configuration and database, stopping processes, and the
summary line, polling with a deadline and one JSON request.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

BASE_CONFIG = (
    "[[listeners]]\naddress = \"127.0.0.1\"\nport = 0\n"
    "[database]\npath = \"{db}\"\ncache_mb = 8\n"
    "[registration]\nenabled = true\n"
)


def start_hearth(binary, workdir, extra="", name="hearth"):
    """Runs hearth with the base configuration plus `extra` (TOML, which may
    continue the [registration] table): (process, URL, output lines)."""
    config = os.path.join(workdir, f"{name}.toml")
    with open(config, "w") as f:
        f.write(BASE_CONFIG.format(db=os.path.join(workdir, f"{name}-db")) + extra)
    proc = subprocess.Popen([binary, "--config", config, "serve"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "NO_COLOR": "1", "NO_PROXY": "127.0.0.1,localhost"})
    found, ready, output = {}, threading.Event(), []

    def read():
        for line in proc.stdout:
            output.append(line)
            m = re.search(r"listening on (http://\S+)", line)
            if m and not ready.is_set():
                found["url"] = m.group(1)
                ready.set()
        ready.set()  # hearth exited

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(60) or "url" not in found:
        proc.kill()
        raise SystemExit(f"{name} did not report a listening address:\n" + "".join(output[-30:]))
    return proc, found["url"], output


def stop(procs):
    """Terminates processes, killing those that take more than 30 s."""
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def print_log_tails(logs):
    """The end of each process's output (a list of lines or a file path), to see why a check failed."""
    for name, log in logs.items():
        text = "".join(log) if isinstance(log, list) else open(log).read()
        print(f"--- the end of {name}'s output ---\n{text[-4000:]}")


def finish(label, checks):
    """The summary line, then the exit status: 1 on any failure (or no checks at all)."""
    passed = sum(1 for _, ok in checks if ok)
    failed = len(checks) - passed
    print(f"{label}: {passed} passed, {failed} failed")
    sys.exit(1 if failed or not checks else 0)


def wait_until(predicate, timeout, interval=0.05):
    """Polls `predicate` until it returns something truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def http(method, url, body=None, token=None, timeout=30):
    """One JSON request: (status, parsed body, or text)."""
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")
