"""One orchestration traced end to end through the sidecar.

The test starts an OTLP/HTTP receiver (http.server decoding ``ExportTraceServiceRequest``
with ``opentelemetry-proto``), the sidecar binary exporting to it (``--otlp-endpoint``),
and the Python SDK's client and worker with OpenTelemetry on, exporting to the same
receiver. An orchestration with an activity, a timer and a sub-orchestration runs; then
the client's span, the sidecar's spans (RPC, orchestration episodes, activity, timer,
sub-orchestration) and the worker's spans must share one trace id.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import inject
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from durabletask import client, task, worker
import durabletask.internal.orchestrator_service_pb2_grpc as stubs

SIDECAR_SERVICE = "durabletask-sidecar"
APP_SERVICE = "trace-test-app"
DEADLINE_S = 60.0


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str
    attributes: dict[str, str] = field(default_factory=dict)


class Receiver:
    """A minimal OTLP/HTTP protobuf trace receiver on /v1/traces."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        from opentelemetry.proto.trace.v1 import trace_pb2
        found = []
        for rs in request.resource_spans:
            resource = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    found.append(Span(
                        service=resource.get("service.name", ""),
                        name=s.name,
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        kind=trace_pb2.Span.SpanKind.Name(s.kind),
                        attributes={a.key: (a.value.string_value or str(a.value.int_value))
                                    for a in s.attributes},
                    ))
        with self.lock:
            self.spans.extend(found)

    def snapshot(self) -> list[Span]:
        with self.lock:
            return list(self.spans)

    def close(self) -> None:
        self.server.shutdown()


class TraceparentInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Adds the current span's W3C `traceparent` to each unary call's metadata, as gRPC
    instrumentation does (the SDK itself sends the context only inside its messages)."""

    def intercept_unary_unary(self, continuation, details, request):
        carrier: dict[str, str] = {}
        inject(carrier)
        metadata = list(details.metadata or []) + list(carrier.items())
        return continuation(details._replace(metadata=metadata), request)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@contextmanager
def running_sidecar(args: list[str], env: dict[str, str]):
    """The sidecar binary on a free port and a fresh SQLite file; yields its address once
    it answers Hello. `env` is added to an environment without OTEL_* variables."""
    binary = os.environ.get("SIDECAR_BIN")
    assert binary, "SIDECAR_BIN must name the sidecar binary (run.sh sets it)"
    workdir = Path(tempfile.mkdtemp(prefix="dt-trace-"))
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    # Export each batch within 100 ms instead of 5 s, so the polling below ends soon.
    base["OTEL_BSP_SCHEDULE_DELAY"] = "100"
    with open(workdir / "sidecar.log", "wb") as log:
        proc = subprocess.Popen(
            [binary, "--host", "127.0.0.1", "--port", str(port), "--http-port", "off",
             "--db", str(workdir / "sidecar.sqlite"), "--log-level", "info", *args],
            stdout=log, stderr=subprocess.STDOUT, env={**base, **env})
        try:
            address = f"127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, f"the sidecar exited: {(workdir / 'sidecar.log').read_text()}"
                with grpc.insecure_channel(address) as channel:
                    try:
                        stubs.TaskHubSidecarServiceStub(channel).Hello(empty_pb2.Empty(), timeout=0.5)
                        break
                    except grpc.RpcError:
                        assert time.monotonic() < deadline, "the sidecar did not answer Hello in 30 s"
                time.sleep(0.05)
            yield address
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def sidecar(receiver):
    with running_sidecar(["--otlp-endpoint", receiver.url], {}) as address:
        yield address


@pytest.fixture(scope="module")
def sdk_tracing(receiver):
    """The SDK's spans go to the same receiver, one by one."""
    provider = TracerProvider(resource=Resource.create({"service.name": APP_SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces")))
    trace.set_tracer_provider(provider)
    yield provider
    provider.shutdown()


def hello(ctx: task.ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


def child(ctx: task.OrchestrationContext, name: str):
    greeting = yield ctx.call_activity(hello, input=name)
    return greeting


def parent(ctx: task.OrchestrationContext, name: str):
    first = yield ctx.call_activity(hello, input=name)
    yield ctx.create_timer(timedelta(milliseconds=300))
    second = yield ctx.call_sub_orchestrator(child, input=name, instance_id=f"{ctx.instance_id}-child")
    return [first, second]


def wait_for(receiver: Receiver, predicate, what: str) -> list[Span]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        spans = receiver.snapshot()
        if predicate(spans):
            return spans
        if time.monotonic() > deadline:
            seen = sorted({(s.service, s.name) for s in spans})
            raise AssertionError(f"timed out waiting for {what}; spans seen: {seen}")
        time.sleep(0.1)


def one(spans: list[Span], **want) -> Span:
    match = [s for s in spans if all(getattr(s, k) == v for k, v in want.items())]
    assert match, f"no span with {want}"
    return match[0]


def test_client_sidecar_and_worker_share_one_trace(sidecar, sdk_tracing, receiver):
    w = worker.TaskHubGrpcWorker(host_address=sidecar)
    w.add_orchestrator(parent)
    w.add_orchestrator(child)
    w.add_activity(hello)
    w.start()
    try:
        # The client's calls carry `traceparent` metadata, which the sidecar's RPC spans
        # take as their parent.
        c = client.TaskHubGrpcClient(host_address=sidecar, interceptors=[TraceparentInterceptor()])
        iid = f"traced-{os.getpid()}-{time.monotonic_ns()}"
        c.schedule_new_orchestration(parent, input="tracing", instance_id=iid)
        state = c.wait_for_orchestration_completion(iid, timeout=60)
        assert state is not None and state.runtime_status == client.OrchestrationStatus.COMPLETED, state
    finally:
        w.stop()
    child_id = f"{iid}-child"

    def sidecar_named(spans, name, instance):
        return [s for s in spans if s.service == SIDECAR_SERVICE and s.name == name
                and s.attributes.get("durabletask.task.instance_id") == instance]

    def complete(spans):
        return (any(s.attributes.get("durabletask.task.status") == "Completed"
                    for s in sidecar_named(spans, "orchestration:parent", iid))
                and sidecar_named(spans, "orchestration:child", child_id)
                and sidecar_named(spans, "activity:hello", iid)
                and sidecar_named(spans, "activity:hello", child_id)
                and sidecar_named(spans, "orchestration:parent:timer", iid)
                and any(s.service == APP_SERVICE and s.name == "orchestration:parent" for s in spans))
    spans = wait_for(receiver, complete, "the spans of the orchestration")

    # The client's span starts the trace.
    created = one(spans, service=APP_SERVICE, name="create_orchestration:parent")
    assert created.attributes["durabletask.task.instance_id"] == iid
    trace_id = created.trace_id
    in_trace = [s for s in spans if s.trace_id == trace_id]
    ids = {s.span_id for s in in_trace}

    # The sidecar's StartInstance RPC span, a child of the client's span.
    rpc = one(in_trace, service=SIDECAR_SERVICE, name="TaskHubSidecarService/StartInstance")
    assert rpc.kind == "SPAN_KIND_SERVER"
    assert rpc.attributes["rpc.system"] == "grpc"
    assert rpc.attributes["rpc.method"] == "StartInstance"
    assert rpc.attributes["rpc.grpc.status_code"] == "0"
    assert rpc.parent_span_id == created.span_id

    # The sidecar's episodes of the parent: children of the client's span.
    episodes = sidecar_named(in_trace, "orchestration:parent", iid)
    assert len(episodes) >= 3, episodes  # start, after the activity, the timer, the child
    for e in episodes:
        assert e.kind == "SPAN_KIND_SERVER"
        assert e.parent_span_id == created.span_id
        assert e.attributes["durabletask.type"] == "orchestration"
        assert e.attributes["durabletask.task.name"] == "parent"
    assert [e.attributes.get("durabletask.task.status") for e in episodes].count("Completed") == 1

    # The sidecar's activity span and the worker's share the parent the orchestration
    # gave the task (the worker's CLIENT span for it).
    activity = sidecar_named(in_trace, "activity:hello", iid)[0]
    assert activity.attributes["durabletask.type"] == "activity"
    assert activity.attributes["durabletask.task.status"] == "Completed"
    worker_activity = [s for s in in_trace if s.service == APP_SERVICE and s.name == "activity:hello"
                       and s.kind == "SPAN_KIND_SERVER"
                       and s.attributes.get("durabletask.task.instance_id") == iid]
    assert worker_activity, "the worker's activity span is not in the trace"
    assert worker_activity[0].parent_span_id == activity.parent_span_id
    assert (activity.attributes["durabletask.task.task_id"]
            == worker_activity[0].attributes["durabletask.task.task_id"])
    assert activity.parent_span_id in ids

    # The timer.
    timer = sidecar_named(in_trace, "orchestration:parent:timer", iid)[0]
    assert timer.kind == "SPAN_KIND_INTERNAL"
    assert timer.attributes["durabletask.type"] == "timer"
    assert "durabletask.fire_at" in timer.attributes

    # The sub-orchestration: its episodes and its activity are in the same trace, its
    # episodes children of the span the parent orchestration gave the child.
    child_episodes = sidecar_named(in_trace, "orchestration:child", child_id)
    assert child_episodes
    assert all(e.parent_span_id in ids for e in child_episodes)
    assert sidecar_named(in_trace, "activity:hello", child_id)

    # The worker's orchestration span, in the same trace.
    worker_orch = one(in_trace, service=APP_SERVICE, name="orchestration:parent")
    assert worker_orch.parent_span_id == created.span_id


def test_standard_variables_turn_export_on(receiver):
    """Without the flag, OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME configure it."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "sidecar-from-env"}
    with running_sidecar([], env):
        pass
    spans = wait_for(receiver, lambda spans: any(s.service == "sidecar-from-env" for s in spans),
                     "a span of the sidecar named by OTEL_SERVICE_NAME")
    hello = one(spans, service="sidecar-from-env", name="TaskHubSidecarService/Hello")
    assert hello.parent_span_id == ""  # no traceparent sent: a trace of its own
