-- Schema of the PostgreSQL store (src/store/postgres): the tables of the SQLite store
-- (migrations/sqlite) in PostgreSQL types, plus task hubs and leases.
--
-- * Every table starts its keys with `hub`, so one database can hold several task hubs;
--   foreign keys include it.
-- * Times are TIMESTAMPTZ (microseconds). Visibility times are rounded UP to the
--   microsecond before they are bound, so a message never becomes visible before its time
--   (a timer must not fire early); every other time is rounded down.
-- * Events (history, inbox, activities) are protobuf-encoded `HistoryEvent`s in BYTEA, so
--   a history round-trips byte for byte. `failure` is an encoded `TaskFailureDetails`,
--   `trace_context` an encoded `OrchestrationTraceContext`, `tags` a JSON object.
-- * `status` is the upper-case runtime status name (RUNNING, PENDING, COMPLETED, ...).
-- * Ids use the "C" collation: keyset paging and the lock order (sorted ids) must agree
--   with byte order, whatever the database's default collation is.
-- * Row seqs are identity columns: a value is never reused, so a stale caller holding old
--   seqs or activity ids can never hit a newer row.
-- * Leases (instances, entities, activities): the owner (a process id), its expiry on the
--   DATABASE clock, and an epoch bumped by every claim, which commits present as a fencing
--   token.
--
-- Child tables reference their parent row with ON DELETE CASCADE: deleting (purging or
-- replacing) an instance removes its history, inbox and activities.

CREATE TABLE instances (
    hub                TEXT COLLATE "C" NOT NULL DEFAULT 'default',
    instance_id        TEXT COLLATE "C" NOT NULL,
    execution_id       TEXT        NOT NULL,
    name               TEXT        NOT NULL,
    version            TEXT,
    status             TEXT        NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    last_updated_at    TIMESTAMPTZ NOT NULL,
    completed_at       TIMESTAMPTZ,
    scheduled_start_at TIMESTAMPTZ,
    input              TEXT,
    output             TEXT,
    custom_status      TEXT,
    failure            BYTEA,
    parent_instance_id TEXT COLLATE "C",
    tags               JSONB       NOT NULL DEFAULT '{}',
    trace_context      BYTEA,
    history_len        BIGINT      NOT NULL DEFAULT 0,
    -- The executions a rewind replaced by the current one (oldest first; NULL when none):
    -- a message still addressed to one of them is delivered to the current execution.
    rewound_from       TEXT[],
    lease_owner        TEXT,
    lease_expires      TIMESTAMPTZ,
    lease_epoch        BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (hub, instance_id)
);

-- QueryInstances / purge by filter (PROTOCOL.md §3.9, §3.11).
CREATE INDEX instances_status_created ON instances (hub, status, created_at);
CREATE INDEX instances_created ON instances (hub, created_at, instance_id);
-- ListInstanceIds (§3.10).
CREATE INDEX instances_completed ON instances (hub, completed_at, instance_id)
    WHERE completed_at IS NOT NULL;
-- Recursive purge walks children by parent.
CREATE INDEX instances_parent ON instances (hub, parent_instance_id)
    WHERE parent_instance_id IS NOT NULL;
-- renew_leases finds an owner's rows.
CREATE INDEX instances_lease ON instances (hub, lease_owner) WHERE lease_owner IS NOT NULL;

-- Committed history of the current execution only; seq starts at 0 per execution.
CREATE TABLE history (
    hub         TEXT COLLATE "C" NOT NULL DEFAULT 'default',
    instance_id TEXT COLLATE "C" NOT NULL,
    seq         BIGINT NOT NULL,
    payload     BYTEA  NOT NULL,
    PRIMARY KEY (hub, instance_id, seq),
    FOREIGN KEY (hub, instance_id) REFERENCES instances (hub, instance_id) ON DELETE CASCADE
);

-- Messages not yet in history.
CREATE TABLE inbox (
    hub              TEXT COLLATE "C" NOT NULL DEFAULT 'default',
    seq              BIGINT GENERATED ALWAYS AS IDENTITY,
    instance_id      TEXT COLLATE "C" NOT NULL,
    target_execution TEXT,
    visible_at       TIMESTAMPTZ NOT NULL,
    payload          BYTEA       NOT NULL,
    PRIMARY KEY (hub, seq),
    FOREIGN KEY (hub, instance_id) REFERENCES instances (hub, instance_id) ON DELETE CASCADE
);

CREATE INDEX inbox_instance ON inbox (hub, instance_id, seq);
CREATE INDEX inbox_visible ON inbox (hub, visible_at);

-- Outstanding activity work; ids end up in completion tokens.
CREATE TABLE activities (
    hub           TEXT COLLATE "C" NOT NULL DEFAULT 'default',
    id            BIGINT GENERATED ALWAYS AS IDENTITY,
    instance_id   TEXT COLLATE "C" NOT NULL,
    execution_id  TEXT        NOT NULL,
    payload       BYTEA       NOT NULL,
    lease_owner   TEXT,
    lease_expires TIMESTAMPTZ,
    lease_epoch   BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (hub, id),
    FOREIGN KEY (hub, instance_id) REFERENCES instances (hub, instance_id) ON DELETE CASCADE
);

CREATE INDEX activities_instance ON activities (hub, instance_id);
CREATE INDEX activities_lease ON activities (hub, lease_owner) WHERE lease_owner IS NOT NULL;

-- Durable entities (PROTOCOL.md §5): own record and queue, no history.
CREATE TABLE entities (
    hub              TEXT COLLATE "C" NOT NULL DEFAULT 'default',
    instance_id      TEXT COLLATE "C" NOT NULL,
    -- Serialized state; NULL = no state.
    state            TEXT,
    -- Lock owner (orchestration instance id) and critical section; NULL = unlocked.
    locked_by        TEXT COLLATE "C",
    critical_section TEXT,
    last_modified_at TIMESTAMPTZ NOT NULL,
    -- Optimistic guard of one entity step (read, plan, commit).
    version          BIGINT      NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires    TIMESTAMPTZ,
    lease_epoch      BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (hub, instance_id)
);

CREATE INDEX entities_locked_by ON entities (hub, locked_by) WHERE locked_by IS NOT NULL;
CREATE INDEX entities_lease ON entities (hub, lease_owner) WHERE lease_owner IS NOT NULL;

-- Operation and lock messages waiting for the entity, in arrival order.
CREATE TABLE entity_inbox (
    hub         TEXT COLLATE "C" NOT NULL DEFAULT 'default',
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    instance_id TEXT COLLATE "C" NOT NULL,
    visible_at  TIMESTAMPTZ NOT NULL,
    payload     BYTEA       NOT NULL,
    PRIMARY KEY (hub, seq),
    FOREIGN KEY (hub, instance_id) REFERENCES entities (hub, instance_id) ON DELETE CASCADE
);

CREATE INDEX entity_inbox_instance ON entity_inbox (hub, instance_id, seq);
CREATE INDEX entity_inbox_visible ON entity_inbox (hub, visible_at);
