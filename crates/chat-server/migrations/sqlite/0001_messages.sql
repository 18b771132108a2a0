-- Rooms and their last assigned sequence number; messages by (room, sequence).
CREATE TABLE IF NOT EXISTS rooms (
    room          TEXT    PRIMARY KEY NOT NULL,
    last_sequence INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS messages (
    room              TEXT    NOT NULL,
    sequence          INTEGER NOT NULL,
    id                TEXT    NOT NULL,
    sender_id         TEXT    NOT NULL,
    sender_name       TEXT    NOT NULL,
    client_message_id TEXT    NOT NULL,
    text              TEXT    NOT NULL,
    created_at_ms     INTEGER NOT NULL,
    PRIMARY KEY (room, sequence)
);

-- A retried send (same sender, same client message id, same room) is the
-- same message.
CREATE UNIQUE INDEX IF NOT EXISTS messages_idempotency
    ON messages (room, sender_id, client_message_id);
