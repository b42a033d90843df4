//! Typed column reads of the PostgreSQL store (the shared row decoding, `store::rows`,
//! builds on them), and the locked read of instance facts every write starts with.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::tx::{sql, Cx, R};
use sqlx::PgConnection;

use crate::domain::rules::InstanceFacts;
use crate::domain::{ExecutionId, InstanceId};
use crate::store::codec::status;
use crate::store::rows::Columns;
use crate::store::StoreError;

/// The columns `rows::instance_record` reads, ready to splice into a SELECT or RETURNING.
pub(super) const INSTANCE_COLUMNS: &str = "instance_id, execution_id, name, version, status, \
     created_at, last_updated_at, completed_at, scheduled_start_at, input, output, \
     custom_status, failure, parent_instance_id, tags::text AS tags, trace_context, history_len";

/// One typed column; a type mismatch means the row was not written by us.
pub(super) fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column)
        .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

/// PostgreSQL stores times as `timestamptz`, which sqlx decodes directly.
impl Columns for PgRow {
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        get(self, column)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        get(self, column)
    }

    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        get(self, column)
    }

    fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        get(self, column)
    }
}

/// What a write needs to know about an instance row it locked.
#[derive(Debug, Clone)]
pub(super) struct Facts {
    /// What the protocol rules look at.
    pub(super) inst: InstanceFacts,
    /// Whether it is a sub-orchestration.
    pub(super) has_parent: bool,
    /// Executions a rewind replaced by the current one.
    pub(super) rewound_from: Vec<String>,
    /// Lease holder, if any.
    pub(super) lease_owner: Option<String>,
    /// Fencing token of the latest claim.
    pub(super) lease_epoch: i64,
}

impl Facts {
    /// The facts of a row just created.
    pub(super) fn fresh(execution_id: ExecutionId, has_parent: bool) -> Self {
        Self {
            inst: InstanceFacts {
                status: crate::domain::RuntimeStatus::Pending,
                execution_id,
                history_len: 0,
            },
            has_parent,
            rewound_from: Vec::new(),
            lease_owner: None,
            lease_epoch: 0,
        }
    }
}

/// Locked facts by instance id; absent ids do not exist.
pub(super) type FactsMap = HashMap<InstanceId, Facts>;

/// Owned ids for [`lock_instances`] (an owned, non-generic argument keeps the calls'
/// futures `Send` for the compiler).
pub(super) fn id_list<'a>(ids: impl IntoIterator<Item = &'a InstanceId>) -> Vec<String> {
    ids.into_iter().map(InstanceId::to_string).collect()
}

/// Locks the rows of `ids` (those that exist) in one statement, in id order: every write
/// that locks several instances takes them in this order, so two never deadlock.
pub(super) async fn lock_instances(
    conn: &mut PgConnection,
    cx: &mut Cx,
    mut ids: Vec<String>,
) -> R<FactsMap> {
    ids.sort_unstable();
    ids.dedup();
    let hub = cx.hub.clone();
    lock_rows(&mut *conn, hub, ids).await
}

async fn lock_rows(conn: &mut sqlx::PgConnection, hub: String, ids: Vec<String>) -> R<FactsMap> {
    let rows = sqlx::query(
        "SELECT instance_id, status, execution_id, history_len, \
           parent_instance_id IS NOT NULL AS has_parent, \
           coalesce(rewound_from, '{}') AS rewound_from, lease_owner, lease_epoch \
         FROM instances WHERE hub = $1 AND instance_id = ANY($2) \
         ORDER BY instance_id FOR UPDATE",
    )
    .bind(hub)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(sql("instance lock"))?;
    let mut facts = FactsMap::with_capacity(rows.len());
    for row in &rows {
        facts.insert(
            InstanceId::new(get::<String>(row, "instance_id")?),
            Facts {
                inst: InstanceFacts {
                    status: status(&get::<String>(row, "status")?)?,
                    execution_id: ExecutionId::new(get::<String>(row, "execution_id")?),
                    history_len: get(row, "history_len")?,
                },
                has_parent: get(row, "has_parent")?,
                rewound_from: get(row, "rewound_from")?,
                lease_owner: get(row, "lease_owner")?,
                lease_epoch: get(row, "lease_epoch")?,
            },
        );
    }
    Ok(facts)
}
