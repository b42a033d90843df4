//! Orchestration episodes: claiming work, committing transitions (progress, terminal,
//! continue-as-new, children, messages, timers), the commit guard, activities, and the
//! inbox rules a rewind leaves behind.

use durabletask_sidecar::domain::{
    ChildCreation, ExecutionId, NewActivity, ReusePolicy, RuntimeStatus, StatusChange,
};
use durabletask_sidecar::proto as pb;
use durabletask_sidecar::store::{ActivityOutcome, StoreError};

use super::{
    at, complete, completed, episode, id, is_started, message, new_instance, next_work, raised,
    raised_name, start_running, task_completed, task_scheduled, StoreFactory,
};

pub async fn progress_commit_appends_history_and_updates_record(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    store
        .create_instance(new_instance("w", at(0)), ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    let work = next_work(&*store, "w", at(1)).await;
    assert_eq!(work.record.status, RuntimeStatus::Pending);
    // A message that arrives while the episode runs stays in the inbox.
    store
        .enqueue_event(&id("w"), raised("during", at(1)))
        .await
        .unwrap();
    let mut t = episode(&work, at(1), StatusChange::Progress);
    t.custom_status = Some("cs".into());
    t.trace_context = Some(pb::OrchestrationTraceContext {
        span_id: Some("span".into()),
        span_start_time: None,
    });
    t.activities = vec![
        NewActivity {
            scheduled: task_scheduled(1, at(1)),
        },
        NewActivity {
            scheduled: task_scheduled(2, at(1)),
        },
    ];
    let outcome = store.commit_orchestration(&t, work.lease).await.unwrap();
    assert!(outcome.has_visible_inbox);
    assert_eq!(outcome.activities.len(), 2);
    assert!(outcome.activities[0].id < outcome.activities[1].id);
    assert_eq!(outcome.activities[0].execution_id, work.record.execution_id);

    let rec = store.instance(&id("w")).await.unwrap().unwrap();
    assert_eq!(rec.status, RuntimeStatus::Running);
    assert_eq!(rec.history_len, 2);
    assert_eq!(rec.custom_status.as_deref(), Some("cs"));
    assert_eq!(rec.trace_context, t.trace_context);
    assert_eq!(rec.last_updated_at, at(1));
    let (execution, history) = store.history(&id("w")).await.unwrap().unwrap();
    assert_eq!(execution, work.record.execution_id);
    assert_eq!(
        history, t.history_append,
        "history round-trips byte for byte"
    );
    let work = next_work(&*store, "w", at(1)).await;
    assert_eq!(work.messages.len(), 1);
    assert_eq!(raised_name(&work.messages[0].event), Some("during"));
    assert_eq!(work.history.as_ref().map(Vec::len), Some(2));
}

pub async fn stale_guard_is_lease_lost_and_writes_nothing(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    let work = start_running(&*store, "g", at(0)).await;
    store
        .enqueue_event(&id("g"), raised("e", at(1)))
        .await
        .unwrap();
    let work_now = next_work(&*store, "g", at(1)).await;

    let mut stale_len = episode(&work_now, at(1), StatusChange::Progress);
    stale_len.expected_history_len += 1;
    stale_len
        .messages
        .push(message("g", None, raised("x", at(1)), at(1)));
    let err = store
        .commit_orchestration(&stale_len, work_now.lease)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost(_)), "{err:?}");
    let mut stale_exec = episode(&work_now, at(1), StatusChange::Progress);
    stale_exec.expected_execution_id = ExecutionId::new("other");
    assert!(matches!(
        store
            .commit_orchestration(&stale_exec, work_now.lease)
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    let mut unknown = episode(&work_now, at(1), StatusChange::Progress);
    unknown.instance_id = id("ghost");
    assert!(matches!(
        store.commit_orchestration(&unknown, work_now.lease).await,
        Err(StoreError::LeaseLost(_))
    ));

    let after = next_work(&*store, "g", at(1)).await;
    assert_eq!(after.record, work.record);
    assert_eq!(after.messages, work_now.messages);
}

pub async fn a_failing_commit_rolls_back_its_partial_writes(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    start_running(&*store, "x", at(0)).await;
    store
        .enqueue_event(&id("x"), raised("keep", at(1)))
        .await
        .unwrap();
    let work = next_work(&*store, "x", at(1)).await;
    // Fails after the guard and the inbox delete have run: the savepoint must undo them.
    let bogus = StatusChange::Terminal {
        status: RuntimeStatus::Running,
        output: None,
        failure: None,
    };
    let err = store
        .commit_orchestration(&episode(&work, at(1), bogus), work.lease)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    let after = next_work(&*store, "x", at(1)).await;
    assert_eq!(after.messages, work.messages);
    assert_eq!(after.record, work.record);
}

pub async fn terminal_commit_clears_inbox_and_drops_messages_to_self(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    let work = start_running(&*store, "t", at(0)).await;
    start_running(&*store, "other", at(0)).await;
    store
        .enqueue_event(&id("t"), raised("late", at(1)))
        .await
        .unwrap();
    let mut t = episode(&work, at(2), completed());
    t.messages = vec![
        message("t", None, raised("self", at(2)), at(2)),
        message("other", None, raised("hi", at(2)), at(2)),
    ];
    let outcome = store.commit_orchestration(&t, work.lease).await.unwrap();
    assert!(!outcome.has_visible_inbox);
    assert_eq!(outcome.touched, vec![id("other")]);
    let rec = store.instance(&id("t")).await.unwrap().unwrap();
    assert_eq!(rec.status, RuntimeStatus::Completed);
    assert_eq!(rec.output.as_deref(), Some("\"done\""));
    assert_eq!(rec.completed_at, Some(at(2)));
    assert_eq!(rec.history_len, 3);
    let ready = store.recover(at(10)).await.unwrap().ready;
    assert_eq!(ready, vec![id("other")]);
}

pub async fn failed_commit_stores_failure_details(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    let work = start_running(&*store, "f", at(0)).await;
    let failure = pb::TaskFailureDetails {
        error_type: "Boom".into(),
        error_message: "it broke".into(),
        ..Default::default()
    };
    let status = StatusChange::Terminal {
        status: RuntimeStatus::Failed,
        output: None,
        failure: Some(failure.clone()),
    };
    store
        .commit_orchestration(&episode(&work, at(1), status), work.lease)
        .await
        .unwrap();
    let rec = store.instance(&id("f")).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.failure),
        (RuntimeStatus::Failed, Some(failure))
    );
}

