"""Starting Hearth and Synapse so that they federate on 127.0.0.1: a test CA
and a certificate for localhost, each server's configuration (a plain client
listener and a TLS federation listener trusting the CA, rate limits lifted),
the processes, and waiting for them to answer.

Shared by tests/interop/synapse_interop.py (`make interop`) and
benches/federation.py (`make bench-federation`). Server names carry their
port (`localhost:<port>`), so each server reaches the others directly: no
well-known, no SRV, no `resolve_overrides`. A test that puts something
between the servers (tests/interop/synapse_partitions.py: a TCP proxy in
front of each federation listener) passes `server_name`, and for Hearth
`resolve_overrides`, to name a server by another port than the one its
federation listener has.
"""

import datetime
import ipaddress
import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.error

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients"))
from harness import http, wait_until  # noqa: E402

SERVER_START_TIMEOUT = 180  # Synapse creates its SQLite schema on first start

RATE_LIMITS = ["login", "login_failures", "registration", "registration_checks", "message", "room_creation",
               "membership", "typing", "to_device", "receipts"]


class Failure(Exception):
    """Something did not hold; the message says what was seen."""


def free_ports(n):
    """`n` distinct ports free on 127.0.0.1 (all bound at once, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def make_certificates(directory):
    """A test CA and a certificate for localhost / 127.0.0.1 that it signed:
    paths of (CA PEM, certificate PEM, private key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hearth interop test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))

    paths = tuple(os.path.join(directory, name) for name in ("ca.pem", "localhost.pem", "localhost.key"))
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


def hearth_config(workdir, client_port, federation_port, tls, log="info,hearth=debug,ruma_state_res=warn",
                  min_retry_ms=200, max_retry_ms=2000, rate_limit=1000, cache_mb=8, guest_access=False,
                  notaries=(), extra="", server_name=None, resolve_overrides=None, shared_secret=None):
    """hearth.toml: every rate limit at `rate_limit`/s; `notaries`: server
    names trusted as key servers; `extra` (TOML) is appended after the last
    table ([rate_limits.receipts]), so it opens tables of its own.
    `server_name`: the server's name, by default `localhost:<federation_port>`;
    `resolve_overrides`: {server name: "IP:port"}, federation.resolve_overrides;
    `shared_secret`: registration.shared_secret (admin accounts through
    /_synapse/admin/v1/register)."""
    ca, cert, key = tls
    q = json.dumps  # a TOML basic string
    limits = "".join(f"[rate_limits.{name}]\nper_second = {float(rate_limit)}\nburst_count = {rate_limit}\n"
                     for name in RATE_LIMITS)
    overrides = ("resolve_overrides = {" + ", ".join(f"{q(n)} = {q(a)}" for n, a in resolve_overrides.items())
                 + "}\n" if resolve_overrides else "")
    secret = f"shared_secret = {q(shared_secret)}\n" if shared_secret else ""
    return f"""server_name = {q(server_name or f"localhost:{federation_port}")}
log = "{log}"

[[listeners]]
address = "127.0.0.1"
port = {client_port}
resources = ["client"]

[[listeners]]
address = "127.0.0.1"
port = {federation_port}
resources = ["federation", "keys"]
tls = {{ certificate = {q(cert)}, key = {q(key)} }}

[database]
path = {q(os.path.join(workdir, "hearth-db"))}
cache_mb = {cache_mb}

[registration]
enabled = true
{"guest_access = true" + chr(10) if guest_access else ""}{secret}
[federation]
ca_file = {q(ca)}
ip_range_blacklist = []
destination_min_retry_interval_ms = {min_retry_ms}
destination_max_retry_interval_ms = {max_retry_ms}
{overrides}{"trusted_key_servers = [" + ", ".join("{ server_name = " + q(n) + " }" for n in notaries) + "]" + chr(10)
 if notaries else ""}
{limits}{extra}"""


