-- Calls and their participants (the CallStore port). Timestamps are unix milliseconds,
-- ids hyphenated UUID text, kinds and statuses their wire names (no CHECK, as for
-- message kinds, so that a new status needs no table rebuild).

CREATE TABLE calls (
    id              TEXT    PRIMARY KEY NOT NULL,
    conversation_id TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    initiator_id    TEXT    NOT NULL REFERENCES users (id),
    kind            TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    ended_at        INTEGER,
    duration_sec    INTEGER,
    -- Bumped by every saved change: save_call only writes over the version it read.
    version         INTEGER NOT NULL
) STRICT;

-- A conversation's call history, newest first.
CREATE INDEX calls_by_conversation ON calls (conversation_id, created_at DESC, id DESC);

-- Live (ringing / active) calls, for a restart and for "is this user busy".
CREATE INDEX calls_by_status ON calls (status, created_at);

CREATE TABLE call_participants (
    call_id   TEXT    NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    user_id   TEXT    NOT NULL REFERENCES users (id),
    -- The order the call lists them in (the initiator first).
    position  INTEGER NOT NULL,
    status    TEXT    NOT NULL,
    joined_at INTEGER,
    left_at   INTEGER,
    -- The socket carrying the user's media while joined; never shown to clients.
    device    TEXT,
    PRIMARY KEY (call_id, user_id)
) STRICT;

-- The calls a user takes part in, by their status in it.
CREATE INDEX call_participants_by_user ON call_participants (user_id, status, call_id);
