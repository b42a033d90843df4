"""Fixtures for the multi-node tests: several real sidecar processes on one PostgreSQL
database, each with its own Python SDK worker (STYLE.md §15).

* ``pg_database``  - a fresh database on the server named by DURABLETASK_TEST_POSTGRES (an
                     admin URL such as postgres://postgres@127.0.0.1:5432/postgres), dropped
                     afterwards. Unset: the test fails when CI is set, else it is skipped.
* ``cluster``      - ``cluster(count)`` starts that many sidecars on ``pg_database`` and
                     waits until each answers Hello; all are stopped at the end (a paused
                     one is continued first).
* ``workers``      - ``workers(node, ...)`` starts a TaskHubGrpcWorker on a node; stopped
                     before the sidecars.
* ``run_dir``      - a directory for logs and the execution record, kept for diagnosis; the
                     SDK's clients and workers log to ``sdk.log`` there.
* ``report``       - ``report(line)`` prints a measurement and repeats it in the session's
                     terminal summary (shown without ``-s``).

Environment: SIDECAR_BIN (default: the newer of target/debug and target/release),
MULTINODE_LEASE_SECONDS (default 3), MULTINODE_LOG_LEVEL (the sidecars' --log-level,
default info), MULTINODE_KEEP_DB=1 (keep the database for diagnosis).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import grpc
import pytest

import durabletask.internal.orchestrator_service_pb2_grpc as stubs
from durabletask import client, worker

# The Python suite's helpers: the same short reconnect backoff for workers and clients (a
# node that comes back or goes away is noticed within about a second), and its polling.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from _util import FAST_RECONNECT, FAST_WORKER_RESILIENCY, wait_until  # noqa: E402
# ... and the process helpers of its fixtures.
from _sidecar import find_psql, free_port, hello_ok, psql, with_database  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
POSTGRES_VAR = "DURABLETASK_TEST_POSTGRES"
LEASE_SECONDS = int(os.environ.get("MULTINODE_LEASE_SECONDS", "3"))
LOG_LEVEL = os.environ.get("MULTINODE_LOG_LEVEL", "info")
STARTUP_DEADLINE_S = 30.0
LOG_TAIL_LINES = 60

# --- PostgreSQL ------------------------------------------------------------------------

def socket_ports(pid: int) -> set[int]:
    """Local TCP ports of process ``pid``'s sockets (Linux /proc), to tell which node a
    PostgreSQL session belongs to."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    if fields[9] in inodes:
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


ACTIVITY_SQL = """
SELECT pid, client_port, state, coalesce(wait_event_type || ':' || wait_event, '-'),
       coalesce(round(extract(epoch FROM now() - xact_start)::numeric, 1)::text, '-'),
       round(extract(epoch FROM now() - state_change)::numeric, 1),
       pg_blocking_pids(pid)::text,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 90)
  FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid()
 ORDER BY xact_start NULLS LAST
"""


def database_activity(db_url: str, nodes: list) -> str:
    """pg_stat_activity of the test database, each session labelled with its node, for a
    failure report: who waits on a lock, who holds it, in which state and for how long."""
    owners = {}
    for node in nodes:
        if node.proc is not None:
            for port in socket_ports(node.proc.pid):
                owners[port] = node.name + (" (paused)" if node.paused else "")
    try:
        out = subprocess.run([find_psql(), "-X", "-A", "-t", "-F", "|", "-d", db_url, "-c", ACTIVITY_SQL],
                             env={**os.environ, "PGCONNECT_TIMEOUT": "10"}, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"(pg_stat_activity not readable: {e!r})"
    lines = ["backend|node|state|waiting on|xact age s|in state s|blocked by|query"]
    for row in out.stdout.splitlines():
        cols = row.split("|", 7)
        if len(cols) < 8:
            continue
        port = int(cols[1]) if cols[1].lstrip("-").isdigit() else -1
        lines.append("|".join([cols[0], owners.get(port, "?"), *cols[2:]]))
    return "\n".join(lines) + (f"\n{out.stderr.strip()}" if out.returncode else "")


@pytest.fixture
def pg_database():
    """URL of a fresh, empty database; dropped after the test."""
    admin = os.environ.get(POSTGRES_VAR, "").strip()
    if not admin:
        message = (f"{POSTGRES_VAR} is not set: the multi-node tests need a PostgreSQL server "
                   f"(e.g. {POSTGRES_VAR}=$(tests/postgres/start.sh))")
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    name = f"dt_mn_{uuid.uuid4().hex[:16]}"
    created = psql(admin, f"CREATE DATABASE {name}")
    if created.returncode != 0:
        pytest.fail(f"cannot create database {name} via {POSTGRES_VAR}: {created.stderr.strip()}",
                    pytrace=False)
    yield with_database(admin, name)
    if os.environ.get("MULTINODE_KEEP_DB"):
        print(f"kept database {with_database(admin, name)}")
        return
    try:
        psql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    except (OSError, subprocess.SubprocessError):
        pass  # a leftover database costs disk space, not correctness


# --- sidecar processes -----------------------------------------------------------------

def sidecar_binary() -> Path:
    env = os.environ.get("SIDECAR_BIN")
    if env:
        path = Path(env)
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"SIDECAR_BIN={env!r} is not an executable file", pytrace=False)
        return path
    built = [REPO_ROOT / "target" / p / "durabletask-sidecar" for p in ("debug", "release")]
    built = [p for p in built if p.is_file() and os.access(p, os.X_OK)]
    if not built:
        pytest.fail("durabletask-sidecar not found: set SIDECAR_BIN or run "
                    "`cargo build --bin durabletask-sidecar`", pytrace=False)
    return max(built, key=lambda p: p.stat().st_mtime)


