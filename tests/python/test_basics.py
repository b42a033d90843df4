"""Basics: empty orchestration, activity sequence, fan-out/fan-in, sub-orchestrations,
falsy payloads, custom status, tags, history, unknown ids."""

from __future__ import annotations

import grpc
import pytest

import durabletask.history as history
import durabletask.internal.orchestrator_service_pb2 as pb
from durabletask import task

from _util import WAIT, Status, assert_completed, completed, js, rpc_code, wait_until

pytestmark = pytest.mark.timeout(60)


# --- orchestrators / activities --------------------------------------------------------

def basics_empty(ctx: task.OrchestrationContext, _):
    return None


def basics_say_hello(ctx: task.ActivityContext, name: str) -> str:
    return f"Hello {name}!"


def basics_greetings(ctx: task.OrchestrationContext, cities: list[str]):
    results = []
    for city in cities:
        results.append((yield ctx.call_activity(basics_say_hello, input=city)))
    return results


def basics_square(ctx: task.ActivityContext, n: int) -> int:
    return n * n


def basics_fan_out(ctx: task.OrchestrationContext, count: int):
    tasks = [ctx.call_activity(basics_square, input=i) for i in range(1, count + 1)]
    results = yield task.when_all(tasks)
    return {"results": results, "sum": sum(results)}


def basics_child(ctx: task.OrchestrationContext, name: str):
    greeting = yield ctx.call_activity(basics_say_hello, input=name)
    return {"child": ctx.instance_id, "parent": ctx.parent_instance_id, "greeting": greeting}


def basics_parent_named_child(ctx: task.OrchestrationContext, name: str):
    result = yield ctx.call_sub_orchestrator(basics_child, input=name, instance_id=f"{ctx.instance_id}-child")
    return {"from_child": result}


def basics_parent_fan_out_children(ctx: task.OrchestrationContext, names: list[str]):
    children = [ctx.call_sub_orchestrator(basics_child, input=n) for n in names]
    results = yield task.when_all(children)
    return [r["greeting"] for r in results]


def basics_echo(ctx: task.ActivityContext, value):
    return value


def basics_falsy(ctx: task.OrchestrationContext, inp):
    # Generation 1 gets {"value": v} and continues-as-new with the bare (falsy) value v;
    # generation 2 echoes v through an activity and returns [activity result, own input].
    if isinstance(inp, dict):
        ctx.continue_as_new(inp["value"])
        return None
    echoed = yield ctx.call_activity(basics_echo, input=inp)
    return [echoed, inp]


def basics_falsy_output(ctx: task.OrchestrationContext, inp):
    echoed = yield ctx.call_activity(basics_echo, input=inp)
    return echoed


def basics_custom_status(ctx: task.OrchestrationContext, _):
    ctx.set_custom_status("waiting for go")
    payload = yield ctx.wait_for_external_event("go")
    ctx.set_custom_status({"stage": "done", "payload": payload})
    return "finished"


# --- tests -------------------------------------------------------------------------------

def test_empty_orchestration_completes_with_absent_payloads(hub, start_worker, iid):
    start_worker([basics_empty])
    instance_id = hub.schedule_new_orchestration(basics_empty, instance_id=iid())
    assert instance_id == iid()
    state = completed(hub, instance_id)
    assert_completed(state, output=None, input=None)
    assert state.instance_id == instance_id
    assert state.name == "basics_empty"
    assert state.serialized_custom_status is None
    assert state.created_at <= state.last_updated_at


def test_activity_sequence_returns_greetings_in_order(hub, start_worker, iid):
    start_worker([basics_greetings], [basics_say_hello])
    cities = ["Tokyo", "Seattle", "London"]
    instance_id = hub.schedule_new_orchestration(basics_greetings, input=cities, instance_id=iid())
    state = completed(hub, instance_id)
    assert_completed(state, output=["Hello Tokyo!", "Hello Seattle!", "Hello London!"], input=cities)


def test_activity_sequence_history_has_started_scheduled_completed(hub, start_worker, iid):
    start_worker([basics_greetings], [basics_say_hello])
    instance_id = hub.schedule_new_orchestration(basics_greetings, input=["Oslo"], instance_id=iid())
    assert_completed(completed(hub, instance_id), output=["Hello Oslo!"])
    events = hub.get_orchestration_history(instance_id)
    kinds = [type(e) for e in events]
    assert history.ExecutionStartedEvent in kinds
    assert history.TaskScheduledEvent in kinds
    assert history.TaskCompletedEvent in kinds
    started = next(e for e in events if isinstance(e, history.ExecutionStartedEvent))
    assert started.name == "basics_greetings"
    assert started.input == js(["Oslo"])
    scheduled = next(e for e in events if isinstance(e, history.TaskScheduledEvent))
    done = next(e for e in events if isinstance(e, history.TaskCompletedEvent))
    assert scheduled.name == "basics_say_hello"
    assert done.task_scheduled_id == scheduled.event_id
    assert done.result == js("Hello Oslo!")
    assert all(e.timestamp is not None for e in events)


