"""A sidecar process for the Python suites' fixtures (imported as ``_sidecar``).

tests/python, tests/python_dts and tests/agent_framework start the binary the same way;
the other two find this module through ``pythonpath = ../python`` in their pytest.ini
(tests/multinode, which runs nodes of its own, takes the PostgreSQL and port helpers).
Only grpc, pytest and the durabletask stubs are needed, which every suite's venv has.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest
from google.protobuf import empty_pb2

import durabletask.internal.orchestrator_service_pb2_grpc as stubs

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_DEADLINE_S = 30.0
LOG_TAIL_LINES = 80
POSTGRES_URL_VAR = "SIDECAR_POSTGRES_URL"


def find_sidecar_binary(profiles: tuple[str, ...] = ("release", "debug")) -> Path:
    """SIDECAR_BIN, else the first build of ``profiles`` under the repository's target/."""
    env = os.environ.get("SIDECAR_BIN")
    if env:
        p = Path(env)
        if not p.is_file() or not os.access(p, os.X_OK):
            pytest.fail(f"SIDECAR_BIN={env!r} is not an executable file", pytrace=False)
        return p
    for profile in profiles:
        p = REPO_ROOT / "target" / profile / "durabletask-sidecar"
        if p.is_file() and os.access(p, os.X_OK):
            return p
    looked = " and ".join(str(REPO_ROOT / "target" / profile) for profile in profiles)
    pytest.fail(f"durabletask-sidecar binary not found: set SIDECAR_BIN or run `cargo build` "
                f"(looked in {looked})", pytrace=False)
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hello_ok(address: str, timeout: float = 1.0) -> bool:
    """True if TaskHubSidecarService/Hello answers on ``address``."""
    channel = grpc.insecure_channel(address)
    try:
        stubs.TaskHubSidecarServiceStub(channel).Hello(empty_pb2.Empty(), timeout=timeout, wait_for_ready=True)
        return True
    except grpc.RpcError:
        return False
    finally:
        channel.close()


# --- PostgreSQL databases (tests/python with SIDECAR_POSTGRES_URL, tests/multinode) -------

def find_psql() -> str:
    found = shutil.which("psql")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if candidates:
        return candidates[-1]
    pytest.fail("a PostgreSQL run needs psql, which is not installed (apt-get install postgresql-client)",
                pytrace=False)
    raise AssertionError("unreachable")