class Node:
    """One sidecar process on its own port, sharing the database with the other nodes."""

    def __init__(self, name: str, binary: Path, db_url: str, workdir: Path,
                 sdk_log: logging.Handler):
        self.name = name
        self.sdk_logger = logging.Logger(f"sdk.{name}")
        self.sdk_logger.addHandler(sdk_log)
        self.binary = binary
        self.db_url = db_url
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.paused = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(self.binary), "--host", "127.0.0.1", "--port", str(self.port),
                "--http-port", "0", "--db", self.db_url, "--lease-seconds", str(LEASE_SECONDS), "--log-level", LOG_LEVEL]

    def spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=str(self.log_path.parent))

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not self.alive():
                pytest.fail(f"{self.name} exited during start-up with code {self.proc.returncode} "
                            f"(log: {self.log_path})", pytrace=False)
            if hello_ok(self.address, timeout=0.5):
                return
            time.sleep(0.05)
        pytest.fail(f"{self.name} did not answer Hello on {self.address} within "
                    f"{STARTUP_DEADLINE_S:.0f}s (log: {self.log_path})", pytrace=False)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: nothing released, nothing flushed; its leases must expire."""
        assert self.alive(), f"{self.name} is not running"
        self.proc.kill()
        self.proc.wait(timeout=10)

    def pause(self) -> None:
        assert self.alive(), f"{self.name} is not running"
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.paused and self.alive():
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        """Continue if paused, SIGTERM (graceful drain), SIGKILL after 10 s."""
        if not self.alive():
            return
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.log_text().splitlines()
        return f"----- last {min(lines, len(text))} lines of {self.log_path} -----\n" + "\n".join(text[-lines:])

    def client(self) -> client.TaskHubGrpcClient:
        return client.TaskHubGrpcClient(host_address=self.address, channel_options=FAST_RECONNECT,
                                        logger=self.sdk_logger)

    def stub(self) -> tuple[grpc.Channel, stubs.TaskHubSidecarServiceStub]:
        channel = grpc.insecure_channel(self.address)
        return channel, stubs.TaskHubSidecarServiceStub(channel)


SUMMARY: list[str] = []


@pytest.fixture
def report(request) -> Callable[[str], None]:
    def line(text: str) -> None:
        print(text)
        SUMMARY.append(f"{request.node.name}: {text}")
    return line


def pytest_terminal_summary(terminalreporter) -> None:
    if SUMMARY:
        terminalreporter.section("multi-node measurements")
        for text in SUMMARY:
            terminalreporter.write_line(text)


@pytest.fixture
def run_dir(request, report) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"dt-multinode-{request.node.name[:40]}-"))
    report(f"sidecar logs, SDK log and execution records in {path}")
    return path


@pytest.fixture
def sdk_log(run_dir):
    """Where the SDK's clients and workers log instead of stderr (a killed node makes its
    worker log a reconnect failure every second): ``sdk.log``, each line naming the node."""
    handler = logging.FileHandler(run_dir / "sdk.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(threadName)s: %(message)s"))
    yield handler
    handler.close()


@pytest.fixture
def cluster(request, pg_database, run_dir, sdk_log):
    """``cluster(count)`` -> started, ready nodes sharing ``pg_database``."""
    nodes: list[Node] = []
    binary = sidecar_binary()
    request.node.multinode_nodes = nodes  # for the failure report

    def start(count: int) -> list[Node]:
        started = [Node(f"node{len(nodes) + i}", binary, pg_database, run_dir, sdk_log)
                   for i in range(count)]
        nodes.extend(started)
        for node in started:
            node.spawn()
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        for node in started:
            node.wait_ready(deadline)
        return started

    yield start
    for node in nodes:
        node.stop()


def stop_worker(w: worker.TaskHubGrpcWorker, timeout: float = 20.0) -> None:
    """Stops a worker without letting a stuck stop hang the session."""
    t = threading.Thread(target=w.stop, daemon=True)
    t.start()
    t.join(timeout)


@pytest.fixture
def workers(cluster):
    """``workers(node, orchestrators, activities, entities, auto_filters)`` -> started worker
    (stopped at the end, before the sidecars)."""
    started: list[worker.TaskHubGrpcWorker] = []

    def start(node: Node, orchestrators: Iterable[Callable] = (),
              activities: Iterable[Callable] = (),
              entities: Iterable[Callable] = (),
              auto_filters: bool = False) -> worker.TaskHubGrpcWorker:
        w = worker.TaskHubGrpcWorker(
            host_address=node.address, channel_options=FAST_RECONNECT,
            resiliency_options=FAST_WORKER_RESILIENCY,
            concurrency_options=worker.ConcurrencyOptions(maximum_thread_pool_workers=32),
            logger=node.sdk_logger)
        for fn in orchestrators:
            w.add_orchestrator(fn)
        for fn in activities:
            w.add_activity(fn)
        for fn in entities:
            w.add_entity(fn)
        if auto_filters:
            # Only what this worker registered is sent to it (work-item filters).
            w.use_work_item_filters()
        w.start()
        started.append(w)
        return w

    yield start
    stoppers = [threading.Thread(target=stop_worker, args=(w,), daemon=True) for w in started]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join(25)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with each node's log tail."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for node in getattr(item, "multinode_nodes", []):
            state = "running" if node.alive() else (
                f"exited with {node.proc.returncode}" if node.proc else "never started")
            report.sections.append((f"{node.name} log ({state})", node.log_tail()))