def test_history_of_unknown_instance_raises_not_found(hub, iid):
    with pytest.raises(grpc.RpcError) as ei:
        hub.get_orchestration_history(iid("missing"))
    assert rpc_code(ei) == grpc.StatusCode.NOT_FOUND


def test_fan_out_fan_in_sums_ten_activities(hub, start_worker, iid):
    start_worker([basics_fan_out], [basics_square])
    instance_id = hub.schedule_new_orchestration(basics_fan_out, input=10, instance_id=iid())
    state = completed(hub, instance_id)
    squares = [i * i for i in range(1, 11)]
    assert_completed(state, output={"results": squares, "sum": 385}, input=10)


def test_sub_orchestration_output_surfaces_in_parent(hub, start_worker, raw_stub, iid):
    start_worker([basics_parent_named_child, basics_child], [basics_say_hello])
    parent_id = hub.schedule_new_orchestration(basics_parent_named_child, input="Kyoto", instance_id=iid("p"))
    child_id = f"{parent_id}-child"
    state = completed(hub, parent_id)
    child_result = {"child": child_id, "parent": parent_id, "greeting": "Hello Kyoto!"}
    assert_completed(state, output={"from_child": child_result}, input="Kyoto")

    child = completed(hub, child_id)
    assert_completed(child, output=child_result, input="Kyoto")
    assert child.name == "basics_child"
    raw = raw_stub.GetInstance(pb.GetInstanceRequest(instanceId=child_id, getInputsAndOutputs=False))
    assert raw.exists
    assert raw.orchestrationState.parentInstanceId.value == parent_id
    assert not raw.orchestrationState.HasField("input"), "input must be absent without getInputsAndOutputs"


def test_sub_orchestration_fan_out_with_default_child_ids(hub, start_worker, iid):
    start_worker([basics_parent_fan_out_children, basics_child], [basics_say_hello])
    names = ["A", "B", "C"]
    parent_id = hub.schedule_new_orchestration(basics_parent_fan_out_children, input=names, instance_id=iid())
    state = completed(hub, parent_id)
    assert_completed(state, output=["Hello A!", "Hello B!", "Hello C!"])
    # Python SDK default child ids are "<parent>:<seq as 4 hex>": all children are queryable.
    from durabletask.client import OrchestrationQuery
    children = [s for s in hub.get_all_orchestration_states(
        OrchestrationQuery(instance_id_prefix=parent_id + ":", fetch_inputs_and_outputs=True))]
    assert len(children) == 3
    assert all(s.runtime_status == Status.COMPLETED for s in children)
    assert sorted(s.get_input() for s in children) == names


@pytest.mark.parametrize("value", [0, "", False, None], ids=["zero", "empty_string", "false", "null"])
def test_falsy_payloads_round_trip(hub, start_worker, iid, value):
    start_worker([basics_falsy, basics_falsy_output], [basics_echo])

    direct_id = hub.schedule_new_orchestration(basics_falsy_output, input=value, instance_id=iid("direct"))
    direct = completed(hub, direct_id)
    assert_completed(direct, output=value, input=value)
    assert direct.get_output() == value

    can_id = hub.schedule_new_orchestration(basics_falsy, input={"value": value}, instance_id=iid("can"))
    state = completed(hub, can_id)
    # Input of the last generation is the bare falsy value; output echoes it through an activity.
    assert_completed(state, output=[value, value], input=value)


def test_get_orchestration_state_of_unknown_id_returns_none(hub, iid):
    assert hub.get_orchestration_state(iid("nope")) is None
    assert hub.get_orchestration_state(iid("nope"), fetch_payloads=False) is None


def test_wait_for_completion_of_unknown_id_returns_none(hub, iid):
    assert hub.wait_for_orchestration_completion(iid("nope"), timeout=10) is None


def test_custom_status_visible_mid_run_and_final_value(hub, start_worker, iid):
    start_worker([basics_custom_status])
    instance_id = hub.schedule_new_orchestration(basics_custom_status, instance_id=iid())

    def mid_run():
        st = hub.get_orchestration_state(instance_id)
        return st if st is not None and st.serialized_custom_status == js("waiting for go") else None
    st = wait_until(mid_run, timeout=15, what="custom status 'waiting for go'")
    assert st.runtime_status == Status.RUNNING
    assert st.get_custom_status() == "waiting for go"

    hub.raise_orchestration_event(instance_id, "go", data=7)
    state = completed(hub, instance_id)
    assert_completed(state, output="finished")
    assert state.serialized_custom_status == js({"stage": "done", "payload": 7})


def test_tags_round_trip(hub, start_worker, raw_stub, iid):
    start_worker([basics_empty])
    tags = {"env": "e2e", "team": "sidecar", "empty": ""}
    instance_id = hub.schedule_new_orchestration(basics_empty, instance_id=iid(), tags=tags)
    assert_completed(completed(hub, instance_id))
    raw = raw_stub.GetInstance(pb.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=True))
    assert raw.exists
    assert dict(raw.orchestrationState.tags) == tags
    assert raw.orchestrationState.HasField("completedTimestamp")
    assert raw.orchestrationState.HasField("createdTimestamp")
    assert raw.orchestrationState.executionId.value != ""
    assert not raw.orchestrationState.HasField("failureDetails")