def synapse_config(directory, client_port, federation_port, tls, database=None, notaries=(), server_name=None,
                   extra=None):
    """homeserver.yaml (written as JSON, which YAML reads) and its logging
    configuration. `database`: Synapse's `database` section; None is SQLite
    in `directory`. `notaries`: server names trusted as key servers.
    `server_name`: by default `localhost:<federation_port>`; `extra`: more
    top-level settings, replacing those of the same name."""
    ca, cert, key = tls
    unlimited = {"per_second": 1000, "burst_count": 1000}
    log_config = os.path.join(directory, "log.yaml")
    with open(log_config, "w") as f:
        json.dump({
            "version": 1,
            "formatters": {"precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "formatter": "precise",
                                  "filename": os.path.join(directory, "homeserver.log"), "encoding": "utf8"}},
            "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
            "root": {"level": "INFO", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }, f, indent=2)
    config = {
        "server_name": server_name or f"localhost:{federation_port}",
        "pid_file": os.path.join(directory, "homeserver.pid"),
        "listeners": [
            {"port": client_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
             "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]},
            {"port": federation_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": True,
             "x_forwarded": False, "resources": [{"names": ["federation", "keys"], "compress": False}]},
        ],
        "tls_certificate_path": cert,
        "tls_private_key_path": key,
        "federation_custom_ca_list": [ca],
        "ip_range_blacklist": [],
        "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
        # Durations in milliseconds: retry a server that failed quickly, as Hearth is told to.
        "federation": {"destination_min_retry_interval": 200, "destination_max_retry_interval": 2000,
                       "max_short_retry_delay": 500, "max_long_retry_delay": 2000},
        "database": database or {"name": "sqlite3", "args": {"database": os.path.join(directory, "homeserver.db")}},
        "log_config": log_config,
        "media_store_path": os.path.join(directory, "media_store"),
        "signing_key_path": os.path.join(directory, "signing.key"),
        "trusted_key_servers": [{"server_name": name} for name in notaries],
        "suppress_key_server_warning": True,
        "macaroon_secret_key": secrets.token_hex(32),
        "form_secret": secrets.token_hex(32),
        "allow_public_rooms_over_federation": True,
        "report_stats": False,
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "room_list_publication_rules": [{"action": "allow"}],
        "presence": {"enabled": True},
        "rc_message": unlimited,
        "rc_registration": unlimited,
        "rc_registration_token_validity": unlimited,
        "rc_login": {"address": unlimited, "account": unlimited, "failed_attempts": unlimited},
        "rc_joins": {"local": unlimited, "remote": unlimited},
        "rc_joins_per_room": unlimited,
        "rc_invites": {"per_room": unlimited, "per_user": unlimited, "per_issuer": unlimited},
        "rc_room_creation": unlimited,
        "rc_key_requests": unlimited,
        "rc_presence": {"per_user": unlimited},
        "rc_admin_redaction": unlimited,
        "rc_federation": {"window_size": 1000, "sleep_limit": 1000, "sleep_delay": 0, "reject_limit": 1000,
                          "concurrent": 100},
    }
    config.update(extra or {})
    return config


def wait_for_server(name, proc, url, log, timeout=SERVER_START_TIMEOUT, interval=0.2):
    """Polls /_matrix/client/versions until it answers 200, the process exits, or the deadline passes."""
    def up():
        if proc.poll() is not None:
            return "exited"
        try:
            return http("GET", url + "/_matrix/client/versions")[0] == 200
        except (urllib.error.URLError, OSError):
            return False

    state = wait_until(up, timeout, interval=interval)
    if state is not True:
        raise Failure(f"{name} did not start ({'it exited' if state == 'exited' else 'timed out'}); log: {log}")


def spawn_hearth(binary, config, log, append=False):
    """The `hearth --config CONFIG serve` process, its output going to `log`."""
    with open(log, "a" if append else "w") as out:
        return subprocess.Popen([binary, "--config", config, "serve"], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "NO_COLOR": "1", "NO_PROXY": "127.0.0.1,localhost"})


def start_hearth(binary, workdir, tls, client_port, federation_port, **options):
    """Writes WORKDIR/hearth.toml (`options` go to hearth_config) and starts
    Hearth with it: (process, client URL, server name, log path)."""
    config = os.path.join(workdir, "hearth.toml")
    server_name = options.get("server_name") or f"localhost:{federation_port}"
    with open(config, "w") as f:
        f.write(hearth_config(workdir, client_port, federation_port, tls, **options))
    log = os.path.join(workdir, "hearth.log")
    proc = spawn_hearth(binary, config, log)
    url = f"http://127.0.0.1:{client_port}"
    return proc, url, server_name, log


def synapse_command(directory):
    return [sys.executable, "-m", "synapse.app.homeserver", "-c", os.path.join(directory, "homeserver.yaml")]


def spawn_synapse(directory, append=False):
    """The Synapse process of `directory` (configured by start_synapse), its
    output going to DIRECTORY/stdout.log."""
    with open(os.path.join(directory, "stdout.log"), "a" if append else "w") as out:
        return subprocess.Popen(synapse_command(directory), cwd=directory, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"})


def start_synapse(workdir, tls, client_port, federation_port, database=None, name="synapse", notaries=(),
                  server_name=None, extra=None):
    """Configures Synapse in WORKDIR/NAME, makes its signing key, starts it:
    (process, client URL, server name, log path, stdout path). `server_name`
    and `extra`: as synapse_config takes them."""
    server_name = server_name or f"localhost:{federation_port}"
    directory = os.path.join(workdir, name)
    os.makedirs(directory)
    with open(os.path.join(directory, "homeserver.yaml"), "w") as f:
        json.dump(synapse_config(directory, client_port, federation_port, tls, database, notaries, server_name,
                                 extra), f, indent=2)
    subprocess.run(synapse_command(directory) + ["--generate-keys"], cwd=directory, check=True, timeout=120,
                   stdout=subprocess.DEVNULL)
    proc = spawn_synapse(directory)
    url = f"http://127.0.0.1:{client_port}"
    return (proc, url, server_name, os.path.join(directory, "homeserver.log"),
            os.path.join(directory, "stdout.log"))
