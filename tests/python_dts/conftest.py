"""Fixtures for the Durable Task Scheduler SDK suite (durabletask-azuremanaged).

* ``sidecar``        - one sidecar for the session: free loopback ports, a SQLite file in a
                       temporary directory (removed at the end; KEEP_SIDECAR_DIR=1 keeps it).
* ``connection_string(hub)`` - the string an app written for the DTS emulator carries,
                       pointing at this sidecar.
* ``dts_kwargs(cs)`` - the constructor arguments the SDK takes for such a string (the
                       Python package has no connection-string parser; its samples map an
                       endpoint and a hub name to these arguments the same way).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2

import durabletask.internal.orchestrator_service_pb2_grpc as stubs

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_DEADLINE_S = 30.0


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
    pytest.fail("durabletask-sidecar binary not found: set SIDECAR_BIN or build it", pytrace=False)
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hello_ok(address: str) -> bool:
    channel = grpc.insecure_channel(address)
    try:
        stubs.TaskHubSidecarServiceStub(channel).Hello(empty_pb2.Empty(), timeout=0.5, wait_for_ready=True)
        return True
    except grpc.RpcError:
        return False
    finally:
        channel.close()


class Sidecar:
    def __init__(self, proc: subprocess.Popen, port: int, db: Path, log: Path):
        self.proc = proc
        self.port = port
        self.db = db
        self.log = log

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no sidecar log)"
        return "\n".join(text[-lines:])


@pytest.fixture(scope="session")
def sidecar():
    binary = find_sidecar_binary()
    workdir = Path(tempfile.mkdtemp(prefix="dts-sdk-"))
    db = workdir / "sidecar.sqlite"
    log = workdir / "sidecar.log"
    sc = None
    try:
        # A port taken between free_port() and bind makes the sidecar exit: try again.
        for _ in range(3):
            port = free_port()
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [str(binary), "--host", "127.0.0.1", "--port", str(port), "--http-port", "off",
                     "--db", str(db), "--log-level", "warn"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
            sc = Sidecar(proc, port, db, log)
            deadline = time.monotonic() + STARTUP_DEADLINE_S
            while proc.poll() is None and time.monotonic() < deadline and not hello_ok(sc.address):
                time.sleep(0.05)
            if proc.poll() is None:
                break
        if sc is None or sc.proc.poll() is not None or not hello_ok(sc.address):
            pytest.fail(f"the sidecar did not come up\n{sc.log_tail() if sc else ''}", pytrace=False)
        yield sc
    finally:
        if sc is not None and sc.proc.poll() is None:
            sc.proc.send_signal(signal.SIGTERM)
            try:
                sc.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sc.proc.kill()
                sc.proc.wait(timeout=10)
        if os.environ.get("KEEP_SIDECAR_DIR") != "1":
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def connection_string(sidecar):
    def make(hub: str) -> str:
        # Exactly the emulator's form, with the sidecar's port instead of the emulator's.
        return f"Endpoint=http://localhost:{sidecar.port};Authentication=None;TaskHub={hub}"
    return make


def dts_kwargs(connection_string: str) -> dict[str, Any]:
    """``host_address``/``taskhub``/``token_credential``/``secure_channel`` for a DTS
    connection string with ``Authentication=None``."""
    parts = {}
    for item in connection_string.split(";"):
        if item.strip():
            key, _, value = item.partition("=")
            parts[key.strip().lower()] = value.strip()
    if parts.get("authentication", "").lower() != "none":
        raise ValueError(f"only Authentication=None is used here: {connection_string!r}")
    endpoint = parts["endpoint"]
    return {
        # The SDK strips http:// and then opens an insecure channel.
        "host_address": endpoint,
        "taskhub": parts["taskhub"],
        "token_credential": None,
        "secure_channel": endpoint.lower().startswith("https://"),
    }


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        sc = item.funcargs.get("sidecar") if hasattr(item, "funcargs") else None
        if isinstance(sc, Sidecar):
            rep.sections.append(("sidecar log", sc.log_tail()))
