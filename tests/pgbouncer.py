"""A real PgBouncer in transaction mode in front of the test server.

Debian's ``pgbouncer`` (``./dev test`` installs it as root) runs as a subprocess
for the session, on 127.0.0.1 and a free port, forwarding every database to the
server of ``server_dsn``. ``PgBouncer.url(dsn)`` turns a test database's DSN into
the same database through the pooler. PgBouncer refuses to run as root, so as
root it runs as ``nobody`` (or as the owner of the server's socket directory,
which the embedded PostgreSQL uses) in a directory of its own.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import pytest

MISSING = (
    "pgbouncer is not installed: the pooler tests need Debian's pgbouncer "
    "(`./dev test` installs it as root; or `apt-get install pgbouncer`)"
)


@dataclass
class PgBouncer:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def url(self, dsn: str) -> str:
        """``dsn``'s database and user, through this PgBouncer."""
        parts = urlsplit(dsn)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")]
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{self.host}:{self.port}" if userinfo else f"{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def pgbouncer_binary() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None


@dataclass(frozen=True)
class Server:
    host: str
    """A host name or address, or a Unix socket directory."""
    port: int
    user: str
    password: str | None


def server_of(dsn: str) -> Server:
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    host = query.get("host") or parts.hostname or "127.0.0.1"
    port = int(query.get("port") or parts.port or 5432)
    user = unquote(parts.username) if parts.username else "postgres"
    password = unquote(parts.password) if parts.password else None
    return Server(host, port, user, password)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def write_config(directory: Path, server: Server, port: int) -> Path:
    target = f"host={_quote(server.host)} port={server.port}"
    if server.password:
        target += f" user={_quote(server.user)} password={_quote(server.password)}"
    (directory / "userlist.txt").write_text(f'"{server.user}" ""\n')
    config = directory / "pgbouncer.ini"
    config.write_text(
        f"""[databases]
* = {target}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {directory}
pidfile = {directory}/pgbouncer.pid
auth_type = trust
auth_file = {directory}/userlist.txt
admin_users = {server.user}
pool_mode = transaction
default_pool_size = 4
max_client_conn = 200
ignore_startup_parameters = extra_float_digits,options,search_path
"""
    )
    return config


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run_as(server: Server) -> str | None:
    """Whom PgBouncer runs as: it refuses root."""
    if os.geteuid() != 0:
        return None
    if server.host.startswith("/"):  # the socket's directory may be its owner's alone
        owner = pwd.getpwuid(os.stat(server.host).st_uid).pw_name
        if owner != "root":
            return owner
    return "nobody"


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start(server_dsn: str, directory: Path, attempts: int = 5) -> PgBouncer:
    binary = pgbouncer_binary()
    if binary is None:
        pytest.fail(MISSING, pytrace=False)
    server = server_of(server_dsn)
    user = _run_as(server)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    log_path = directory / "pgbouncer.log"
    for _ in range(attempts):
        port = _free_port()
        config = write_config(directory, server, port)
        command = [binary, *(["-u", user] if user else []), str(config)]
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        bouncer = PgBouncer("127.0.0.1", port, process, log_path)
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            if _accepts(port):
                return bouncer
            time.sleep(0.05)
        stop(bouncer)
        if "Address already in use" not in bouncer.log():
            break  # not a race for the port: no point in another try
    pytest.fail(f"pgbouncer did not start ({' '.join(command)}); its log:\n{bouncer.log()}")


def stop(bouncer: PgBouncer) -> None:
    process = bouncer.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def pgbouncer_process(server_dsn: str) -> Iterator[PgBouncer]:
    """One PgBouncer (transaction mode) for the session, stopped at its end."""
    with tempfile.TemporaryDirectory(prefix="stats-worker-pgbouncer-") as tmp:
        directory = Path(tmp)
        bouncer = start(server_dsn, directory)
        try:
            yield bouncer
        finally:
            stop(bouncer)


@pytest.fixture
def pgbouncer(pgbouncer_process: PgBouncer, request: pytest.FixtureRequest) -> Iterator[PgBouncer]:
    """The session's PgBouncer; when the test fails, what PgBouncer logged during it is printed."""
    bouncer = pgbouncer_process
    offset = len(bouncer.log())
    failed_before = request.session.testsfailed
    yield bouncer
    if request.session.testsfailed > failed_before or bouncer.process.poll() is not None:
        capture = request.config.pluginmanager.getplugin("capturemanager")
        suspended = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
        with suspended:
            exited = bouncer.process.poll()
            state = f"exited {exited}" if exited is not None else "running"
            print(f"\n--- pgbouncer ({state}) log during {request.node.nodeid}:")
            print(bouncer.log()[offset:] or "(nothing)")
