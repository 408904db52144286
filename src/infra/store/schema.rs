//! Versioned migrations. `PRAGMA user_version` holds the number of migrations applied; a database
//! with a higher number than this binary knows is refused rather than touched.

/// Migration N (1-based) is `MIGRATIONS[N-1]`. Append only: never edit a released migration.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE chats (
    id            TEXT PRIMARY KEY,          -- channel-prefixed: tg:-100123, wa:…@g.us, cli:local
    channel       TEXT NOT NULL,
    name          TEXT,
    is_group      INTEGER NOT NULL DEFAULT 0,
    first_seen    INTEGER NOT NULL,
    last_activity INTEGER NOT NULL,
    last_sender   TEXT,                      -- for the unknown-chat notice
    notified_at   INTEGER                    -- last unknown-chat notice sent to main
);

CREATE TABLE messages (
    seq             INTEGER PRIMARY KEY,     -- total order; cursors point here
    chat_id         TEXT NOT NULL REFERENCES chats(id),
    msg_id          TEXT NOT NULL,
    sender          TEXT NOT NULL,
    sender_name     TEXT NOT NULL DEFAULT '',
    text            TEXT NOT NULL,
    sent_at         INTEGER NOT NULL,
    from_me         INTEGER NOT NULL DEFAULT 0,
    is_bot          INTEGER NOT NULL DEFAULT 0,
    reply_to_id     TEXT,
    reply_to_sender TEXT,
    reply_to_text   TEXT,
    stored_at       INTEGER NOT NULL,
    UNIQUE (chat_id, msg_id)
);
CREATE INDEX messages_chat_seq ON messages (chat_id, seq);

CREATE TABLE groups (
    folder           TEXT PRIMARY KEY,
    chat_id          TEXT NOT NULL UNIQUE REFERENCES chats(id),
    name             TEXT NOT NULL,
    trigger          TEXT NOT NULL,
    requires_trigger INTEGER NOT NULL DEFAULT 1,
    is_main          INTEGER NOT NULL DEFAULT 0,
    config           TEXT NOT NULL DEFAULT '{}',   -- JSON: GroupConfig
    allowed_senders  TEXT,                         -- JSON array; NULL = everyone
    added_at         INTEGER NOT NULL
);
CREATE UNIQUE INDEX groups_one_main ON groups (is_main) WHERE is_main = 1;

CREATE TABLE cursors (
    folder TEXT PRIMARY KEY REFERENCES groups(folder) ON DELETE CASCADE,
    seq    INTEGER NOT NULL
);

CREATE TABLE sessions (
    folder     TEXT PRIMARY KEY REFERENCES groups(folder) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    folder      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('messages', 'task')),
    task_id     INTEGER,
    task_run_id INTEGER,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    attempt     INTEGER NOT NULL DEFAULT 1,
    pid         INTEGER,
    container   TEXT,
    queued_at   INTEGER NOT NULL,
    started_at  INTEGER,
    ended_at    INTEGER,
    exit_code   INTEGER,
    error       TEXT,
    retry_at    INTEGER,                       -- failed runs: not before this time
    output_sent INTEGER NOT NULL DEFAULT 0,    -- a result reached the outbox
    first_seq   INTEGER,                       -- messages handed to the agent
    last_seq    INTEGER,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_folder ON runs (folder, id);
CREATE INDEX runs_status ON runs (status);

CREATE TABLE tasks (
    id           INTEGER PRIMARY KEY,
    folder       TEXT NOT NULL,
    chat_id      TEXT NOT NULL,
    prompt       TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('cron', 'interval', 'once')),
    schedule     TEXT NOT NULL,
    timezone     TEXT NOT NULL,
    context_mode TEXT NOT NULL DEFAULT 'isolated' CHECK (context_mode IN ('group', 'isolated')),
    status       TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'completed', 'cancelled')),
    next_run     INTEGER,
    last_run     INTEGER,
    last_result  TEXT,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL
);
CREATE INDEX tasks_due ON tasks (status, next_run);

