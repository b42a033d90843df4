"""The HTTP API (Durable Functions' routes) with the real Python SDK worker doing the work:
start over HTTP -> 202 management payload -> raise the event through sendEventPostUri ->
follow statusQueryGetUri (Location) until 200 with the output; wait-or-check-status;
terminate and its 410 afterwards; purge; an entity signalled and read over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from durabletask import entities, task

from _util import WAIT, wait_until

pytestmark = pytest.mark.timeout(90)

BASE = "/runtime/webhooks/durabletask"


def call(method: str, url: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    """One HTTP request; JSON in and out. Returns (status, headers, parsed body or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as resp:
            status, headers, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        status, headers, raw = err.code, dict(err.headers), err.read()
    return status, {k.lower(): v for k, v in headers.items()}, (json.loads(raw) if raw else None)


def http_greet(ctx: task.OrchestrationContext, who: dict):
    approved = yield ctx.wait_for_external_event("Approval")
    greeting = yield ctx.call_activity(http_hello, input=who["name"])
    return {"greeting": greeting, "approved": approved}


def http_hello(ctx: task.ActivityContext, name: str) -> str:
    return f"Hello {name}!"


def http_quick(ctx: task.OrchestrationContext, n: int):
    return n * 2


def http_counter(ctx: entities.EntityContext, value):
    if ctx.operation == "add":
        ctx.set_state(ctx.get_state(int, 0) + value)


def test_start_raise_and_follow_the_status_uri_to_the_output(sidecar, start_worker, iid):
    start_worker([http_greet, http_quick], [http_hello])
    api = sidecar.http_base + BASE
    instance = iid("greet")

    status, headers, payload = call("POST", f"{api}/orchestrators/http_greet/{instance}", {"name": "Lima"})
    assert status == 202, payload
    assert payload["id"] == instance
    assert headers["location"] == payload["statusQueryGetUri"]
    assert payload["statusQueryGetUri"].startswith(sidecar.http_base)
    for field in ("sendEventPostUri", "terminatePostUri", "purgeHistoryDeleteUri", "rewindPostUri",
                  "suspendPostUri", "resumePostUri", "restartPostUri"):
        assert payload[field].startswith(payload["statusQueryGetUri"]), field

    # Waiting for the event: the status says Running (202) once the worker has run it.
    def running():
        s, h, body = call("GET", payload["statusQueryGetUri"])
        return (s, body["runtimeStatus"], h.get("location")) if body["runtimeStatus"] == "Running" else None
    s, _, location = wait_until(running, what="Running")
    assert s == 202 and location == payload["statusQueryGetUri"]

    raise_url = payload["sendEventPostUri"].replace("{eventName}", "Approval")
    assert call("POST", raise_url, {"by": "ops"})[0] == 202

    # Poll Location until 200, the Polling Consumer pattern the 202 was made for.
    def finished():
        s, _, body = call("GET", headers["location"])
        return (s, body) if s == 200 else None
    s, body = wait_until(finished, timeout=WAIT, what="200 from statusQueryGetUri")
    assert body["runtimeStatus"] == "Completed"
    assert body["output"] == {"greeting": "Hello Lima!", "approved": {"by": "ops"}}
    assert body["input"] == {"name": "Lima"}
    assert body["createdTime"].endswith("Z")

    _, _, with_history = call("GET", headers["location"] + "?showHistory=true&showHistoryOutput=true")
    kinds = [e["EventType"] for e in with_history["historyEvents"]]
    assert kinds[0] == "ExecutionStarted" and kinds[-1] == "ExecutionCompleted"
    assert "EventRaised" in kinds and "TaskCompleted" in kinds

    # Finished: events and terminate are Gone; purge works once.
    assert call("POST", raise_url, 1)[0] == 410
    assert call("POST", payload["terminatePostUri"].replace("{text}", "late"))[0] == 410
    status, _, purged = call("DELETE", payload["purgeHistoryDeleteUri"])
    assert (status, purged) == (200, {"instancesDeleted": 1})
    assert call("GET", payload["statusQueryGetUri"])[0] == 404


def test_wait_or_check_status_and_terminate(sidecar, start_worker, iid):
    start_worker([http_greet, http_quick], [http_hello])
    api = sidecar.http_base + BASE

    status, _, output = call("POST", f"{api}/orchestrators/http_quick/{iid('quick')}?timeout=20", 21)
    assert (status, output) == (200, 42)

    waiting = iid("waiting")
    status, _, payload = call("POST", f"{api}/orchestrators/http_greet/{waiting}?timeout=0.5", {"name": "x"})
    assert status == 202 and payload["id"] == waiting
    assert call("POST", f"{api}/instances/{waiting}/terminate?reason=stop")[0] == 202

    def terminated():
        s, _, body = call("GET", f"{api}/instances/{waiting}")
        return body if s == 200 else None
    body = wait_until(terminated, timeout=WAIT, what="Terminated")
    assert body["runtimeStatus"] == "Terminated"
    assert body["output"] == "stop"
    assert call("POST", f"{api}/instances/{waiting}/suspend")[0] == 410


def test_entity_signalled_over_http_is_run_by_the_sdk(sidecar, start_worker, iid):
    start_worker([], [], entities=[http_counter])
    api = sidecar.http_base + BASE
    key = iid("c")
    for n in (1, 2, 3):
        assert call("POST", f"{api}/entities/http_counter/{key}?op=add", n)[0] == 202

    def state():
        s, _, body = call("GET", f"{api}/entities/http_counter/{key}")
        return body if s == 200 and body == 6 else None
    assert wait_until(state, timeout=WAIT, what="entity state 6") == 6
    _, _, listed = call("GET", f"{api}/entities/http_counter?fetchState=true")
    assert {"entityId": {"name": "http_counter", "key": key}, "state": 6} in [
        {k: e[k] for k in ("entityId", "state")} for e in listed]
