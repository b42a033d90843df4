"""Queries (QueryInstances paging, filters, payload presence), ListInstanceIds and purge."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from google.protobuf import wrappers_pb2

import durabletask.internal.orchestrator_service_pb2 as pb
from durabletask import task
from durabletask.client import OrchestrationQuery

from _util import Status, assert_completed, completed, js, wait_for_status

pytestmark = pytest.mark.timeout(90)


def qp_done(ctx: task.OrchestrationContext, inp):
    return {"echo": inp}


def qp_fail(ctx: task.OrchestrationContext, inp):
    raise ValueError(f"qp_fail says no to {inp}")


def qp_wait(ctx: task.OrchestrationContext, _):
    value = yield ctx.wait_for_external_event("go")
    return value


def qp_child(ctx: task.OrchestrationContext, inp):
    return inp * 2


def qp_parent(ctx: task.OrchestrationContext, inp):
    result = yield ctx.call_sub_orchestrator(qp_child, input=inp, instance_id=f"{ctx.instance_id}-child")
    return result


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _window_start() -> datetime:
    # Keep instances of earlier tests out of created-time windows.
    time.sleep(0.05)
    t = _now()
    time.sleep(0.05)
    return t


def _window_end() -> datetime:
    time.sleep(0.05)
    return _now()


# --- query ---------------------------------------------------------------------------------

def test_query_paging_with_page_size_two_returns_all_instances(hub, start_worker, iid):
    start_worker([qp_done])
    prefix = iid("q")
    ids = [hub.schedule_new_orchestration(qp_done, input=i, instance_id=f"{prefix}{i}") for i in range(5)]
    for i, instance_id in enumerate(ids):
        assert_completed(completed(hub, instance_id), output={"echo": i})

    without = hub.get_all_orchestration_states(OrchestrationQuery(instance_id_prefix=prefix, max_instance_count=2))
    assert sorted(s.instance_id for s in without) == sorted(ids)
    for s in without:
        assert s.runtime_status == Status.COMPLETED
        assert s.name == "qp_done"
        assert s.serialized_input is None and s.serialized_output is None, "payloads must be absent"

    with_payloads = hub.get_all_orchestration_states(OrchestrationQuery(
        instance_id_prefix=prefix, max_instance_count=2, fetch_inputs_and_outputs=True))
    by_id = {s.instance_id: s for s in with_payloads}
    assert sorted(by_id) == sorted(ids)
    for i, instance_id in enumerate(ids):
        assert by_id[instance_id].serialized_input == js(i)
        assert by_id[instance_id].serialized_output == js({"echo": i})
        assert by_id[instance_id].failure_details is None


def test_query_pages_are_bounded_and_token_ends_paging(hub, start_worker, raw_stub, iid):
    start_worker([qp_done])
    prefix = iid("pg")
    ids = [hub.schedule_new_orchestration(qp_done, input=i, instance_id=f"{prefix}{i}") for i in range(5)]
    for instance_id in ids:
        completed(hub, instance_id)

    seen: list[str] = []
    token = None
    pages = 0
    while True:
        query = pb.InstanceQuery(instanceIdPrefix=wrappers_pb2.StringValue(value=prefix), maxInstanceCount=2,
                                 continuationToken=token)
        resp = raw_stub.QueryInstances(pb.QueryInstancesRequest(query=query))
        pages += 1
        assert 1 <= len(resp.orchestrationState) <= 2, f"page {pages} has {len(resp.orchestrationState)} items"
        seen += [s.instanceId for s in resp.orchestrationState]
        if not resp.HasField("continuationToken"):
            break
        assert resp.continuationToken.value not in ("", "0")
        token = resp.continuationToken
        assert pages < 10, "paging does not terminate"
    assert pages == 3
    assert len(seen) == len(set(seen)) == 5
    assert sorted(seen) == sorted(ids)


def test_query_by_status_and_created_window(hub, start_worker, iid):
    start_worker([qp_done, qp_fail])
    t0 = _window_start()
    ok_id = hub.schedule_new_orchestration(qp_done, input="ok", instance_id=iid("ok"))
    bad_id = hub.schedule_new_orchestration(qp_fail, input="bad", instance_id=iid("bad"))
    assert_completed(completed(hub, ok_id))
    assert completed(hub, bad_id).runtime_status == Status.FAILED
    t1 = _window_end()

    def query(**kw):
        return {s.instance_id: s for s in hub.get_all_orchestration_states(OrchestrationQuery(**kw))}

    in_window = query(created_time_from=t0, created_time_to=t1)
    assert set(in_window) == {ok_id, bad_id}

    failed = query(created_time_from=t0, created_time_to=t1, runtime_status=[Status.FAILED],
                   fetch_inputs_and_outputs=True)
    assert set(failed) == {bad_id}
    details = failed[bad_id].failure_details
    assert details is not None and "qp_fail says no to bad" in details.message
    assert failed[bad_id].serialized_input == js("bad")

    done = query(created_time_from=t0, created_time_to=t1, runtime_status=[Status.COMPLETED, Status.RUNNING])
    assert set(done) == {ok_id}
    assert done[ok_id].failure_details is None

    later = query(created_time_from=t1, created_time_to=t1 + timedelta(hours=1))
    assert ok_id not in later and bad_id not in later


def test_list_instance_ids_pages_terminal_instances_only(hub, start_worker, iid):
    start_worker([qp_done, qp_fail, qp_wait])
    t0 = _window_start()
    running_id = hub.schedule_new_orchestration(qp_wait, instance_id=iid("running"))
    terminal = []
    for name, fn in (("a", qp_done), ("b", qp_fail), ("c", qp_done)):
        instance_id = hub.schedule_new_orchestration(fn, input=name, instance_id=iid(name))
        completed(hub, instance_id)
        terminal.append(instance_id)
    wait_for_status(hub, running_id, Status.RUNNING, timeout=30)

    seen: list[str] = []
    token = None
    for _ in range(50):
        page = hub.list_instance_ids(completed_time_from=t0, page_size=1, continuation_token=token)
        assert len(page.items) <= 1
        seen += page.items
        if page.continuation_token is None:
            break
        assert page.items and page.items[-1] in page.continuation_token, \
            f"token {page.continuation_token!r} should contain the last id {page.items}"
        token = page.continuation_token
    else:
        pytest.fail("list_instance_ids never returned a final page")
    assert page.continuation_token is None
    assert [i for i in seen if i in terminal] == terminal, "ordered by completion time"
    assert running_id not in seen

    only_failed = hub.list_instance_ids(runtime_status=[Status.FAILED], completed_time_from=t0, page_size=100)
    assert terminal[1] in only_failed.items and terminal[0] not in only_failed.items

    hub.raise_orchestration_event(running_id, "go", data=1)
    assert_completed(completed(hub, running_id), output=1)


# --- purge ---------------------------------------------------------------------------------

def test_purge_by_id_deletes_instance(hub, start_worker, iid):
    start_worker([qp_done])
    instance_id = hub.schedule_new_orchestration(qp_done, input="p", instance_id=iid())
    assert_completed(completed(hub, instance_id))
    result = hub.purge_orchestration(instance_id)
    assert result.deleted_instance_count == 1
    assert result.is_complete is True
    assert hub.get_orchestration_state(instance_id) is None
    # Purging again (now unknown) deletes nothing and is not an error.
    assert hub.purge_orchestration(instance_id).deleted_instance_count == 0


def test_purge_of_running_instance_deletes_nothing(hub, start_worker, iid):
    start_worker([qp_wait])
    instance_id = hub.schedule_new_orchestration(qp_wait, instance_id=iid())
    hub.wait_for_orchestration_start(instance_id, timeout=30)
    result = hub.purge_orchestration(instance_id)
    assert result.deleted_instance_count == 0
    state = hub.get_orchestration_state(instance_id)
    assert state is not None and state.runtime_status == Status.RUNNING
    hub.raise_orchestration_event(instance_id, "go", data="after purge attempt")
    assert_completed(completed(hub, instance_id), output="after purge attempt")


def test_purge_unknown_instance_returns_zero(hub, iid):
    assert hub.purge_orchestration(iid("ghost")).deleted_instance_count == 0


def test_purge_recursive_deletes_parent_and_child(hub, start_worker, iid):
    start_worker([qp_parent, qp_child])
    parent_id = hub.schedule_new_orchestration(qp_parent, input=21, instance_id=iid("p"))
    child_id = f"{parent_id}-child"
    assert_completed(completed(hub, parent_id), output=42)
    assert_completed(completed(hub, child_id), output=42)
    result = hub.purge_orchestration(parent_id, recursive=True)
    assert result.deleted_instance_count == 2
    assert hub.get_orchestration_state(parent_id) is None
    assert hub.get_orchestration_state(child_id) is None


def test_purge_non_recursive_deletes_only_parent(hub, start_worker, iid):
    start_worker([qp_parent, qp_child])
    parent_id = hub.schedule_new_orchestration(qp_parent, input=5, instance_id=iid("p"))
    child_id = f"{parent_id}-child"
    assert_completed(completed(hub, parent_id), output=10)
    result = hub.purge_orchestration(parent_id, recursive=False)
    assert result.deleted_instance_count == 1
    assert hub.get_orchestration_state(parent_id) is None
    assert_completed(hub.get_orchestration_state(child_id), output=10)
    assert hub.purge_orchestration(child_id).deleted_instance_count == 1


def test_purge_by_filter_status_and_created_window(hub, start_worker, iid):
    start_worker([qp_done, qp_fail, qp_wait])
    t0 = _window_start()
    done_ids = [hub.schedule_new_orchestration(qp_done, input=i, instance_id=iid(f"d{i}")) for i in range(3)]
    failed_id = hub.schedule_new_orchestration(qp_fail, input="x", instance_id=iid("f"))
    running_id = hub.schedule_new_orchestration(qp_wait, instance_id=iid("r"))
    for instance_id in done_ids:
        assert_completed(completed(hub, instance_id))
    assert completed(hub, failed_id).runtime_status == Status.FAILED
    wait_for_status(hub, running_id, Status.RUNNING, timeout=30)
    t1 = _window_end()

    # A window after all of them purges nothing.
    assert hub.purge_orchestrations_by(created_time_from=t1, created_time_to=t1 + timedelta(hours=1),
                                       runtime_status=[Status.COMPLETED]).deleted_instance_count == 0

    result = hub.purge_orchestrations_by(created_time_from=t0, created_time_to=t1, runtime_status=[Status.COMPLETED])
    assert result.deleted_instance_count == 3
    assert result.is_complete is True
    for instance_id in done_ids:
        assert hub.get_orchestration_state(instance_id) is None
    assert hub.get_orchestration_state(failed_id).runtime_status == Status.FAILED

    # No status filter = every terminal status; the running instance is never purged.
    result = hub.purge_orchestrations_by(created_time_from=t0, created_time_to=t1)
    assert result.deleted_instance_count == 1
    assert hub.get_orchestration_state(failed_id) is None
    assert hub.get_orchestration_state(running_id).runtime_status == Status.RUNNING

    # Non-terminal statuses in the filter are ignored.
    result = hub.purge_orchestrations_by(created_time_from=t0, created_time_to=t1, runtime_status=[Status.RUNNING])
    assert result.deleted_instance_count == 0
    hub.raise_orchestration_event(running_id, "go", data="bye")
    assert_completed(completed(hub, running_id), output="bye")
    assert hub.purge_orchestration(running_id).deleted_instance_count == 1
