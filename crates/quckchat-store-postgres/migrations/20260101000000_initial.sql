-- QuckChat's PostgreSQL schema. Ids are native `uuid`, timestamps `timestamptz` (the
-- store writes them rounded to milliseconds, so they read back exactly), attachments a
-- JSON array (`jsonb`). Kinds, roles and statuses are their wire names.
--
-- Where the SQLite schema relies on `rowid` for "in the order stored", this one has an
-- identity column `ord`.

CREATE TABLE users (
    id               uuid        PRIMARY KEY,
    username         text        NOT NULL,
    -- The username lowercased (Unicode-aware, done by the store): the uniqueness key.
    username_key     text        NOT NULL CONSTRAINT users_username_key UNIQUE,
    display_name     text        NOT NULL,
    -- The display name lowercased, for search.
    display_name_key text        NOT NULL,
    password_hash    text        NOT NULL,
    bio              text,
    avatar           text,
    last_seen        timestamptz,
    created_at       timestamptz NOT NULL
);

CREATE TABLE sessions (
    id                 uuid        PRIMARY KEY,
    user_id            uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_token_hash text        NOT NULL,
    created_at         timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL,
    revoked_at         timestamptz
);

CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE conversations (
    id               uuid        PRIMARY KEY,
    kind             text        NOT NULL CHECK (kind IN ('single', 'group')),
    name             text,
    avatar           text,
    created_by       uuid        NOT NULL REFERENCES users (id),
    created_at       timestamptz NOT NULL,
    last_message_at  timestamptz,
    -- COALESCE(last_message_at, created_at), kept by the store: the listing order.
    last_activity_at timestamptz NOT NULL,
    -- The seq of the newest message. Appends increment it with an UPDATE, whose row lock
    -- is what serialises appends to one conversation across every process.
    last_seq         bigint      NOT NULL DEFAULT 0,
    -- For singles, the two member ids sorted and joined by ':'; NULL for groups. Its
    -- uniqueness is what keeps one single per pair, also under concurrent creation.
    single_key       text        CONSTRAINT conversations_single_key UNIQUE
);

CREATE TABLE participants (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text        NOT NULL CHECK (role IN ('admin', 'member')),
    joined_at       timestamptz NOT NULL,
    last_read_seq   bigint      NOT NULL DEFAULT 0,
    -- Insertion order: members who joined together are listed as given.
    ord             bigint      GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX participants_by_user ON participants (user_id, conversation_id);

CREATE TABLE messages (
    id                uuid        PRIMARY KEY,
    conversation_id   uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq               bigint      NOT NULL,
    sender_id         uuid        NOT NULL REFERENCES users (id),
    kind              text        NOT NULL,
    content           text        NOT NULL,
    attachments       jsonb       NOT NULL DEFAULT '[]',
    reply_to          uuid,
    client_message_id text,
    created_at        timestamptz NOT NULL,
    edited_at         timestamptz,
    deleted_at        timestamptz,
    CONSTRAINT messages_conversation_seq UNIQUE (conversation_id, seq)
);

-- One message per (sender, clientMessageId); messages without one are not constrained.
-- Appends check for a duplicate themselves; this index is the last line of defence
-- (the same id sent to two conversations at once, which lock different rows).
CREATE UNIQUE INDEX messages_by_client_id
    ON messages (sender_id, client_message_id)
    WHERE client_message_id IS NOT NULL;

-- Every time a read pointer moved: readBy is the first time it reached a message.
CREATE TABLE receipts (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL,
    seq             bigint      NOT NULL,
    read_at         timestamptz NOT NULL
);

CREATE INDEX receipts_by_seq ON receipts (conversation_id, seq, user_id, read_at);

CREATE TABLE reactions (
    message_id uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji      text        NOT NULL,
    created_at timestamptz NOT NULL,
    ord        bigint      GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (message_id, user_id, emoji)
);

-- The push outbox. No foreign keys: a job outlives what it was about.
CREATE TABLE push_jobs (
    id              uuid        PRIMARY KEY,
    user_id         uuid        NOT NULL,
    kind            text        NOT NULL,
    conversation_id uuid        NOT NULL,
    message_id      uuid,
    call_id         text,
    sender_id       uuid        NOT NULL,
    sender_name     text        NOT NULL,
    preview         text        NOT NULL,
    created_at      timestamptz NOT NULL,
    attempts        bigint      NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    delivered_at    timestamptz,
    failed_at       timestamptz,
    last_error      text,
    ord             bigint      GENERATED ALWAYS AS IDENTITY
);

-- What claims scan: the pending jobs by due time.
CREATE INDEX push_jobs_due ON push_jobs (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;

CREATE INDEX push_jobs_by_user ON push_jobs (user_id, created_at, ord);
