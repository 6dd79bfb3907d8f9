-- QuckChat's SQLite schema. Ids are hyphenated UUID text, timestamps are unix
-- milliseconds (INTEGER), attachments are a JSON array (TEXT).

CREATE TABLE users (
    id               TEXT    PRIMARY KEY NOT NULL,
    username         TEXT    NOT NULL,
    -- The username lowercased (Unicode-aware, done by the store): the uniqueness key.
    username_key     TEXT    NOT NULL UNIQUE,
    display_name     TEXT    NOT NULL,
    -- The display name lowercased, for search.
    display_name_key TEXT    NOT NULL,
    password_hash    TEXT    NOT NULL,
    bio              TEXT,
    avatar           TEXT,
    last_seen        INTEGER,
    created_at       INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    id                 TEXT    PRIMARY KEY NOT NULL,
    user_id            TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_token_hash TEXT    NOT NULL,
    created_at         INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    revoked_at         INTEGER
) STRICT;

CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE conversations (
    id               TEXT    PRIMARY KEY NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('single', 'group')),
    name             TEXT,
    avatar           TEXT,
    created_by       TEXT    NOT NULL REFERENCES users (id),
    created_at       INTEGER NOT NULL,
    last_message_at  INTEGER,
    -- COALESCE(last_message_at, created_at), kept by the store: the listing order.
    last_activity_at INTEGER NOT NULL,
    last_seq         INTEGER NOT NULL DEFAULT 0,
    -- For singles, the two member ids sorted and joined by ':'; NULL for groups. Its
    -- uniqueness is what keeps one single per pair, also under concurrent creation.
    single_key       TEXT    UNIQUE
) STRICT;

CREATE TABLE participants (
    conversation_id TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            TEXT    NOT NULL CHECK (role IN ('admin', 'member')),
    joined_at       INTEGER NOT NULL,
    last_read_seq   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
) STRICT;

CREATE INDEX participants_by_user ON participants (user_id, conversation_id);

CREATE TABLE messages (
    id                TEXT    PRIMARY KEY NOT NULL,
    conversation_id   TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq               INTEGER NOT NULL,
    sender_id         TEXT    NOT NULL REFERENCES users (id),
    kind              TEXT    NOT NULL,
    content           TEXT    NOT NULL,
    attachments       TEXT    NOT NULL DEFAULT '[]',
    reply_to          TEXT,
    client_message_id TEXT,
    created_at        INTEGER NOT NULL,
    edited_at         INTEGER,
    deleted_at        INTEGER,
    UNIQUE (conversation_id, seq)
) STRICT;

-- One message per (sender, clientMessageId); messages without one are not constrained.
CREATE UNIQUE INDEX messages_by_client_id
    ON messages (sender_id, client_message_id)
    WHERE client_message_id IS NOT NULL;

-- Every time a read pointer moved: readBy is the first time it reached a message.
CREATE TABLE receipts (
    conversation_id TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    read_at         INTEGER NOT NULL
) STRICT;

CREATE INDEX receipts_by_seq ON receipts (conversation_id, seq, user_id, read_at);

CREATE TABLE reactions (
    message_id TEXT    NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id, emoji)
) STRICT;

-- The push outbox. No foreign keys: a job outlives what it was about.
CREATE TABLE push_jobs (
    id              TEXT    PRIMARY KEY NOT NULL,
    user_id         TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    message_id      TEXT,
    call_id         TEXT,
    sender_id       TEXT    NOT NULL,
    sender_name     TEXT    NOT NULL,
    preview         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    failed_at       INTEGER,
    last_error      TEXT
) STRICT;

-- What claims scan: the pending jobs by due time.
CREATE INDEX push_jobs_due ON push_jobs (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;

CREATE INDEX push_jobs_by_user ON push_jobs (user_id, created_at);
