"""Two task hubs at once through the Durable Task Scheduler SDK (durabletask-azuremanaged):
each hub has its own DurableTaskSchedulerWorker and DurableTaskSchedulerClient, made from an
emulator-style connection string. The same orchestration, activity and entity names are
registered in both with different behaviour, so every result shows which hub's worker ran
it; instance ids are reused across the hubs on purpose."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from durabletask import client, entities, task, worker
from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient, DurableTaskSchedulerClient
from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

from _util import wait_until
from conftest import dts_kwargs

HUBS = ("orders", "billing")
WAIT = 30
Status = client.OrchestrationStatus


def make_worker(hub: str, cs: str) -> worker.TaskHubGrpcWorker:
    """A worker whose orchestrator, activity and entity all stamp results with ``hub``."""

    def stamp(ctx: task.ActivityContext, name: str) -> str:
        return f"{hub}:{name}"

    def greet(ctx: task.OrchestrationContext, name: str):
        stamped = yield ctx.call_activity(stamp, input=name)
        return f"hello {stamped}"

    def counter(ctx: entities.EntityContext, value: int):
        # Different arithmetic per hub: the state says which hub's worker ran the operation.
        step = 1 if hub == "orders" else 100
        if ctx.operation == "add":
            ctx.set_state(ctx.get_state(int, 0) + value * step)
        return None

    w = DurableTaskSchedulerWorker(**dts_kwargs(cs))
    w.add_orchestrator(greet)
    w.add_activity(stamp)
    w.add_entity(counter)
    if hub == "orders":
        # Registered in one hub only: an instance of it in the other hub must not run here.
        def orders_only(ctx: task.OrchestrationContext, _):
            return "ran in orders"
        w.add_orchestrator(orders_only)
    return w


@pytest.fixture(scope="module")
def hubs(sidecar, connection_string):
    """{hub: client}, with both hubs' workers running for the whole module."""
    workers = []
    clients = {}
    try:
        for hub in HUBS:
            w = make_worker(hub, connection_string(hub))
            w.start()
            workers.append(w)
            clients[hub] = DurableTaskSchedulerClient(**dts_kwargs(connection_string(hub)))
        yield clients
    finally:
        for c in clients.values():
            c.close()
        for w in workers:
            w.stop()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_connection_string_maps_to_an_insecure_channel_without_credential(connection_string, sidecar):
    kwargs = dts_kwargs(connection_string("orders"))
    assert kwargs == {"host_address": f"http://localhost:{sidecar.port}", "taskhub": "orders",
                      "token_credential": None, "secure_channel": False}


def test_same_instance_id_runs_on_each_hubs_own_worker(sidecar, hubs):
    iid = new_id("order-1")
    for hub, c in hubs.items():
        assert c.schedule_new_orchestration("greet", input=hub.upper(), instance_id=iid) == iid
    for hub, c in hubs.items():
        state = c.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert state is not None and state.runtime_status == Status.COMPLETED, state
        assert state.serialized_input == f'"{hub.upper()}"'
        assert state.serialized_output == f'"hello {hub}:{hub.upper()}"'


def test_a_worker_never_receives_the_other_hubs_work(sidecar, hubs):
    iid = new_id("only")
    hubs["orders"].schedule_new_orchestration("orders_only", instance_id=iid)
    done = hubs["orders"].wait_for_orchestration_completion(iid, timeout=WAIT)
    assert done.runtime_status == Status.COMPLETED and done.serialized_output == '"ran in orders"'

    # In billing the name is unknown to its worker, which is the only one that gets the work
    # item: it fails the instance (the orders worker, which knows the name, never sees it).
    hubs["billing"].schedule_new_orchestration("orders_only", instance_id=iid)
    failed = hubs["billing"].wait_for_orchestration_completion(iid, timeout=WAIT)
    assert failed.runtime_status == Status.FAILED, failed
    assert "orders_only" in failed.failure_details.message