pub async fn continue_as_new_puts_the_new_head_before_waiting_messages(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    let work = start_running(&*store, "c", at(0)).await;
    let old_execution = work.record.execution_id.clone();
    // Pending before the episode is built: a timer of the old execution, and an event.
    let mut t0 = episode(&work, at(1), StatusChange::Progress);
    t0.messages.push(message(
        "c",
        Some(&old_execution),
        raised("old-timer", at(1)),
        at(50),
    ));
    store.commit_orchestration(&t0, work.lease).await.unwrap();
    store
        .enqueue_event(&id("c"), raised("before", at(2)))
        .await
        .unwrap();
    let work = next_work(&*store, "c", at(2)).await;
    // Arrives while the episode runs.
    store
        .enqueue_event(&id("c"), raised("during", at(3)))
        .await
        .unwrap();

    let new_execution = ExecutionId::generate();
    let head = vec![
        new_instance("c", at(3)).start_event,
        raised("carried", at(3)),
    ];
    let mut t = episode(
        &work,
        at(3),
        StatusChange::ContinuedAsNew {
            execution_id: new_execution.clone(),
            input: Some("\"next\"".into()),
            version: Some("2".into()),
            inbox_head: head,
        },
    );
    t.custom_status = Some("kept".into());
    t.messages = vec![
        message("c", None, raised("self", at(3)), at(3)),
        message(
            "c",
            Some(&old_execution),
            raised("stale-timer", at(3)),
            at(3),
        ),
    ];
    let outcome = store.commit_orchestration(&t, work.lease).await.unwrap();
    assert!(outcome.has_visible_inbox);
    assert!(outcome.touched.is_empty());

    let work = next_work(&*store, "c", at(60)).await;
    let rec = &work.record;
    assert_eq!(rec.execution_id, new_execution);
    assert_eq!(
        (rec.status, rec.history_len, rec.created_at),
        (RuntimeStatus::Running, 0, at(0))
    );
    assert_eq!(
        (rec.input.as_deref(), rec.version.as_deref()),
        (Some("\"next\""), Some("2"))
    );
    assert_eq!(
        (rec.output.as_deref(), rec.custom_status.as_deref()),
        (None, Some("kept"))
    );
    assert!(work.history.unwrap().is_empty());
    assert!(is_started(&work.messages[0].event));
    let names: Vec<_> = work.messages[1..]
        .iter()
        .map(|m| raised_name(&m.event).unwrap())
        .collect();
    assert_eq!(
        names,
        ["carried", "during", "self"],
        "old-execution messages are dropped"
    );
    assert!(work.messages.iter().all(|m| m.target_execution.is_none()));
}