CREATE TABLE task_runs (
    id            INTEGER PRIMARY KEY,
    task_id       INTEGER NOT NULL REFERENCES tasks(id),
    run_id        INTEGER,
    scheduled_for INTEGER NOT NULL,
    queued_at     INTEGER NOT NULL,
    started_at    INTEGER,
    ended_at      INTEGER,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    result        TEXT,
    error         TEXT
);
CREATE INDEX task_runs_task ON task_runs (task_id, id);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    chat_id         TEXT NOT NULL,
    text            TEXT NOT NULL,
    origin          TEXT NOT NULL,              -- run:N, ipc:FOLDER/FILE, notice:…, cli
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    claimed_by      TEXT,
    claimed_at      INTEGER,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER,
    channel_msg_id  TEXT
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);

CREATE TABLE channel_state (
    channel TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (channel, key)
);

CREATE TABLE audit (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    folder TEXT,
    run_id INTEGER,
    kind   TEXT NOT NULL,     -- container.start, ipc.applied, ipc.rejected, egress.denied, …
    detail TEXT NOT NULL      -- JSON
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_folder ON audit (folder, at);
"#,
    // 2: pending-message counts and scans filter on `is_bot = 0`; with only (chat_id, seq) every
    // counted row cost a table lookup, which made `claw status` over 1,000 groups take ~300 ms.
    // The partial index answers those queries from the index alone. It replaces the full index
    // rather than joining it: a third index on messages cost ingest ~25% of its speed, and the
    // only query without `is_bot = 0` (max_seq, at group registration) is served well enough by
    // the (chat_id, msg_id) unique index.
    r#"
CREATE INDEX IF NOT EXISTS messages_chat_seq_human ON messages (chat_id, seq) WHERE is_bot = 0;
DROP INDEX IF EXISTS messages_chat_seq;
"#,
    // 3: per-group task listings, snapshots and the per-group task cap without a table scan.
    r#"
CREATE INDEX IF NOT EXISTS tasks_folder ON tasks (folder, status);
"#,
    // 4: IPC requests are idempotent by origin (folder and file stem), so a request file applied
    // again after a crash between commit and delete finds what it created the first time.
    r#"
CREATE INDEX IF NOT EXISTS outbox_origin ON outbox (origin);
CREATE INDEX IF NOT EXISTS tasks_created_by ON tasks (created_by);
"#,
    // 5: hardening. `containers` lists every container run-group started and has not yet seen
    // gone, so a leftover of a killed run is removed before its group starts another (and dispatch
    // need not ask the runtime). `marks` records when a once-per-window thing last happened (a
    // limit notice to a chat, the hourly housekeeping). Runs per group per hour are counted by
    // start time.
    r#"
CREATE TABLE IF NOT EXISTS containers (
    name       TEXT PRIMARY KEY,
    folder     TEXT NOT NULL,
    run_id     INTEGER,
    runtime    TEXT NOT NULL,
    started_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS containers_folder ON containers (folder);
CREATE TABLE IF NOT EXISTS marks (
    key TEXT PRIMARY KEY,
    at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_folder_started ON runs (folder, started_at);
"#,
    // 6: cost. `usage` holds what the upstream reported for each model request, as the proxy
    // read it on the host (never what the container says), summed per run, model and local day;
    // costs are computed from the price table when read, so a changed price applies everywhere.
    // `task_checks` gives a task an optional check command run in the group's container before
    // the model is woken.
    r#"
CREATE TABLE IF NOT EXISTS usage (
    run_id             INTEGER NOT NULL,
    folder             TEXT NOT NULL,
    provider           TEXT NOT NULL,
    model              TEXT NOT NULL,
    day                TEXT NOT NULL,            -- local date, YYYY-MM-DD
    requests           INTEGER NOT NULL DEFAULT 0,
    input_tokens       INTEGER NOT NULL DEFAULT 0,  -- uncached input
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (run_id, model, day)
);
CREATE INDEX IF NOT EXISTS usage_day ON usage (day, folder);
CREATE INDEX IF NOT EXISTS usage_folder ON usage (folder, day);
CREATE TABLE IF NOT EXISTS task_checks (
    task_id      INTEGER PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
    command      TEXT NOT NULL,
    timeout_secs INTEGER NOT NULL DEFAULT 60
);
"#,
    // 7: approvals. One row per act the owner is asked about (a card in the main chat); an answer
    // decides exactly that row, and an act waits on its own row only, so one approval can never
    // unlock another act. `nonce` makes a Telegram button's callback data unforgeable.
    r#"
CREATE TABLE IF NOT EXISTS approvals (
    id          INTEGER PRIMARY KEY,
    folder      TEXT NOT NULL,
    run_id      INTEGER,
    kind        TEXT NOT NULL,              -- egress, credential, send_message, add_mcp_server, schedule_task
    detail      TEXT NOT NULL,              -- JSON: what exactly (host, credential name, chat, …)
    reason      TEXT,                       -- the agent's stated reason, shown to the owner
    status      TEXT NOT NULL DEFAULT 'requested'
                CHECK (status IN ('requested', 'approved', 'denied', 'expired')),
    nonce       TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    decided_at  INTEGER,
    decided_by  TEXT,                       -- cli, chat:<sender>, timeout
    card_outbox_id INTEGER
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, expires_at);
CREATE INDEX IF NOT EXISTS approvals_folder ON approvals (folder, id);
"#,
    // 8: searchable history. Three FTS5 indexes, one per source, each *external content* over
    // the table that already holds the text (`content=`), so the words are indexed but the text
    // is not stored twice (a contentless table could not give snippets; a table of its own would
    // double the database). Each index changes in the same transaction as the row it indexes,
    // so a process killed mid-ingest leaves rows and index rolled back together. Triggers do it
    // for the outbox, archives, and deletes and updates of messages; a *new message* is indexed
    // by the store's own insert (`store::messages::insert`, the one place messages are written)
    // instead, because FTS5 flushes its pending terms at every trigger's statement boundary,
    // which made ingest eight times slower (16k instead of 130k messages a second). Only the agent's own replies are
    // indexed from the outbox (origins `run:N` and `ipc:…`), not the host's notices: its index's
    // content is the view `outbox_replies`, and the WHEN clauses of its triggers repeat the
    // view's filter (they must agree, or FTS5 would be told to delete words it never indexed,
    // and `integrity-check` compares the index with the view). `archives` holds the compaction archives (`conversations/*.md`)
    // the host read from group folders, one row per folder and file name, so indexing a file
    // again replaces its row. The last statements build the index for rows already present.
    r#"
CREATE TABLE IF NOT EXISTS archives (
    id          INTEGER PRIMARY KEY,
    folder      TEXT NOT NULL,
    name        TEXT NOT NULL,              -- file name under groups/FOLDER/conversations/
    text        TEXT NOT NULL,
    archived_at INTEGER NOT NULL,           -- from the file name's stamp, else its mtime
    size        INTEGER NOT NULL,
    mtime       INTEGER NOT NULL,           -- with size: skip unchanged files on the next scan
    indexed_at  INTEGER NOT NULL,
    UNIQUE (folder, name)
);
CREATE VIEW IF NOT EXISTS outbox_replies AS
    SELECT id, text FROM outbox
    WHERE origin GLOB 'ipc:*' OR (origin GLOB 'run:*' AND origin NOT GLOB 'run:*:*');
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    text, content='messages', content_rowid='seq', tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE IF NOT EXISTS outbox_fts USING fts5(
    text, content='outbox_replies', content_rowid='id', tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE IF NOT EXISTS archives_fts USING fts5(
    text, content='archives', content_rowid='id', tokenize='unicode61 remove_diacritics 2');

CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.seq, old.text);
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF text ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.seq, old.text);
    INSERT INTO messages_fts (rowid, text) VALUES (new.seq, new.text);
END;

CREATE TRIGGER IF NOT EXISTS outbox_fts_insert AFTER INSERT ON outbox
WHEN new.origin GLOB 'ipc:*' OR (new.origin GLOB 'run:*' AND new.origin NOT GLOB 'run:*:*') BEGIN
    INSERT INTO outbox_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS outbox_fts_delete AFTER DELETE ON outbox
WHEN old.origin GLOB 'ipc:*' OR (old.origin GLOB 'run:*' AND old.origin NOT GLOB 'run:*:*') BEGIN
    INSERT INTO outbox_fts (outbox_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER IF NOT EXISTS outbox_fts_update_old AFTER UPDATE OF text, origin ON outbox
WHEN old.origin GLOB 'ipc:*' OR (old.origin GLOB 'run:*' AND old.origin NOT GLOB 'run:*:*') BEGIN
    INSERT INTO outbox_fts (outbox_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER IF NOT EXISTS outbox_fts_update_new AFTER UPDATE OF text, origin ON outbox
WHEN new.origin GLOB 'ipc:*' OR (new.origin GLOB 'run:*' AND new.origin NOT GLOB 'run:*:*') BEGIN
    INSERT INTO outbox_fts (rowid, text) VALUES (new.id, new.text);
END;

CREATE TRIGGER IF NOT EXISTS archives_fts_insert AFTER INSERT ON archives BEGIN
    INSERT INTO archives_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS archives_fts_delete AFTER DELETE ON archives BEGIN
    INSERT INTO archives_fts (archives_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER IF NOT EXISTS archives_fts_update AFTER UPDATE OF text ON archives BEGIN
    INSERT INTO archives_fts (archives_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO archives_fts (rowid, text) VALUES (new.id, new.text);
END;

INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
INSERT INTO outbox_fts (outbox_fts) VALUES ('rebuild');
"#,
    // 9: deliver looks up whether an outbox row is an approval card (Telegram
    // gives it buttons) for every row it sends; this keeps that an index probe.
    r#"
CREATE INDEX IF NOT EXISTS approvals_card ON approvals (card_outbox_id);
"#,
    // 10: media. One `attachments` row per file a message carried, whether it was saved or not
    // (a failed or oversize download is recorded and shown in the prompt, never dropped). `path`
    // is relative to the group folder (`inbox/<date>/<msg id>-<name>`). `outbox_files` holds the
    // host-owned copy of a file an agent asked to send (`send_file`), beside its outbox row.
    r#"
CREATE TABLE IF NOT EXISTS attachments (
    id          INTEGER PRIMARY KEY,
    message_seq INTEGER NOT NULL REFERENCES messages(seq) ON DELETE CASCADE,
    folder      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('photo', 'voice', 'audio', 'document', 'video')),
    name        TEXT NOT NULL,               -- sanitised original name
    path        TEXT,                        -- relative to groups/FOLDER; NULL unless status = 'ok'
    mime        TEXT,                        -- from the content's first bytes
    size        INTEGER,
    caption     TEXT,
    width       INTEGER,
    height      INTEGER,
    status      TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'too_large')),
    error       TEXT,
    transcript  TEXT,                        -- voice notes, when transcription is configured
    created_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attachments_message ON attachments (message_seq);
CREATE INDEX IF NOT EXISTS attachments_folder ON attachments (folder, created_at);
CREATE TABLE IF NOT EXISTS outbox_files (
    outbox_id INTEGER PRIMARY KEY REFERENCES outbox(id) ON DELETE CASCADE,
    path      TEXT NOT NULL,                 -- absolute, under the home's media-out/ (host-owned)
    kind      TEXT NOT NULL,
    name      TEXT NOT NULL,
    mime      TEXT NOT NULL,
    size      INTEGER NOT NULL
);
"#,
];
