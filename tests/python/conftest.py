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
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable

import grpc
import pytest

from durabletask import worker
import durabletask.internal.orchestrator_service_pb2_grpc as stubs

from _sidecar import (POSTGRES_URL_VAR, Sidecar, add_log_tails, find_sidecar_binary, free_port,
                      sidecar_in_temp_dir)
from _util import FAST_RECONNECT, FAST_WORKER_RESILIENCY, make_client


def postgres_admin_url() -> str | None:
    return os.environ.get(POSTGRES_URL_VAR, "").strip() or None


@pytest.fixture(scope="session")
def sidecar_binary() -> Path:
    return find_sidecar_binary()


@pytest.fixture(scope="session")
def _session_sidecar(sidecar_binary):
    # Each run leaves ~160 MB of databases and logs, removed unless KEEP_SIDECAR_DIR=1.
    with sidecar_in_temp_dir("dts-e2e-", sidecar_binary, postgres_admin_url=postgres_admin_url()) as sc:
        yield sc


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
    sc = Sidecar(sidecar_binary, tmp_path, "private-sidecar", postgres_admin_url=postgres_admin_url())
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
    add_log_tails(item, outcome.get_result())