pub async fn message_drop_rules_and_touched(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    let work = start_running(&*store, "src", at(0)).await;
    let live = start_running(&*store, "live", at(0)).await;
    start_running(&*store, "done", at(0)).await;
    complete(&*store, "done", at(1)).await;
    let mut t = episode(&work, at(2), StatusChange::Progress);
    t.messages = vec![
        message("ghost", None, raised("a", at(2)), at(2)),
        message("done", None, raised("b", at(2)), at(2)),
        message(
            "live",
            Some(&ExecutionId::new("old")),
            raised("c", at(2)),
            at(2),
        ),
        message(
            "live",
            Some(&live.record.execution_id),
            raised("d", at(2)),
            at(2),
        ),
        message("live", None, raised("e", at(2)), at(2)),
        message(
            "src",
            Some(&work.record.execution_id),
            raised("timer", at(2)),
            at(30),
        ),
    ];
    let outcome = store.commit_orchestration(&t, work.lease).await.unwrap();
    assert_eq!(outcome.touched, vec![id("live")]);
    assert!(!outcome.has_visible_inbox, "the timer is in the future");
    let got = next_work(&*store, "live", at(2)).await;
    let names: Vec<_> = got
        .messages
        .iter()
        .map(|m| raised_name(&m.event).unwrap())
        .collect();
    assert_eq!(names, ["d", "e"]);
    assert!(store.instance(&id("ghost")).await.unwrap().is_none());
    let recovery = store.recover(at(2)).await.unwrap();
    assert_eq!(recovery.wakeups, vec![(at(30), id("src"))]);
    let timer = next_work(&*store, "src", at(30)).await;
    assert_eq!(timer.messages[0].visible_at, at(30));
}

pub async fn children_are_created_replaced_or_conflict(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    let parent = start_running(&*store, "parent", at(0)).await;
    start_running(&*store, "busy", at(0)).await;
    start_running(&*store, "old", at(0)).await;
    complete(&*store, "old", at(1)).await;
    let child = |name: &str| {
        let mut c = new_instance(name, at(2));
        c.parent_instance_id = Some(id("parent"));
        ChildCreation {
            instance: c,
            on_conflict: message(
                "parent",
                Some(&parent.record.execution_id),
                raised(&format!("conflict-{name}"), at(2)),
                at(2),
            ),
        }
    };
    let mut t = episode(&parent, at(2), StatusChange::Progress);
    t.children = vec![child("new"), child("old"), child("busy")];
    t.messages = vec![message("new", None, raised("hello-child", at(2)), at(2))];
    let outcome = store.commit_orchestration(&t, parent.lease).await.unwrap();
    assert_eq!(outcome.touched, vec![id("new"), id("old")]);
    assert!(outcome.has_visible_inbox);

    let new = next_work(&*store, "new", at(2)).await;
    assert_eq!(new.record.parent_instance_id, Some(id("parent")));
    assert!(is_started(&new.messages[0].event));
    assert_eq!(raised_name(&new.messages[1].event), Some("hello-child"));
    let old = store.instance(&id("old")).await.unwrap().unwrap();
    assert_eq!((old.status, old.history_len), (RuntimeStatus::Pending, 0));
    assert_eq!(
        store.instance(&id("busy")).await.unwrap().unwrap().status,
        RuntimeStatus::Running
    );
    let inbox = next_work(&*store, "parent", at(2)).await.messages;
    assert_eq!(raised_name(&inbox[0].event), Some("conflict-busy"));
}

