"""Fixtures for end-to-end tests of the sidecar with the real Python SDK (durabletask).

* ``sidecar``       - one sidecar process per test session (fresh database), shared by all
                      tests; restarted automatically (on another fresh database) if it died.
* ``fresh_sidecar`` - a private sidecar for one test on a database of its own (the crash
                      tests kill it and restart it on the same database).
* ``hub``           - TaskHubGrpcClient connected to ``sidecar``.
* ``start_worker``  - start a TaskHubGrpcWorker with given orchestrators/activities;
                      stopped at the end of the test.
* ``raw_stub``      - the generated gRPC stub, for fields the SDK does not surface (tags, parent id).
* ``iid``           - unique instance-id maker per test (``iid("x")``).

Environment:
* SIDECAR_BIN overrides the binary path (default: target/release then target/debug under
  the repository root).
* SIDECAR_POSTGRES_URL runs the sidecars on PostgreSQL instead of SQLite files: the admin URL
  of a server (``postgres://postgres@127.0.0.1:5432/postgres``; tests/postgres/start.sh
  starts a throwaway one). Each sidecar gets a fresh database ``dt_py_<hex>`` there, created
  and dropped with ``psql`` (the PostgreSQL client; on PATH or in /usr/lib/postgresql/*/bin).
"""

from __future__ import annotations

import os
import glob
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable

import grpc
import pytest
from google.protobuf import empty_pb2

from durabletask import client, worker
import durabletask.internal.orchestrator_service_pb2_grpc as stubs

from _util import FAST_RECONNECT, FAST_WORKER_RESILIENCY, make_client

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_DEADLINE_S = 30.0
LOG_TAIL_LINES = 80
POSTGRES_URL_VAR = "SIDECAR_POSTGRES_URL"

