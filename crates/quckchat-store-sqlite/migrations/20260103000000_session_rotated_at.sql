-- When a session's refresh token was last rotated: a client presenting the token it just
-- rotated away again (a double-fired refresh) within the reuse grace gets the same pair.
ALTER TABLE sessions ADD COLUMN rotated_at INTEGER;
