-- Initial schema of the SQLite store (src/store/sqlite).
--
-- Encodings used by every table:
-- * Timestamps are INTEGER microseconds since the Unix epoch, UTC. Visibility times are
--   rounded UP to the microsecond so a message never becomes visible before its time
--   (a timer must not fire early: SDKs compare TimerFired.fireAt with the dispatch time);
--   every other timestamp is rounded down.
-- * Events (history, inbox, activities) are protobuf-encoded `HistoryEvent` BLOBs, so a
--   history round-trips byte for byte. `failure` is an encoded `TaskFailureDetails`,
--   `trace_context` an encoded `OrchestrationTraceContext`, `tags` a JSON object text.
-- * `status` is the upper-case runtime status name (RUNNING, PENDING, COMPLETED, ...).
--
-- Child tables reference `instances` with ON DELETE CASCADE: deleting (purging or
-- replacing) an instance row removes its history, inbox and activities, and no inbox row
-- can exist for an id without an instance row (PROTOCOL.md §4.5).

CREATE TABLE instances (
    instance_id        TEXT    NOT NULL PRIMARY KEY,
    execution_id       TEXT    NOT NULL,
    name               TEXT    NOT NULL,
    version            TEXT,
    status             TEXT    NOT NULL,
    created_at         INTEGER NOT NULL,
    last_updated_at    INTEGER NOT NULL,
    completed_at       INTEGER,
    scheduled_start_at INTEGER,
    input              TEXT,
    output             TEXT,
    custom_status      TEXT,
    failure            BLOB,
    parent_instance_id TEXT,
    tags               TEXT    NOT NULL DEFAULT '{}',
    trace_context      BLOB,
    history_len        INTEGER NOT NULL DEFAULT 0
);

-- QueryInstances / purge by filter (PROTOCOL.md §3.9, §3.11): keyset paging on
-- (created_at, instance_id), optionally narrowed by status.
CREATE INDEX instances_status_created ON instances (status, created_at);
CREATE INDEX instances_created ON instances (created_at, instance_id);
-- ListInstanceIds (§3.10): terminal instances by completion time.
CREATE INDEX instances_completed ON instances (completed_at, instance_id)
    WHERE completed_at IS NOT NULL;
-- Recursive purge walks children by parent.
CREATE INDEX instances_parent ON instances (parent_instance_id)
    WHERE parent_instance_id IS NOT NULL;

-- Committed history of the current execution only; seq starts at 0 per execution.
CREATE TABLE history (
    instance_id TEXT    NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    payload     BLOB    NOT NULL,
    PRIMARY KEY (instance_id, seq)
);

-- Messages not yet in history. AUTOINCREMENT: a seq is never reused, so a stale caller
-- holding old seqs (discard_messages, a lost-lease commit) can never hit a newer row.
CREATE TABLE inbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id      TEXT    NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
    target_execution TEXT,
    visible_at       INTEGER NOT NULL,
    payload          BLOB    NOT NULL
);

CREATE INDEX inbox_instance ON inbox (instance_id, seq);
CREATE INDEX inbox_visible ON inbox (visible_at);

-- Outstanding activity work. AUTOINCREMENT for the same reason as the inbox: ids end up
-- in completion tokens, and a late duplicate completion must not hit a newer activity.
CREATE TABLE activities (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id  TEXT    NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
    execution_id TEXT    NOT NULL,
    payload      BLOB    NOT NULL
);

CREATE INDEX activities_instance ON activities (instance_id);
