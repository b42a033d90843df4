//! The task hubs one server serves. Each hub is a whole [`AppState`] of its own (store,
//! dispatcher, worker streams), so hubs are isolated by construction: nothing a call on
//! one hub can reach belongs to another. The doors pick the hub of each call (the
//! `taskhub` metadata, the `taskHub` query parameter) and hand the call to its state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{AppState, ServiceError, ServiceOptions};
use crate::domain::{Clock, TaskHubName};
use crate::engine::EngineConfig;
use crate::store::{HubStores, Store, StoreError};

/// Which hubs a server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubPolicy {
    /// Only these (`--task-hubs`); `None`: any valid name, created on first use.
    pub only: Option<BTreeSet<TaskHubName>>,
    /// Most hubs open at once when hubs are created on first use (`--max-task-hubs`).
    pub max_open: usize,
}

impl Default for HubPolicy {
    fn default() -> Self {
        Self {
            only: None,
            max_open: 100,
        }
    }
}

/// The registry of open hubs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TaskHubs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Opens a hub's store; `None` for a fixed set of hubs (tests, fuzzing).
    stores: Option<HubStores>,
    policy: HubPolicy,
    clock: Arc<dyn Clock>,
    options: ServiceOptions,
    engine: EngineConfig,
    shutdown: CancellationToken,
    /// One cell per hub asked for, so concurrent first calls open it once.
    open: Mutex<BTreeMap<TaskHubName, Arc<OnceCell<Hub>>>>,
    /// Every hub's dispatcher loop.
    engines: TaskTracker,
}

#[derive(Debug, Clone)]
struct Hub {
    state: AppState,
    store: Arc<dyn Store>,
}

