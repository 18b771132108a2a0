-- Rooms and their last assigned sequence number; messages by (room, sequence).
CREATE TABLE IF NOT EXISTS rooms (
    room          TEXT   PRIMARY KEY,
    last_sequence BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS messages (
    room              TEXT   NOT NULL,
    sequence          BIGINT NOT NULL,
    id                TEXT   NOT NULL,
    sender_id         TEXT   NOT NULL,
    sender_name       TEXT   NOT NULL,
    client_message_id TEXT   NOT NULL,
    text              TEXT   NOT NULL,
    created_at_ms     BIGINT NOT NULL,
    PRIMARY KEY (room, sequence)
);

-- A retried send (same sender, same client message id, same room) is the
-- same message.
CREATE UNIQUE INDEX IF NOT EXISTS messages_idempotency
    ON messages (room, sender_id, client_message_id);
