-- Each user's reactions to each message, as the numbered reaction events
-- of the room left them (one row per room, message, emoji and user). A
-- delete of the message removes its rows; so does retention, with it.
CREATE TABLE IF NOT EXISTS reactions (
    room          TEXT   NOT NULL,
    sequence      BIGINT NOT NULL,
    emoji         TEXT   NOT NULL,
    user_id       TEXT   NOT NULL,
    display_name  TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (room, sequence, emoji, user_id)
);
