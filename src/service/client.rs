//! Client use cases (PROTOCOL.md §3): validation, building inbox events, store calls, and
//! telling the engine what became dispatchable.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pb::history_event::EventType;

use super::{validate, AppState, Result, ServiceError};
use crate::domain::events::event;
use crate::domain::{
    ExecutionId, InstanceId, InstanceRecord, NewExecution, NewInstance, ReusePolicy, RuntimeStatus,
};
use crate::proto as pb;
use crate::store::{
    CompletedFilter, EnqueueOutcome, InstanceFilter, PurgeFilter, SuspendOutcome, TerminateOutcome,
};

pub use super::validate::MAX_INSTANCE_ID_LEN;
/// Page size when a query or list asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page served.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Most ids in one `InstanceBatch` (purge, skip-graceful terminations).
pub const MAX_INSTANCE_BATCH: usize = 500;

/// A `StartInstance` request in domain terms.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// Empty = generate.
    pub instance_id: String,
    /// Orchestrator name.
    pub name: String,
    /// Version.
    pub version: Option<String>,
    /// Input.
    pub input: Option<String>,
    /// Requested start time (past values mean "now").
    pub scheduled_start: Option<DateTime<Utc>>,
    /// `replaceableStatus` when a policy was sent.
    pub reuse_policy: Option<Vec<RuntimeStatus>>,
    /// A client-chosen execution id.
    pub execution_id: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// W3C parent trace context to copy into `ExecutionStarted`.
    pub parent_trace_context: Option<pb::TraceContext>,
}

/// What a `WaitForInstance*` call waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// Status is no longer PENDING.
    Start,
    /// Status is terminal.
    Completion,
}

/// One page of a query.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Cursor for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// A `QueryInstances` request in domain terms (PROTOCOL.md §3.9); every filter optional.
#[derive(Debug, Clone, Default)]
pub struct InstanceQuery {
    /// Empty = any status.
    pub statuses: Vec<RuntimeStatus>,
    /// Inclusive.
    pub created_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_to: Option<DateTime<Utc>>,
    /// Plain instance id prefix; empty = none.
    pub id_prefix: Option<String>,
    /// Exact orchestration name; empty = any.
    pub name: Option<String>,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
    /// Page size; 0 = the default.
    pub page_size: u32,
    /// Cursor from the previous page (absent, "" and "0" mean the first page).
    pub continuation_token: Option<String>,
}

/// A `ListInstanceIds` request in domain terms (PROTOCOL.md §3.10).
#[derive(Debug, Clone, Default)]
pub struct CompletedQuery {
    /// Terminal statuses wanted; empty = every terminal status, live ones are ignored.
    pub statuses: Vec<RuntimeStatus>,
    /// Inclusive.
    pub completed_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub completed_to: Option<DateTime<Utc>>,
    /// Page size; 0 = the default.
    pub page_size: u32,
    /// Cursor from the previous page.
    pub last_instance_key: Option<String>,
}

/// Which instances a purge by filter deletes (PROTOCOL.md §3.11).
#[derive(Debug, Clone, Default)]
pub struct PurgeCriteria {
    /// Inclusive.
    pub created_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_to: Option<DateTime<Utc>>,
    /// Terminal statuses wanted; empty = every terminal status, live ones are ignored.
    pub statuses: Vec<RuntimeStatus>,
    /// Stop after this long (the purge then reports itself incomplete).
    pub timeout: Option<Duration>,
}

/// What a request aimed at a running instance (raise, terminate, suspend, resume) did.
/// The gRPC door answers OK either way (PROTOCOL.md §3.4-3.6); the HTTP door answers 410
/// Gone for [`Delivery::InstanceEnded`], as Durable Functions does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted: stored, applied, or already in the requested state.
    Accepted,
    /// The instance had already ended; nothing was done.
    InstanceEnded,
}

/// Validates an orchestration instance id from a request (`instanceId`).
pub fn instance_id(raw: &str) -> Result<InstanceId> {
    validate::instance_id("instanceId", raw)
}

