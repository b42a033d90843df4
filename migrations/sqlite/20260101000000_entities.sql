-- Durable entities (PROTOCOL.md §5). Entities share the id namespace with orchestrations
-- (`@name@key`) but have their own record and queue: no history, no executions, and a
-- queue whose order must survive locks that hold some messages back.

CREATE TABLE entities (
    instance_id      TEXT    NOT NULL PRIMARY KEY,
    -- Serialized state; NULL = no state.
    state            TEXT,
    -- Lock owner (orchestration instance id) and critical section; NULL = unlocked.
    locked_by        TEXT,
    critical_section TEXT,
    last_modified_at INTEGER NOT NULL,
    -- Optimistic guard of one entity step (read, plan, commit).
    version          INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX entities_locked_by ON entities (locked_by) WHERE locked_by IS NOT NULL;

-- Operation and lock messages waiting for the entity, in arrival order. AUTOINCREMENT
-- as for the orchestration inbox: a seq is never reused.
CREATE TABLE entity_inbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT    NOT NULL REFERENCES entities (instance_id) ON DELETE CASCADE,
    visible_at  INTEGER NOT NULL,
    payload     BLOB    NOT NULL
);

CREATE INDEX entity_inbox_instance ON entity_inbox (instance_id, seq);
CREATE INDEX entity_inbox_visible ON entity_inbox (visible_at);