pub async fn activity_completes_exactly_once_and_stale_results_drop(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    let work = start_running(&*store, "a", at(0)).await;
    let mut t = episode(&work, at(1), StatusChange::Progress);
    t.activities = vec![
        NewActivity {
            scheduled: task_scheduled(1, at(1)),
        },
        NewActivity {
            scheduled: task_scheduled(2, at(1)),
        },
    ];
    let items = store
        .commit_orchestration(&t, work.lease)
        .await
        .unwrap()
        .activities;
    assert_eq!(store.recover(at(1)).await.unwrap().activities, items);

    let first = store
        .complete_activity(items[0].id, task_completed(1, at(2)))
        .await
        .unwrap();
    assert_eq!(first, ActivityOutcome::Delivered(id("a")));
    let second = store
        .complete_activity(items[0].id, task_completed(1, at(2)))
        .await
        .unwrap();
    assert_eq!(second, ActivityOutcome::Unknown);
    let work = next_work(&*store, "a", at(2)).await;
    assert_eq!(
        work.messages[0].target_execution,
        Some(work.record.execution_id.clone())
    );

    complete(&*store, "a", at(3)).await;
    let late = store
        .complete_activity(items[1].id, task_completed(2, at(4)))
        .await
        .unwrap();
    assert_eq!(late, ActivityOutcome::Dropped);
    assert!(store.recover(at(4)).await.unwrap().activities.is_empty());
}

pub async fn discard_messages_only_touches_the_given_rows(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    start_running(&*store, "d", at(0)).await;
    store
        .enqueue_event(&id("d"), raised("x", at(1)))
        .await
        .unwrap();
    store
        .enqueue_event(&id("d"), raised("y", at(1)))
        .await
        .unwrap();
    let work = next_work(&*store, "d", at(1)).await;
    store
        .discard_messages(&id("d"), &[work.messages[0].seq])
        .await
        .unwrap();
    store
        .discard_messages(&id("other"), &[work.messages[1].seq])
        .await
        .unwrap();
    let work = next_work(&*store, "d", at(1)).await;
    assert_eq!(work.messages.len(), 1);
    assert_eq!(raised_name(&work.messages[0].event), Some("y"));
}

pub async fn orchestration_work_skips_history_the_caller_already_holds(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    start_running(&*store, "c", at(0)).await;
    store
        .enqueue_event(&id("c"), raised("e", at(1)))
        .await
        .unwrap();
    let record = store.instance(&id("c")).await.unwrap().unwrap();
    assert!(record.history_len > 0);
    let current = Some((record.execution_id.clone(), record.history_len));
    let work = store
        .orchestration_work(&id("c"), at(2), 100, current)
        .await
        .unwrap()
        .unwrap();
    assert!(
        work.history.is_none(),
        "a current cached copy must not be re-read"
    );
    assert_eq!(work.messages.len(), 1);
    let stale = Some((record.execution_id.clone(), record.history_len - 1));
    let work = store
        .orchestration_work(&id("c"), at(2), 100, stale)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        work.history.map(|h| h.len() as u32),
        Some(record.history_len)
    );
    let other = Some((ExecutionId::new("old"), record.history_len));
    let work = store
        .orchestration_work(&id("c"), at(2), 100, other)
        .await
        .unwrap()
        .unwrap();
    assert!(
        work.history.is_some(),
        "another execution's copy is not current"
    );
}