/// Validates an `InstanceBatch` whole, so a malformed id anywhere changes nothing.
pub(super) fn instance_batch(ids: &[String]) -> Result<Vec<InstanceId>> {
    if ids.len() > MAX_INSTANCE_BATCH {
        return Err(ServiceError::InvalidArgument(format!(
            "instanceBatch has {} ids; at most {MAX_INSTANCE_BATCH} are allowed",
            ids.len()
        )));
    }
    ids.iter()
        .enumerate()
        .map(|(i, raw)| {
            instance_id(raw).map_err(|err| {
                ServiceError::InvalidArgument(format!("instanceBatch.instanceIds[{i}]: {err}"))
            })
        })
        .collect()
}

pub(super) fn page_size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// Encodes a keyset cursor `<RFC 3339 time>|<instance id>`.
fn encode_cursor(at: DateTime<Utc>, id: &str) -> String {
    format!(
        "{}|{id}",
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

fn decode_cursor(token: &str) -> Result<(DateTime<Utc>, String)> {
    let bad = || {
        ServiceError::InvalidArgument(format!(
            "continuation token '{token}' is not one this server issued"
        ))
    };
    let (at, id) = token.split_once('|').ok_or_else(bad)?;
    let at = DateTime::parse_from_rfc3339(at)
        .map_err(|_| bad())?
        .with_timezone(&Utc);
    Ok((at, id.to_string()))
}

/// Reads a cursor field where absent, "" and "0" all mean "first page" (Python and .NET).
fn cursor(token: Option<&str>) -> Result<Option<(DateTime<Utc>, String)>> {
    match token {
        None | Some("") | Some("0") => Ok(None),
        Some(t) => decode_cursor(t).map(Some),
    }
}

/// The store filter of `q`'s conditions, without cursor or limit.
fn instance_filter(q: &InstanceQuery) -> Result<InstanceFilter> {
    validate::prefix("instanceIdPrefix", q.id_prefix.as_deref())?;
    validate::prefix("name", q.name.as_deref())?;
    Ok(InstanceFilter {
        statuses: q.statuses.clone(),
        created_from: q.created_from,
        created_to: q.created_to,
        id_prefix: q.id_prefix.clone().filter(|p| !p.is_empty()),
        name: q.name.clone().filter(|n| !n.is_empty()),
        newest_first: q.newest_first,
        after: None,
        limit: 0,
    })
}

impl AppState {
    /// `StartInstance` (PROTOCOL.md §3.1).
    pub async fn start_instance(&self, req: StartRequest) -> Result<InstanceId> {
        validate::name("name", "the orchestrator name", &req.name)?;
        let id = if req.instance_id.is_empty() {
            InstanceId::generate()
        } else {
            instance_id(&req.instance_id)?
        };
        if id.is_entity() {
            return Err(ServiceError::InvalidArgument(format!(
                "instance id '{id}' starts with '@', which is reserved for entity ids"
            )));
        }
        let policy = match req.reuse_policy {
            None => ReusePolicy::ReplaceTerminal,
            Some(list) => {
                let live = list.iter().any(|s| !s.is_terminal());
                if live && !list.contains(&RuntimeStatus::Terminated) {
                    return Err(ServiceError::InvalidArgument(
                        "Invalid reusable statuses: cannot exclude 'Terminated' while also allowing reuse of running instances (replacing a live instance terminates it first)".into(),
                    ));
                }
                ReusePolicy::Replaceable(list)
            }
        };
        let now = self.clock().now();
        let scheduled = req.scheduled_start.filter(|t| *t > now);
        let execution_id = req
            .execution_id
            .filter(|e| !e.is_empty())
            .map(ExecutionId::new)
            .unwrap_or_else(ExecutionId::generate);
        let new = NewInstance::from(NewExecution {
            id: id.clone(),
            execution_id,
            name: req.name,
            version: req.version,
            input: req.input,
            tags: req.tags,
            scheduled,
            parent_trace_context: req.parent_trace_context,
            now,
        });
        let admitted = self.admit()?;
        self.store().create_instance(new, policy).await?;
        drop(admitted);
        self.engine().schedule_wakeup(&id, scheduled.unwrap_or(now));
        self.engine().watchers().notify(&id);
        tracing::info!(instance_id = %id, "instance scheduled");
        Ok(id)
    }

    /// `GetInstance`: `None` for unknown ids and for entity ids.
    pub async fn get_instance(&self, id: &str) -> Result<Option<InstanceRecord>> {
        let id = instance_id(id)?;
        if id.is_entity() {
            return Ok(None);
        }
        Ok(self.store().instance(&id).await?)
    }

    /// `WaitForInstanceStart` / `WaitForInstanceCompletion`: woken by commits, bounded by
    /// the caller's deadline or, without one, the server's maximum wait.
    pub async fn wait_for_instance(
        &self,
        id: &str,
        until: WaitFor,
        deadline: Option<Duration>,
    ) -> Result<Option<InstanceRecord>> {
        let id = instance_id(id)?;
        let limit = deadline.unwrap_or(self.options().max_wait);
        let expires = tokio::time::Instant::now() + limit;
        loop {
            let watch = self.engine().watchers().watch(&id);
            let notified = watch.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let record = self.store().instance(&id).await?;
            let done = match &record {
                None => true,
                Some(r) => match until {
                    WaitFor::Start => r.status != RuntimeStatus::Pending,
                    WaitFor::Completion => r.status.is_terminal(),
                },
            };
            if done {
                return Ok(record);
            }
            // Not kept while waiting: with its input and output it can be megabytes, and
            // thousands of calls may wait at once.
            drop(record);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(expires) => {
                    return Err(ServiceError::DeadlineExceeded(format!(
                        "instance '{id}' did not reach the awaited state within {} s", limit.as_secs()
                    )));
                }
                _ = self.shutdown_token().cancelled() => return Err(ServiceError::ShuttingDown),
            }
        }
    }

    /// `RaiseEvent` (PROTOCOL.md §3.4).
    pub async fn raise_event(
        &self,
        id: &str,
        name: &str,
        input: Option<String>,
    ) -> Result<Delivery> {
        let id = instance_id(id)?;
        validate::name("name", "the event name", name)?;
        let now = self.clock().now();
        let e = event(
            -1,
            now,
            EventType::EventRaised(pb::EventRaisedEvent {
                name: name.into(),
                input,
            }),
        );
        let _admitted = self.admit()?;
        Ok(match self.store().enqueue_event(&id, e).await? {
            EnqueueOutcome::Enqueued => {
                self.engine().instance_ready(&id);
                Delivery::Accepted
            }
            EnqueueOutcome::Dropped => {
                tracing::debug!(instance_id = %id, "event for a finished instance dropped");
                Delivery::InstanceEnded
            }
        })
    }

    /// `TerminateInstance` (PROTOCOL.md §3.5).
    pub async fn terminate_instance(
        &self,
        id: &str,
        output: Option<String>,
        recursive: bool,
    ) -> Result<Delivery> {
        let id = instance_id(id)?;
        let now = self.clock().now();
        let e = event(
            -1,
            now,
            EventType::ExecutionTerminated(pb::ExecutionTerminatedEvent {
                input: output.clone(),
                recurse: recursive,
            }),
        );
        let _admitted = self.admit()?;
        Ok(
            match self.store().terminate_instance(&id, e, output, now).await? {
                TerminateOutcome::Enqueued => {
                    self.engine().instance_ready(&id);
                    Delivery::Accepted
                }
                TerminateOutcome::TerminatedDirectly => {
                    self.engine().watchers().notify(&id);
                    Delivery::Accepted
                }
                TerminateOutcome::AlreadyTerminal => Delivery::InstanceEnded,
            },
        )
    }

    /// `SuspendInstance` / `ResumeInstance` (PROTOCOL.md §3.6).
    pub async fn set_suspended(
        &self,
        id: &str,
        suspend: bool,
        reason: Option<String>,
    ) -> Result<Delivery> {
        let id = instance_id(id)?;
        let now = self.clock().now();
        let kind = if suspend {
            EventType::ExecutionSuspended(pb::ExecutionSuspendedEvent { input: reason })
        } else {
            EventType::ExecutionResumed(pb::ExecutionResumedEvent { input: reason })
        };
        let _admitted = self.admit()?;
        match self
            .store()
            .set_suspended(&id, suspend, event(-1, now, kind), now)
            .await?
        {
            SuspendOutcome::Changed => {
                self.engine().instance_ready(&id);
                self.engine().watchers().notify(&id);
                Ok(Delivery::Accepted)
            }
            // Unchanged means "already so" or "ended"; the record tells which. Ending
            // after the store call is fine to report too: the request changed nothing.
            SuspendOutcome::Unchanged => Ok(match self.store().instance(&id).await? {
                Some(r) if r.status.is_terminal() => Delivery::InstanceEnded,
                _ => Delivery::Accepted,
            }),
        }
    }

    /// `RestartInstance` (PROTOCOL.md §3.8).
    pub async fn restart_instance(&self, id: &str, new_id: bool) -> Result<InstanceId> {
        let id = instance_id(id)?;
        let Some(old) = self.store().instance(&id).await? else {
            return Err(ServiceError::NotFound(format!(
                "no orchestration instance with id '{id}'"
            )));
        };
        let (target, policy) = if new_id {
            (InstanceId::generate(), ReusePolicy::Replaceable(Vec::new()))
        } else {
            if !old.status.is_terminal() {
                return Err(ServiceError::FailedPrecondition(format!(
                    "instance '{id}' is {}; only a finished instance can be restarted with the same id",
                    old.status
                )));
            }
            (
                id.clone(),
                ReusePolicy::Replaceable(RuntimeStatus::TERMINAL.to_vec()),
            )
        };
        let now = self.clock().now();
        let new = NewInstance::from(NewExecution {
            id: target.clone(),
            execution_id: ExecutionId::generate(),
            name: old.name,
            version: old.version,
            input: old.input,
            tags: old.tags,
            scheduled: None,
            parent_trace_context: None,
            now,
        });
        let _admitted = self.admit()?;
        self.store()
            .create_instance(new, policy)
            .await
            .map_err(|e| match ServiceError::from(e) {
                ServiceError::AlreadyExists(msg) => ServiceError::FailedPrecondition(msg),
                other => other,
            })?;
        self.engine().instance_ready(&target);
        self.engine().watchers().notify(&target);
        Ok(target)
    }

    /// `QueryInstances` (PROTOCOL.md §3.9).
    pub async fn query_instances(&self, q: &InstanceQuery) -> Result<Page<InstanceRecord>> {
        let limit = page_size(q.page_size);
        let filter = InstanceFilter {
            after: cursor(q.continuation_token.as_deref())?,
            limit: limit + 1,
            ..instance_filter(q)?
        };
        let mut items = self.store().query_instances(&filter).await?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items
                .last()
                .map(|r| encode_cursor(r.created_at, r.instance_id.as_str()))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// How many instances match `q` (its paging fields ignored), per status: one entry
    /// per status of `RuntimeStatus::ALL`, zeros included.
    pub async fn count_instances(&self, q: &InstanceQuery) -> Result<Vec<(RuntimeStatus, u64)>> {
        Ok(self.store().count_instances(&instance_filter(q)?).await?)
    }

    /// `ListInstanceIds` (PROTOCOL.md §3.10).
    pub async fn list_instance_ids(&self, q: &CompletedQuery) -> Result<Page<InstanceId>> {
        let limit = page_size(q.page_size);
        let Some(wanted) = terminal_subset(&q.statuses) else {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        let filter = CompletedFilter {
            statuses: wanted,
            completed_from: q.completed_from,
            completed_to: q.completed_to,
            after: cursor(q.last_instance_key.as_deref())?,
            limit: limit + 1,
        };
        let mut rows = self.store().list_completed(&filter).await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if more {
            rows.last().map(|(id, at)| encode_cursor(*at, id.as_str()))
        } else {
            None
        };
        Ok(Page {
            items: rows.into_iter().map(|(id, _)| id).collect(),
            next,
        })
    }

    /// `PurgeInstances` by id (PROTOCOL.md §3.11): 0 for unknown or live instances.
    pub async fn purge_instance(&self, id: &str, recursive: bool) -> Result<u32> {
        let id = instance_id(id)?;
        let n = self.store().purge_instance(&id, recursive).await?;
        self.engine().watchers().notify(&id);
        Ok(n)
    }

    /// Purges one finished instance and says why when it cannot: unknown id →
    /// `NotFound`, live instance → `FailedPrecondition` (the Durable Functions HTTP API's
    /// rules; the gRPC `PurgeInstances` answers 0 for both instead). An entity id (`@…`)
    /// purges the entity's record if it is idle.
    pub async fn purge_finished_instance(&self, id: &str) -> Result<u32> {
        let iid = instance_id(id)?;
        if !iid.is_entity() {
            match self.store().instance(&iid).await? {
                None => {
                    return Err(ServiceError::NotFound(format!(
                        "no orchestration instance with id '{iid}'"
                    )))
                }
                Some(r) if !r.status.is_terminal() => {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "instance '{iid}' is {}: only finished instances can be purged; terminate it first",
                        r.status
                    )))
                }
                Some(_) => {}
            }
        }
        match self.purge_instance(id, false).await? {
            0 => Err(ServiceError::NotFound(format!(
                "nothing to purge for '{iid}' (unknown, or an entity that holds a lock or has queued work)"
            ))),
            n => Ok(n),
        }
    }

    /// `PurgeInstances` by batch.
    pub async fn purge_batch(&self, ids: &[String], recursive: bool) -> Result<u32> {
        let mut total = 0;
        for id in instance_batch(ids)? {
            total += self.store().purge_instance(&id, recursive).await?;
            self.engine().watchers().notify(&id);
        }
        Ok(total)
    }

    /// `PurgeInstances` by filter; returns (count, complete).
    pub async fn purge_where(&self, c: &PurgeCriteria, recursive: bool) -> Result<(u32, bool)> {
        let filter = PurgeFilter {
            created_from: c.created_from,
            created_to: c.created_to,
            statuses: match terminal_subset(&c.statuses) {
                Some(wanted) => wanted,
                None => return Ok((0, true)),
            },
            ..PurgeFilter::default()
        };
        // A timeout too long to add to the clock is no timeout.
        let now = self.clock().now();
        let deadline = c
            .timeout
            .filter(|d| !d.is_zero())
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .and_then(|d| now.checked_add_signed(d));
        Ok(self
            .store()
            .purge_where(&filter, recursive, deadline)
            .await?)
    }

    /// `StreamInstanceHistory` (PROTOCOL.md §3.12).
    pub async fn instance_history(
        &self,
        id: &str,
        execution_id: Option<&str>,
    ) -> Result<Vec<pb::HistoryEvent>> {
        let id = instance_id(id)?;
        let Some((current, events)) = self.store().history(&id).await? else {
            return Err(ServiceError::NotFound(format!(
                "no orchestration instance with id '{id}'"
            )));
        };
        if let Some(wanted) = execution_id.filter(|e| !e.is_empty()) {
            if wanted != current.as_str() {
                return Err(ServiceError::NotFound(format!(
                    "instance '{id}' has no execution '{wanted}' (only the current execution's history is kept)"
                )));
            }
        }
        Ok(events)
    }

    /// `CreateTaskHub` (wipes first when `recreate`) and `DeleteTaskHub` (wipes).
    pub async fn reset_task_hub(&self, wipe: bool) -> Result<()> {
        if !wipe {
            return Ok(());
        }
        if !self.options().task_hub_admin {
            return Err(ServiceError::FailedPrecondition(
                "task hub administration is disabled on this sidecar (--disable-task-hub-admin)"
                    .into(),
            ));
        }
        self.store().wipe().await?;
        self.engine().forget_all();
        tracing::warn!("task hub wiped");
        Ok(())
    }
}

/// The terminal statuses of a filter list: `Some(empty)` = no filter (all terminal);
/// `None` = the list names only live statuses, so nothing terminal can match.
fn terminal_subset(all: &[RuntimeStatus]) -> Option<Vec<RuntimeStatus>> {
    let terminal: Vec<_> = all.iter().copied().filter(|s| s.is_terminal()).collect();
    (all.is_empty() || !terminal.is_empty()).then_some(terminal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_first_page_markers_mean_none() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let token = encode_cursor(at, "a|b");
        assert!(token.contains("a|b"));
        assert_eq!(cursor(Some(&token)).unwrap(), Some((at, "a|b".to_string())));
        assert_eq!(cursor(Some("0")).unwrap(), None);
        assert_eq!(cursor(Some("")).unwrap(), None);
        assert!(matches!(
            cursor(Some("garbage")),
            Err(ServiceError::InvalidArgument(_))
        ));
    }

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(page_size(0), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(5), 5);
        assert_eq!(page_size(1_000_000), MAX_PAGE_SIZE);
    }
}
