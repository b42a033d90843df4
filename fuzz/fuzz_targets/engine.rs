//! The pure engine with arbitrary input: a past history, new events, inbox messages and a
//! worker's `OrchestratorResponse` (protobuf-decoded from the fuzzer's bytes) through
//! `OrchestrationState::from_events`, `apply::apply`, `apply::fail`, `apply::terminate`
//! and `plan::plan_episode`; and an entity's queue and a worker's `EntityBatchResult`
//! through `entity::plan_entity` and `entity::apply_entity_result`. Fails on a panic, or
//! when the same inputs give two different transitions.
//!
//! Input: `[flags byte][status byte][OrchestratorRequest][OrchestratorResponse]
//! [EntityBatchResult]`, each message a u16 LE length and bytes. Flags can put a valid
//! `ExecutionStarted`/`OrchestratorStarted` in front, so the fuzzer gets past the
//! "no ExecutionStarted" check without having to build one.

#![no_main]

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, TimeZone, Utc};
use durabletask_sidecar::domain::events::event;
use durabletask_sidecar::domain::{
    EntityLock, EntityRecord, ExecutionId, InstanceId, InstanceRecord, RuntimeStatus,
};
use durabletask_sidecar::engine::apply::{self, ApplyContext, IdSource};
use durabletask_sidecar::engine::entity::{apply_entity_result, plan_entity, EntityIds};
use durabletask_sidecar::engine::plan::plan_episode;
use durabletask_sidecar::engine::state::OrchestrationState;
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::store::InboxMessage;
use libfuzzer_sys::fuzz_target;
use pb::history_event::EventType;

mod common;

/// Ids numbered in order, so two runs can be compared.
struct Counter(u32);

impl Counter {
    fn next(&mut self) -> String {
        self.0 += 1;
        format!("id-{}", self.0)
    }
}

impl IdSource for Counter {
    fn execution_id(&mut self) -> ExecutionId {
        ExecutionId::new(self.next())
    }
}

impl EntityIds for Counter {
    fn request_id(&mut self) -> String {
        self.next()
    }
    fn instance_id(&mut self) -> InstanceId {
        InstanceId::new(self.next())
    }
    fn execution_id(&mut self) -> ExecutionId {
        ExecutionId::new(self.next())
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid time")
}

fn inbox(events: &[pb::HistoryEvent], exec: Option<&ExecutionId>) -> Vec<InboxMessage> {
    (1..)
        .zip(events)
        .map(|(seq, e)| InboxMessage {
            seq,
            target_execution: exec.cloned(),
            event: e.clone(),
            visible_at: now(),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut parts = common::Parts::new(data);
    let flags = parts.byte();
    let status =
        RuntimeStatus::from_i32(i32::from(parts.byte() % 10)).unwrap_or(RuntimeStatus::Running);
    let request: pb::OrchestratorRequest = parts.message();
    let response: pb::OrchestratorResponse = parts.message();
    let entity_result: pb::EntityBatchResult = parts.message();

    let instance_id = InstanceId::new(if request.instance_id.is_empty() {
        "fuzz".to_string()
    } else {
        request.instance_id.clone()
    });
    let execution_id =
        ExecutionId::new(request.execution_id.clone().unwrap_or_else(|| "e1".into()));
    let mut past = Vec::new();
    if flags & 1 != 0 {
        past.push(event(
            -1,
            now(),
            EventType::ExecutionStarted(pb::ExecutionStartedEvent {
                name: "o".into(),
                orchestration_instance: Some(pb::OrchestrationInstance {
                    instance_id: instance_id.to_string(),
                    execution_id: Some(execution_id.to_string()),
                }),
                ..Default::default()
            }),
        ));
    }
    past.extend(request.past_events.iter().cloned());
    let mut new_events = Vec::new();
    if flags & 2 != 0 {
        new_events.push(event(
            -1,
            now(),
            EventType::OrchestratorStarted(pb::OrchestratorStartedEvent::default()),
        ));
    }
    new_events.extend(request.new_events.iter().cloned());

    let _ = OrchestrationState::from_events(past.iter().chain(&new_events));
    let consumed: Vec<i64> = (1..=new_events.len() as i64).collect();
    let ctx = ApplyContext {
        instance_id: &instance_id,
        execution_id: &execution_id,
        past: &past,
        new_events: &new_events,
        consumed: &consumed,
        now: now(),
    };
    let first = apply::apply(&ctx, &response, &mut Counter(0));
    let again = apply::apply(&ctx, &response, &mut Counter(0));
    // Compared with ==, not as Debug text: protobuf maps are HashMaps, printed in any order.
    assert_eq!(first, again, "apply is not deterministic");
    let _ = apply::fail(&ctx, pb::TaskFailureDetails::default());
    let _ = apply::terminate(&ctx, response.custom_status.as_deref());

    let record = InstanceRecord {
        instance_id: instance_id.clone(),
        execution_id: execution_id.clone(),
        name: "o".into(),
        version: None,
        status,
        created_at: now(),
        last_updated_at: now(),
        completed_at: None,
        scheduled_start_at: None,
        input: None,
        output: None,
        custom_status: None,
        failure: None,
        parent_instance_id: None,
        tags: BTreeMap::new(),
        trace_context: None,
        history_len: past.len() as u32,
    };
    let target = (flags & 4 != 0).then_some(&execution_id);
    let _ = plan_episode(&record, &past, inbox(&new_events, target));

    // The entity: its queue is the request's new events.
    let owner = InstanceId::new("owner");
    let entity = EntityRecord {
        instance_id: InstanceId::new("@counter@k"),
        state: entity_result.entity_state.clone(),
        lock: (flags & 8 != 0).then(|| EntityLock {
            owner: owner.clone(),
            critical_section: "cs".into(),
        }),
        last_modified: now(),
        backlog: new_events.len() as u32,
        version: 1,
    };
    let mut live = HashSet::new();
    if flags & 16 != 0 {
        live.insert(owner);
    }
    let max_batch = usize::from(flags >> 5) + 1;
    let plan = plan_entity(&entity, inbox(&new_events, None), &live, max_batch, now());
    let _ = apply_entity_result(&entity, &plan.batch, &entity_result, now(), &mut Counter(0));
    // A worker may answer for a batch other than the one planned.
    let _ = apply_entity_result(
        &entity,
        &inbox(&request.past_events, None),
        &entity_result,
        now(),
        &mut Counter(0),
    );
});