pub async fn a_timer_to_self_becomes_visible_at_its_time_and_not_before(mut f: impl StoreFactory) {
    let store = f.fresh().await;
    store
        .create_instance(new_instance("t", at(0)), ReusePolicy::ReplaceTerminal)
        .await
        .unwrap();
    let work = next_work(&*store, "t", at(0)).await;
    let mut t = episode(&work, at(0), StatusChange::Progress);
    let exec = work.record.execution_id.clone();
    t.messages
        .push(message("t", Some(&exec), raised("timer", at(5)), at(5)));
    let outcome = store.commit_orchestration(&t, work.lease).await.unwrap();
    assert!(!outcome.has_visible_inbox);
    let early = next_work(&*store, "t", at(4)).await;
    assert!(early.messages.is_empty());
    let due = next_work(&*store, "t", at(5)).await;
    assert_eq!(due.messages.len(), 1, "the timer is visible at its time");
    assert_eq!(due.messages[0].target_execution.as_ref(), Some(&exec));
}

pub async fn messages_for_an_execution_a_rewind_replaced_reach_the_new_one_until_continue_as_new(
    mut f: impl StoreFactory,
) {
    use durabletask_sidecar::domain::{RewindPlan, RewoundExecution};
    let store = f.fresh().await;
    let parent = start_running(&*store, "parent", at(0)).await;
    let old = parent.record.execution_id.clone();
    let failed = StatusChange::Terminal {
        status: RuntimeStatus::Failed,
        output: None,
        failure: Some(pb::TaskFailureDetails {
            error_type: "Boom".into(),
            ..Default::default()
        }),
    };
    store
        .commit_orchestration(&episode(&parent, at(1), failed), parent.lease)
        .await
        .unwrap();
    let history = store.history(&id("parent")).await.unwrap().unwrap().1;
    let new = ExecutionId::new("rewound");
    let plan = RewindPlan {
        executions: vec![RewoundExecution {
            instance_id: id("parent"),
            expected_execution_id: old.clone(),
            expected_history_len: history.len() as u32,
            expected_status: RuntimeStatus::Failed,
            consumed: vec![],
            execution_id: new.clone(),
            history: history[..2].to_vec(),
            pending_tasks: vec![],
            messages: vec![],
        }],
        recreated: vec![],
        relinked: vec![],
        now: at(2),
    };
    store.rewind(&plan).await.unwrap();

    // A child that read its parent link before the rewind reports to the old execution.
    let child = start_running(&*store, "child", at(0)).await;
    let mut t = episode(&child, at(3), completed());
    t.messages = vec![
        message("parent", Some(&old), raised("to-old", at(3)), at(3)),
        message(
            "parent",
            Some(&ExecutionId::new("never")),
            raised("to-unknown", at(3)),
            at(3),
        ),
    ];
    let outcome = store.commit_orchestration(&t, child.lease).await.unwrap();
    assert_eq!(outcome.touched, vec![id("parent")]);
    let work = next_work(&*store, "parent", at(3)).await;
    let got: Vec<_> = work
        .messages
        .iter()
        .map(|m| (raised_name(&m.event).unwrap(), m.target_execution.clone()))
        .collect();
    assert_eq!(got, [("to-old", Some(new.clone()))]);

    // Continue-as-new starts an execution that continues nothing: old addresses drop.
    let work = next_work(&*store, "parent", at(4)).await;
    let next = ExecutionId::new("next");
    let can = StatusChange::ContinuedAsNew {
        execution_id: next.clone(),
        input: None,
        version: None,
        inbox_head: vec![],
    };
    store
        .commit_orchestration(&episode(&work, at(4), can), work.lease)
        .await
        .unwrap();
    let sender = start_running(&*store, "sender", at(0)).await;
    let mut t = episode(&sender, at(5), StatusChange::Progress);
    t.messages = vec![
        message("parent", Some(&old), raised("old-again", at(5)), at(5)),
        message("parent", Some(&new), raised("rewound-again", at(5)), at(5)),
        message("parent", Some(&next), raised("current", at(5)), at(5)),
    ];
    store.commit_orchestration(&t, sender.lease).await.unwrap();
    let work = next_work(&*store, "parent", at(5)).await;
    let names: Vec<_> = work
        .messages
        .iter()
        .map(|m| raised_name(&m.event).unwrap())
        .collect();
    assert_eq!(names, ["current"]);
}