impl TaskHubs {
    /// Opens the default hub, every hub that already holds state, and every hub the
    /// policy names, and starts their dispatchers.
    pub async fn open(
        stores: HubStores,
        policy: HubPolicy,
        clock: Arc<dyn Clock>,
        options: ServiceOptions,
        engine: EngineConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, StoreError> {
        let mut names: BTreeSet<TaskHubName> = stores.existing().await?.into_iter().collect();
        names.insert(TaskHubName::default_hub());
        if let Some(only) = &policy.only {
            // Hubs outside the list keep their data but are not served.
            names.retain(|name| only.contains(name));
            names.extend(only.iter().cloned());
        }
        let hubs = Self {
            inner: Arc::new(Inner {
                stores: Some(stores),
                policy,
                clock,
                options,
                engine,
                shutdown,
                open: Mutex::default(),
                engines: TaskTracker::new(),
            }),
        };
        for name in names {
            // Hubs that exist are opened whatever the limit: it bounds creation only.
            if let Err(err) = hubs.open_hub(&name, false).await {
                hubs.close().await;
                return Err(match err {
                    ServiceError::Store(err) => err,
                    other => StoreError::Unavailable(other.to_string()),
                });
            }
        }
        Ok(hubs)
    }

    /// A server of the default hub alone, over a state built elsewhere (its dispatcher
    /// is the caller's to run). Any other hub is NOT_FOUND.
    pub fn single(state: AppState) -> Self {
        let name = TaskHubName::default_hub();
        let store = Arc::clone(&state.inner.store);
        let cell = Arc::new(OnceCell::new_with(Some(Hub {
            state: state.clone(),
            store,
        })));
        Self {
            inner: Arc::new(Inner {
                stores: None,
                policy: HubPolicy {
                    only: Some(BTreeSet::from([name.clone()])),
                    max_open: 1,
                },
                clock: Arc::clone(&state.inner.clock),
                options: state.inner.options.clone(),
                engine: EngineConfig::default(),
                shutdown: state.inner.shutdown.clone(),
                open: Mutex::new(BTreeMap::from([(name, cell)])),
                engines: TaskTracker::new(),
            }),
        }
    }

    /// The state of the hub a call names (`None` or empty: the default hub), opening it
    /// on first use when the policy allows.
    pub async fn get(&self, raw: Option<&str>) -> Result<AppState, ServiceError> {
        let name = match raw.map(str::trim).filter(|raw| !raw.is_empty()) {
            None => TaskHubName::default_hub(),
            Some(raw) => TaskHubName::parse(raw).map_err(ServiceError::InvalidArgument)?,
        };
        if let Some(only) = &self.inner.policy.only {
            if !only.contains(&name) {
                let known: Vec<&str> = only.iter().map(TaskHubName::as_str).collect();
                return Err(ServiceError::NotFound(format!(
                    "task hub '{name}' is not served here; known task hubs: {}",
                    known.join(", ")
                )));
            }
        }
        self.open_hub(&name, self.inner.policy.only.is_none()).await
    }

    /// The default hub's state (opened at start).
    pub async fn default_hub(&self) -> Result<AppState, ServiceError> {
        self.get(None).await
    }

    /// The names of the hubs open now, in order.
    pub fn names(&self) -> Vec<TaskHubName> {
        self.list().into_iter().map(|(name, _)| name).collect()
    }

    /// The hubs open now with their states, in name order.
    pub fn list(&self) -> Vec<(TaskHubName, AppState)> {
        let open = self.inner.open.lock().unwrap_or_else(|p| p.into_inner());
        open.iter()
            .filter_map(|(name, cell)| Some((name.clone(), cell.get()?.state.clone())))
            .collect()
    }

    /// The state of `name`, opened now if it is not yet; `limited`: refuse to open one
    /// beyond `max_open`.
    async fn open_hub(&self, name: &TaskHubName, limited: bool) -> Result<AppState, ServiceError> {
        let cell = {
            let mut open = self.inner.open.lock().unwrap_or_else(|p| p.into_inner());
            match open.get(name) {
                Some(cell) => Arc::clone(cell),
                None => {
                    if limited && open.len() >= self.inner.policy.max_open {
                        return Err(ServiceError::LimitReached(format!(
                            "task hub '{name}' was not created: this sidecar already serves \
                             {} task hubs, its most (--max-task-hubs)",
                            self.inner.policy.max_open
                        )));
                    }
                    let cell = Arc::new(OnceCell::new());
                    open.insert(name.clone(), Arc::clone(&cell));
                    cell
                }
            }
        };
        let hub = cell
            .get_or_try_init(|| self.start_hub(name))
            .await
            .map_err(ServiceError::from)?;
        Ok(hub.state.clone())
    }

    /// Opens the store of `name`, recovers its state and starts its dispatcher.
    async fn start_hub(&self, name: &TaskHubName) -> Result<Hub, StoreError> {
        let inner = &self.inner;
        let Some(stores) = &inner.stores else {
            return Err(StoreError::Unavailable(format!(
                "task hub '{name}' cannot be created here"
            )));
        };
        if inner.shutdown.is_cancelled() {
            return Err(StoreError::Unavailable(
                "the sidecar is shutting down".into(),
            ));
        }
        let store = stores.open(name).await?;
        let state = match AppState::new(
            Arc::clone(&store),
            Arc::clone(&inner.clock),
            &inner.options,
            inner.engine.clone(),
            inner.shutdown.child_token(),
        )
        .await
        {
            Ok(state) => state,
            Err(err) => {
                store.close().await;
                return Err(err);
            }
        };
        inner
            .engines
            .spawn(Arc::clone(state.engine()).run(inner.shutdown.child_token()));
        tracing::info!(task_hub = %name, "task hub open");
        Ok(Hub { state, store })
    }

    /// After shutdown was signalled: waits for every dispatcher and stream, then closes
    /// the stores.
    pub async fn close(&self) {
        self.inner.engines.close();
        self.inner.engines.wait().await;
        let hubs: Vec<Hub> = {
            let open = self.inner.open.lock().unwrap_or_else(|p| p.into_inner());
            open.values()
                .filter_map(|cell| cell.get().cloned())
                .collect()
        };
        for hub in &hubs {
            hub.state.close().await;
        }
        if self.inner.stores.is_some() {
            for hub in hubs {
                hub.store.close().await;
            }
        }
    }
}