def test_entities_are_per_hub(sidecar, hubs):
    key = new_id("acct")
    eid = entities.EntityInstanceId("counter", key)
    for c in hubs.values():
        c.signal_entity(eid, "add", 3)
        c.signal_entity(eid, "add", 4)

    def state_of(hub):
        meta = hubs[hub].get_entity(eid)
        return meta is not None and meta.get_state(int)
    assert wait_until(lambda: state_of("orders") == 7, timeout=WAIT, what="orders counter at 7")
    assert wait_until(lambda: state_of("billing") == 700, timeout=WAIT, what="billing counter at 700")

    only = entities.EntityInstanceId("counter", new_id("billing-only"))
    hubs["billing"].signal_entity(only, "add", 1)
    wait_until(lambda: hubs["billing"].get_entity(only) is not None, timeout=WAIT, what="billing-only entity")
    assert hubs["orders"].get_entity(only) is None
    names = {h: {str(e.id) for e in c.get_all_entities(client.EntityQuery(include_state=False))}
             for h, c in hubs.items()}
    assert str(eid) in names["orders"] and str(eid) in names["billing"]
    assert str(only) in names["billing"] and str(only) not in names["orders"]


def test_queries_and_purge_see_one_hub(sidecar, hubs, connection_string):
    shared = new_id("shared")
    solo = new_id("orders-solo")
    for c in hubs.values():
        c.schedule_new_orchestration("greet", input="q", instance_id=shared)
    hubs["orders"].schedule_new_orchestration("greet", input="q", instance_id=solo)
    for iid, hub_names in ((shared, HUBS), (solo, ("orders",))):
        for hub in hub_names:
            assert hubs[hub].wait_for_orchestration_completion(iid, timeout=WAIT).runtime_status == Status.COMPLETED

    ids = {h: {s.instance_id for s in c.get_all_orchestration_states(client.OrchestrationQuery())}
           for h, c in hubs.items()}
    assert {shared, solo} <= ids["orders"]
    assert shared in ids["billing"] and solo not in ids["billing"]
    assert hubs["billing"].get_orchestration_state(solo) is None

    # Hub names are case-insensitive: ORDERS is the same hub as orders.
    upper = DurableTaskSchedulerClient(**dts_kwargs(connection_string("ORDERS")))
    try:
        assert upper.get_orchestration_state(solo).runtime_status == Status.COMPLETED
    finally:
        upper.close()

    result = hubs["orders"].purge_orchestration(shared)
    assert result.deleted_instance_count == 1
    assert hubs["orders"].get_orchestration_state(shared) is None
    kept = hubs["billing"].get_orchestration_state(shared)
    assert kept is not None and kept.serialized_output == '"hello billing:q"'


def test_default_hub_and_hub_files(sidecar, hubs):
    # A plain client (no taskhub metadata) talks to the default hub, which holds none of it.
    iid = new_id("default-check")
    hubs["orders"].schedule_new_orchestration("greet", input="d", instance_id=iid)
    hubs["orders"].wait_for_orchestration_completion(iid, timeout=WAIT)
    plain = client.TaskHubGrpcClient(host_address=sidecar.address)
    try:
        assert plain.get_orchestration_state(iid) is None
    finally:
        plain.close()
    # Each named hub is its own SQLite file next to the --db file.
    files = {p.name for p in Path(f"{sidecar.db}.hubs").iterdir()}
    assert {"orders.sqlite", "billing.sqlite"} <= files


def test_async_client_on_a_hub(sidecar, hubs, connection_string):
    iid = new_id("async")

    async def run():
        async with AsyncDurableTaskSchedulerClient(**dts_kwargs(connection_string("billing"))) as c:
            await c.schedule_new_orchestration("greet", input="a", instance_id=iid)
            return await c.wait_for_orchestration_completion(iid, timeout=WAIT)

    state = asyncio.run(run())
    assert state.runtime_status == Status.COMPLETED and state.serialized_output == '"hello billing:a"'
    assert hubs["orders"].get_orchestration_state(iid) is None