def psql(admin_url: str, sql: str) -> subprocess.CompletedProcess:
    """Runs one statement on the server of ``admin_url``; bounded, so a dead server fails fast."""
    return subprocess.run(
        [find_psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", admin_url, "-c", sql],
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def with_database(url: str, database: str) -> str:
    """``url`` with its database replaced (user, host, port and query kept)."""
    base, sep, query = url.partition("?")
    scheme_end = base.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    slash = base.find("/", start)
    authority = base if slash < 0 else base[:slash]
    return f"{authority}/{database}{sep}{query}"


def create_postgres_database(admin_url: str) -> str:
    name = f"dt_py_{uuid.uuid4().hex}"
    done = psql(admin_url, f"CREATE DATABASE {name}")
    if done.returncode != 0:
        pytest.fail(f"cannot create a database via {POSTGRES_URL_VAR}: {done.stderr.strip()}",
                    pytrace=False)
    return name


def drop_postgres_database(admin_url: str, name: str) -> None:
    """Best effort: a database left behind costs disk space, not correctness."""
    try:
        psql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    except (OSError, subprocess.SubprocessError):
        pass


# --- The process ---------------------------------------------------------------------------

class Sidecar:
    """A sidecar process on fixed ports and a fixed database that can be killed and restarted.

    The database is a SQLite file in ``workdir``, or with ``postgres_admin_url`` a fresh
    PostgreSQL database of its own on that server (dropped by ``close``). ``http=False``
    turns the HTTP API off.
    """

    def __init__(self, binary: Path, workdir: Path, name: str = "sidecar", *,
                 http: bool = True, log_level: str = "info",
                 postgres_admin_url: str | None = None, sqlite_suffix: str = ".db"):
        self.binary = binary
        self.workdir = workdir
        self.name = name
        self.host = "127.0.0.1"
        self.port = free_port()
        self.http = http
        self.http_port = free_port() if http else None
        self.log_level = log_level
        self.postgres_admin_url = postgres_admin_url
        self.sqlite_suffix = sqlite_suffix
        self.databases: list[str] = []
        self.db = self.new_database(name)
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.ready_once = False

    def new_database(self, label: str) -> str:
        """The ``--db`` value of a new, empty database (``label`` names a SQLite file)."""
        if self.postgres_admin_url is None:
            return str(self.workdir / f"{label}{self.sqlite_suffix}")
        name = create_postgres_database(self.postgres_admin_url)
        self.databases.append(name)
        return with_database(self.postgres_admin_url, name)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def http_base(self) -> str:
        """Origin of the HTTP API (``--http-port``), e.g. ``http://127.0.0.1:40123``."""
        return f"http://{self.host}:{self.http_port}"

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.is_alive(), "sidecar already running"
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        first_tries = 0
        while True:
            self.starts += 1
            http_port = str(self.http_port) if self.http else "off"
            with open(self.log_path, "ab") as log:
                log.write(f"\n===== start #{self.starts}: port {self.port}, db {self.db} =====\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    [str(self.binary), "--host", self.host, "--port", str(self.port),
                     "--http-port", http_port, "--db", self.db, "--log-level", self.log_level],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=str(self.workdir))
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break  # exited during startup (e.g. port taken or still held): retry below
                if hello_ok(self.address, timeout=0.5):
                    self.ready_once = True
                    return
                time.sleep(0.05)
            if self.proc.poll() is None:
                self._signal_and_wait(signal.SIGKILL)
                pytest.fail(f"{self.name} did not answer Hello on {self.address} within "
                            f"{STARTUP_DEADLINE_S}s\n{self.log_tail()}", pytrace=False)
            if time.monotonic() >= deadline:
                self._fail_exited()
            if not self.ready_once:
                # Another process may have taken a port since free_port(): new ports, at
                # most three tries.
                first_tries += 1
                if first_tries >= 3:
                    self._fail_exited()
                self.port = free_port()
                if self.http:
                    self.http_port = free_port()
            # A restart that exits may find its port not yet released: same ports again.
            time.sleep(0.2)

    def _fail_exited(self) -> None:
        pytest.fail(f"{self.name} exited during startup with code {self.proc.returncode}\n"
                    f"{self.log_tail()}", pytrace=False)

    def _signal_and_wait(self, sig: int, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, nothing flushed beyond what was committed."""
        assert self.is_alive(), "sidecar is not running"
        self._signal_and_wait(signal.SIGKILL)

    def restart(self) -> None:
        """Start again on the same port and database (after kill() or stop())."""
        if self.is_alive():
            self.kill()
        self.start()

    def stop(self) -> None:
        self._signal_and_wait(signal.SIGTERM)

    def close(self) -> None:
        """Stop for good: also drop the PostgreSQL databases it used."""
        self.stop()
        while self.databases:
            drop_postgres_database(self.postgres_admin_url, self.databases.pop())

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"({self.name}: no log at {self.log_path})"
        tail = "\n".join(text[-lines:])
        return f"----- last {min(lines, len(text))} lines of {self.log_path} -----\n{tail}"


@contextlib.contextmanager
def sidecar_in_temp_dir(prefix: str, binary: Path, **kwargs: Any) -> Iterator[Sidecar]:
    """A started ``Sidecar`` (``kwargs`` as for it) in a new temporary directory; afterwards
    it is closed and the directory removed (KEEP_SIDECAR_DIR=1 keeps it)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    sc = Sidecar(binary, workdir, "sidecar", **kwargs)
    try:
        sc.start()
        yield sc
    finally:
        sc.close()
        if os.environ.get("KEEP_SIDECAR_DIR") != "1":
            shutil.rmtree(workdir, ignore_errors=True)


def add_log_tails(item, report) -> None:
    """Appends the log tail of each sidecar among a failed test's fixtures to its report."""
    if not report.failed:
        return
    seen = set()
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Sidecar) and id(value) not in seen:
            seen.add(id(value))
            state = "running" if value.is_alive() else (
                f"exited with {value.proc.returncode}" if value.proc else "never started")
            report.sections.append((f"{value.name} log ({state})", value.log_tail()))
