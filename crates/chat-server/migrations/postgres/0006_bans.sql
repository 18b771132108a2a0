-- Users barred from joining a room until a time (the server API's bans).
CREATE TABLE IF NOT EXISTS bans (
    room          TEXT   NOT NULL,
    user_id       TEXT   NOT NULL,
    until_ms      BIGINT NOT NULL,
    reason        TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (room, user_id)
);
