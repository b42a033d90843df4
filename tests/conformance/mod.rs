//! The store conformance suite: every promise of the `Store` trait, stated once and run
//! against every backend. Each behaviour is a function taking a [`StoreFactory`]; a backend's
//! test file (`tests/store_sqlite.rs`, `tests/store_postgres.rs`) instantiates all of them
//! with [`store_conformance_tests!`], one `#[tokio::test]` per behaviour.
//!
//! Adding a behaviour: write it in the submodule of its area and list it in the macro
//! below. A function left out of the list is dead code, which clippy (`-D warnings`)
//! rejects, so no backend can silently skip it.
//!
//! The suite relies only on what the trait promises: claims are presented as the lease the
//! last `orchestration_work` call returned (SQLite hands out epoch 0, shared stores count),
//! and row ids and inbox seqs are compared with each other, never with literal values.

// `allow-unwrap-in-tests` covers `#[test]` bodies only, not these helpers; the items are
// `pub` for the test files that include this module.
#![allow(clippy::unwrap_used, unreachable_pub)]

pub mod episodes;
pub mod instances;
pub mod queries;
pub mod recovery;

pub mod fixtures;

use async_trait::async_trait;
use durabletask_sidecar::store::Store;

pub use fixtures::*;

/// Makes the stores a conformance test runs against.
#[async_trait]
pub trait StoreFactory: Send {
    /// A store on a new, empty database of its own.
    async fn fresh(&mut self) -> Box<dyn Store>;

    /// A new store on the database of the last [`StoreFactory::fresh`] store, as a restarted
    /// process would open it. The caller has closed and dropped the previous handle.
    async fn reopen(&mut self) -> Box<dyn Store>;
}

/// How long one conformance test may take before it fails instead of hanging CI (a store
/// on a database server waits on the network).
pub const TEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Expands to one `#[tokio::test]` per conformance behaviour. `$factory` is the path of an
/// `async fn() -> Option<impl StoreFactory>`; `None` skips the test (the factory says why).
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:path) => {
        $crate::store_conformance_tests!(@tests $factory, ();
            instances::create_reads_back_and_reuse_policy_matrix,
            instances::replacement_clears_history_inbox_and_activities,
            instances::enqueue_event_rules,
            instances::terminate_variants,
            instances::suspend_and_resume_flip_status_once,
            episodes::progress_commit_appends_history_and_updates_record,
            episodes::stale_guard_is_lease_lost_and_writes_nothing,
            episodes::a_failing_commit_rolls_back_its_partial_writes,
            episodes::terminal_commit_clears_inbox_and_drops_messages_to_self,
            episodes::failed_commit_stores_failure_details,
            episodes::continue_as_new_puts_the_new_head_before_waiting_messages,
            episodes::message_drop_rules_and_touched,
            episodes::children_are_created_replaced_or_conflict,
            episodes::activity_completes_exactly_once_and_stale_results_drop,
            episodes::discard_messages_only_touches_the_given_rows,
            episodes::orchestration_work_skips_history_the_caller_already_holds,
            episodes::a_timer_to_self_becomes_visible_at_its_time_and_not_before,
            episodes::messages_for_an_execution_a_rewind_replaced_reach_the_new_one_until_continue_as_new,
            queries::query_instances_pages_by_keyset,
            queries::query_newest_first_by_name_and_count_per_status,
            queries::list_completed_pages_terminal_instances,
            queries::purge_by_id_recursive_and_filter,
            queries::purge_by_completion_time_takes_whole_trees,
            recovery::recover_after_reopening_the_same_database,
        );
        $crate::store_conformance_tests!(@tests $factory, (flavor = "multi_thread", worker_threads = 4);
            instances::concurrent_creates_succeed_or_fail_alone,
        );
    };
    (@tests $factory:path, $args:tt; $($area:ident :: $name:ident),* $(,)?) => {
        $(
            #[tokio::test $args]
            async fn $name() {
                let Some(factory) = $factory().await else {
                    return;
                };
                let behaviour = $crate::conformance::$area::$name(factory);
                if tokio::time::timeout($crate::conformance::TEST_DEADLINE, behaviour)
                    .await
                    .is_err()
                {
                    panic!(
                        "{} did not finish within {:?}",
                        stringify!($name),
                        $crate::conformance::TEST_DEADLINE
                    );
                }
            }
        )*
    };
}
