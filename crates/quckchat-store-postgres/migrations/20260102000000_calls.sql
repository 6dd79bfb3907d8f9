-- Calls and their participants (the CallStore port). Kinds and statuses are their wire
-- names (no CHECK, as for message kinds, so that a new status needs no migration).

CREATE TABLE calls (
    id              uuid        PRIMARY KEY,
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    initiator_id    uuid        NOT NULL REFERENCES users (id),
    kind            text        NOT NULL,
    status          text        NOT NULL,
    created_at      timestamptz NOT NULL,
    started_at      timestamptz,
    ended_at        timestamptz,
    duration_sec    bigint,
    -- Bumped by every saved change: save_call only writes over the version it read.
    version         bigint      NOT NULL
);

-- A conversation's call history, newest first.
CREATE INDEX calls_by_conversation ON calls (conversation_id, created_at DESC, id DESC);

-- Live (ringing / active) calls, for a restart and for "is this user busy".
CREATE INDEX calls_by_status ON calls (status, created_at);

CREATE TABLE call_participants (
    call_id   uuid        NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    user_id   uuid        NOT NULL REFERENCES users (id),
    -- The order the call lists them in (the initiator first).
    position  integer     NOT NULL,
    status    text        NOT NULL,
    joined_at timestamptz,
    left_at   timestamptz,
    -- The socket carrying the user's media while joined; never shown to clients.
    device    text,
    PRIMARY KEY (call_id, user_id)
);

-- The calls a user takes part in, by their status in it.
CREATE INDEX call_participants_by_user ON call_participants (user_id, status, call_id);
