//! Dispatch state decisions that no end-to-end test pins down.

use std::sync::atomic::AtomicUsize;

use super::super::executor::Unavailable;
use super::*;
use crate::domain::SystemClock;
use crate::proto as pb;
use crate::store::sqlite::SqliteStore;

/// Streams are connected but every filter refuses: counts the asks.
#[derive(Debug, Default)]
struct Refusing {
    reserves: AtomicUsize,
}

impl WorkExecutor for Refusing {
    fn reserve(
        &self,
        _kind: WorkKind,
        _target: Option<WorkTarget<'_>>,
    ) -> Result<Reservation, Unavailable> {
        self.reserves.fetch_add(1, Ordering::Relaxed);
        Err(Unavailable::NoMatch)
    }
    fn accepts(&self, _: StreamId, _: WorkKind, _: WorkTarget<'_>) -> bool {
        false
    }
    fn send(&self, _: Reservation, _: pb::WorkItem) -> bool {
        false
    }
    fn release(&self, _: Reservation) {}
    fn hold(&self, _: Reservation) {}
}

#[tokio::test]
async fn a_refused_name_is_asked_for_once_per_pass() {
    let store = Arc::new(SqliteStore::open(":memory:").await.unwrap());
    let executor = Arc::new(Refusing::default());
    let engine = Engine::new(
        store,
        Arc::new(SystemClock),
        Arc::clone(&executor) as Arc<dyn WorkExecutor>,
        EngineConfig::default(),
    );
    let mut st = DispatchState::default();
    for i in 0..1_000 {
        let (name, version) = match i % 3 {
            0 => ("A", None),
            1 => ("A", Some("2".to_string())),
            _ => ("B", None),
        };
        st.parked.push(Parked::Orchestration(
            InstanceId::new(format!("p{i}")),
            name.to_string(),
            version,
        ));
    }
    let mut fetches = Vec::new();

    engine.capacity_available();
    engine.unpark(&mut st, &mut fetches);
    assert_eq!(executor.reserves.load(Ordering::Relaxed), 3);
    assert_eq!(st.parked.len(), 1_000, "refused instances stay parked");
    assert!(fetches.is_empty());

    // Without a capacity change nothing is asked again.
    engine.unpark(&mut st, &mut fetches);
    assert_eq!(executor.reserves.load(Ordering::Relaxed), 3);
}

#[test]
fn due_timers_go_ahead_of_queued_work_in_the_order_they_came_due() {
    let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
    let mut st = DispatchState::default();
    st.ready.push_back(InstanceId::new("started-1"));
    st.ready.push_back(InstanceId::new("started-2"));
    st.timers.push(
        now - chrono::Duration::seconds(2),
        InstanceId::new("due-first"),
    );
    st.timers.push(
        now - chrono::Duration::seconds(1),
        InstanceId::new("due-second"),
    );
    st.timers.push(
        now + chrono::Duration::seconds(1),
        InstanceId::new("not-yet"),
    );

    st.fire_timers(now);
    let order: Vec<String> = std::iter::from_fn(|| st.ready.pop_front())
        .map(|id| id.to_string())
        .collect();
    assert_eq!(
        order,
        ["due-first", "due-second", "started-1", "started-2"],
        "fired timers first, earliest first; the rest keep their order"
    );
    assert_eq!(st.timers.len(), 1, "the future wake-up stays armed");
}