def find_sidecar_binary() -> Path:
    env = os.environ.get("SIDECAR_BIN")
    if env:
        p = Path(env)
        if not p.is_file() or not os.access(p, os.X_OK):
            pytest.fail(f"SIDECAR_BIN={env!r} is not an executable file", pytrace=False)
        return p
    for profile in ("release", "debug"):
        p = REPO_ROOT / "target" / profile / "durabletask-sidecar"
        if p.is_file() and os.access(p, os.X_OK):
            return p
    pytest.fail(
        "durabletask-sidecar binary not found: set SIDECAR_BIN or run `cargo build --release` "
        f"(looked in {REPO_ROOT / 'target/release'} and {REPO_ROOT / 'target/debug'})",
        pytrace=False)
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_psql() -> str:
    found = shutil.which("psql")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if candidates:
        return candidates[-1]
    pytest.fail(f"{POSTGRES_URL_VAR} is set but psql is not installed (apt-get install postgresql-client)",
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


class Sidecar:
    """A sidecar process on a fixed port and database that can be killed and restarted.

    The database is a SQLite file in ``workdir``, or with SIDECAR_POSTGRES_URL a fresh
    PostgreSQL database of its own (dropped by ``close``).
    """

    def __init__(self, binary: Path, workdir: Path, name: str = "sidecar"):
        self.binary = binary
        self.workdir = workdir
        self.name = name
        self.host = "127.0.0.1"
        self.port = free_port()
        self.http_port = free_port()
        self.postgres_admin_url = os.environ.get(POSTGRES_URL_VAR, "").strip() or None
        self.databases: list[str] = []
        self.db = self.new_database(name)
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.ready_once = False

    def new_database(self, label: str) -> str:
        """The ``--db`` value of a new, empty database (``label`` names a SQLite file)."""
        if self.postgres_admin_url is None:
            return str(self.workdir / f"{label}.db")
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
        while True:
            self.starts += 1
            with open(self.log_path, "ab") as log:
                log.write(f"\n===== start #{self.starts}: port {self.port}, db {self.db} =====\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    [str(self.binary), "--host", self.host, "--port", str(self.port),
                     "--http-port", str(self.http_port), "--db", self.db, "--log-level", "info"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=str(self.workdir))
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break  # exited during startup (e.g. port still held): retry below
                if hello_ok(self.address, timeout=0.5):
                    self.ready_once = True
                    return
                time.sleep(0.05)
            if self.proc.poll() is None:
                self._signal_and_wait(signal.SIGKILL)
                pytest.fail(f"{self.name} did not answer Hello on {self.address} within "
                            f"{STARTUP_DEADLINE_S}s\n{self.log_tail()}", pytrace=False)
            # An early exit is retried only on restarts (the port may be briefly unavailable).
            if not self.ready_once or time.monotonic() >= deadline:
                pytest.fail(f"{self.name} exited during startup with code {self.proc.returncode}\n"
                            f"{self.log_tail()}", pytrace=False)
            time.sleep(0.2)

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


@pytest.fixture(scope="session")
def sidecar_binary() -> Path:
    return find_sidecar_binary()


@pytest.fixture(scope="session")
def _session_sidecar(sidecar_binary):
    workdir = Path(tempfile.mkdtemp(prefix="dts-e2e-"))
    sc = Sidecar(sidecar_binary, workdir, "sidecar")
    try:
        sc.start()
        yield sc
    finally:
        sc.close()
        # Each run leaves ~160 MB of databases and logs; KEEP_SIDECAR_DIR=1 keeps them.
        if os.environ.get("KEEP_SIDECAR_DIR") != "1":
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def sidecar(_session_sidecar: Sidecar) -> Sidecar:
    """The shared sidecar; if an earlier test crashed it, fail loudly and start a new one."""
    sc = _session_sidecar
    if not sc.is_alive():
        code = sc.proc.returncode if sc.proc else None
        tail = sc.log_tail()
        sc.port = free_port()
        sc.http_port = free_port()
        sc.db = sc.new_database(f"sidecar-after-crash-{sc.starts}")
        sc.start()
        pytest.fail(f"the shared sidecar had died (exit code {code}) before this test; "
                    f"restarted it with a fresh database\n{tail}", pytrace=False)
    return sc


@pytest.fixture
def fresh_sidecar(sidecar_binary, tmp_path):
    """A private sidecar for one test (fresh database), for tests that kill/restart it."""
    sc = Sidecar(sidecar_binary, tmp_path, "private-sidecar")
    try:
        sc.start()
        yield sc
    finally:
        sc.close()


@pytest.fixture
def hub(sidecar):
    c = make_client(sidecar.address)
    yield c
    c.close()


class WorkerFactory:
    def __init__(self, default_address: str):
        self.default_address = default_address
        self.workers: list[worker.TaskHubGrpcWorker] = []

    def __call__(self, orchestrators: Iterable[Callable] = (), activities: Iterable[Callable] = (), *,
                 entities: Iterable[Any] = (), filters: Any = None, address: str | None = None, maximum_timer_interval: timedelta | None = None,
                 concurrency: worker.ConcurrencyOptions | None = None) -> worker.TaskHubGrpcWorker:
        kwargs: dict[str, Any] = {}
        if maximum_timer_interval is not None:
            kwargs["maximum_timer_interval"] = maximum_timer_interval
        w = worker.TaskHubGrpcWorker(
            host_address=address or self.default_address,
            channel_options=FAST_RECONNECT,
            resiliency_options=FAST_WORKER_RESILIENCY,
            concurrency_options=concurrency,
            **kwargs)
        for fn in orchestrators:
            w.add_orchestrator(fn)
        for fn in activities:
            w.add_activity(fn)
        for fn in entities:
            w.add_entity(fn)
        if filters == "auto":
            w.use_work_item_filters()
        elif filters is not None:
            w.use_work_item_filters(filters)
        w.start()
        self.workers.append(w)
        return w

    def stop_all(self) -> None:
        while self.workers:
            self.workers.pop().stop()


@pytest.fixture
def start_worker(request):
    """``start_worker([orchestrators], [activities], address=None, ...)`` -> started worker.

    Defaults to the shared sidecar; tests using ``fresh_sidecar`` pass ``address=``.
    """
    default = None
    if "fresh_sidecar" in request.fixturenames:
        default = request.getfixturevalue("fresh_sidecar").address
    else:
        default = request.getfixturevalue("sidecar").address
    factory = WorkerFactory(default)
    yield factory
    factory.stop_all()


@pytest.fixture
def raw_stub(sidecar):
    channel = grpc.insecure_channel(sidecar.address)
    yield stubs.TaskHubSidecarServiceStub(channel)
    channel.close()


@pytest.fixture
def iid(request) -> Callable[[str], str]:
    """Unique, readable instance ids: ``<test name>-<8 hex>-<suffix>`` (≤ ~70 chars)."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:40]
    run = uuid.uuid4().hex[:8]

    def make(suffix: str = "") -> str:
        return f"{base}-{run}-{suffix}" if suffix else f"{base}-{run}"
    return make


# --- show the sidecar log tail in the report of a failed test ----------------------------

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    seen = set()
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Sidecar) and id(value) not in seen:
            seen.add(id(value))
            state = "running" if value.is_alive() else (
                f"exited with {value.proc.returncode}" if value.proc else "never started")
            rep.sections.append((f"{value.name} log ({state})", value.log_tail()))
