"""The real Python SDK (durabletask) against a sidecar serving TLS with bearer tokens.

run.sh makes the CA and the server certificate and sets GRPC_DEFAULT_SSL_ROOTS_FILE_PATH
to the CA, so ``secure_channel=True`` trusts it; tokens travel as the SDK's ``metadata=``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2

from durabletask import client, task, worker
import durabletask.internal.orchestrator_service_pb2_grpc as stubs

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests" / "python"))
from _util import FAST_RECONNECT, FAST_WORKER_RESILIENCY, assert_completed, completed  # noqa: E402

TOKENS = {
    "worker": "py-worker-token-0123456789",
    "client": "py-client-token-0123456789",
    "read": "py-read-token-0123456789",
}


def sidecar_binary() -> Path:
    env = os.environ.get("SIDECAR_BIN")
    if env:
        return Path(env)
    for profile in ("release", "debug"):
        p = REPO_ROOT / "target" / profile / "durabletask-sidecar"
        if p.is_file():
            return p
    pytest.fail("no sidecar binary: build it or set SIDECAR_BIN", pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    certs = Path(os.environ.get("TLS_TEST_DIR", ""))
    if not (certs / "server.pem").is_file():
        pytest.fail("run through tests/python_tls/run.sh (it makes the certificates)", pytrace=False)
    work = tmp_path_factory.mktemp("tls")
    tokens = work / "tokens.txt"
    tokens.write_text("".join(f"{role} {token}\n" for role, token in TOKENS.items()))
    port = free_port()
    log = open(work / "sidecar.log", "wb")
    proc = subprocess.Popen(
        [str(sidecar_binary()), "--port", str(port), "--http-port", "off",
         "--db", str(work / "db.sqlite"),
         "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
         "--auth-tokens-file", str(tokens)],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sidecar did not start: {(work / 'sidecar.log').read_text()}", pytrace=False)
            time.sleep(0.05)
    yield f"localhost:{port}"
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def bearer(role: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {TOKENS[role]}")]


def hub(address: str, role: str | None) -> client.TaskHubGrpcClient:
    return client.TaskHubGrpcClient(
        host_address=address, secure_channel=True, channel_options=FAST_RECONNECT,
        metadata=bearer(role) if role else None)


def greet(_: task.ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


def hello_orchestrator(ctx: task.OrchestrationContext, name: str):
    greeting = yield ctx.call_activity(greet, input=name)
    return greeting


def test_sdk_client_and_worker_over_tls_with_tokens(sidecar):
    w = worker.TaskHubGrpcWorker(
        host_address=sidecar, secure_channel=True, metadata=bearer("worker"),
        channel_options=FAST_RECONNECT, resiliency_options=FAST_WORKER_RESILIENCY)
    w.add_orchestrator(hello_orchestrator)
    w.add_activity(greet)
    w.start()
    try:
        c = hub(sidecar, "client")
        iid = c.schedule_new_orchestration(hello_orchestrator, input="TLS",
                                           instance_id=f"tls-{uuid.uuid4().hex[:8]}")
        assert_completed(completed(c, iid), "Hello, TLS!")
        # A read token sees the result.
        state = hub(sidecar, "read").get_orchestration_state(iid)
        assert state is not None and state.serialized_output == '"Hello, TLS!"'
    finally:
        w.stop()


def rpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def test_missing_wrong_and_outside_role_tokens_are_refused(sidecar):
    err = rpc_error(lambda: hub(sidecar, None).schedule_new_orchestration(hello_orchestrator, input="x"))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
    assert "missing bearer token" in err.details()

    wrong = client.TaskHubGrpcClient(
        host_address=sidecar, secure_channel=True, channel_options=FAST_RECONNECT,
        metadata=[("authorization", "Bearer not-a-known-token-42")])
    err = rpc_error(lambda: wrong.get_orchestration_state("x"))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
    assert "not-a-known-token-42" not in err.details()

    err = rpc_error(lambda: hub(sidecar, "read").schedule_new_orchestration(hello_orchestrator, input="x"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
    assert "role `read`" in err.details() and "StartInstance" in err.details()

    err = rpc_error(lambda: hub(sidecar, "worker").get_orchestration_state("x"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err


def test_health_checks_need_no_token(sidecar):
    with grpc.secure_channel(sidecar, grpc.ssl_channel_credentials()) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
        # An empty HealthCheckRequest; the answer is `status: SERVING` (field 1 = 1).
        assert check(b"", timeout=10) == b"\x08\x01"


def test_plaintext_client_fails_cleanly(sidecar):
    with grpc.insecure_channel(sidecar) as channel:
        stub = stubs.TaskHubSidecarServiceStub(channel)
        err = rpc_error(lambda: stub.Hello(empty_pb2.Empty(), timeout=10,
                                           metadata=bearer("client")))
    # Refused at once, not left to time out.
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err
