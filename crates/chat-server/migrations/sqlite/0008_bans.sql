-- Users barred from joining a room until a time (the server API's bans).
CREATE TABLE IF NOT EXISTS bans (
    room          TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    until_ms      INTEGER NOT NULL,
    reason        TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (room, user_id)
) WITHOUT ROWID;
