-- Events waiting to be POSTed to the webhook receiver (docs/WEBHOOKS.md).
-- A room event (message, edit, delete, reaction) names its row in
-- `messages` by room and sequence and is queued in the transaction that
-- stores it; a presence event (presence 1: joined, 2: left) carries its
-- user. A claim leases rows until `lease_until_ms`; a failed delivery makes
-- them due again at `next_attempt_ms`.
CREATE TABLE IF NOT EXISTS webhook_queue (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    room            TEXT     NOT NULL,
    sequence        INTEGER  NOT NULL DEFAULT 0,
    presence        INTEGER  NOT NULL DEFAULT 0,
    event_id        TEXT     NOT NULL DEFAULT '',
    user_id         TEXT     NOT NULL DEFAULT '',
    user_name       TEXT     NOT NULL DEFAULT '',
    created_at_ms   INTEGER  NOT NULL,
    attempts        INTEGER  NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER  NOT NULL DEFAULT 0,
    lease_until_ms  INTEGER  NOT NULL DEFAULT 0
);

-- The age bound's sweep.
CREATE INDEX IF NOT EXISTS webhook_queue_by_time ON webhook_queue (created_at_ms);

-- Which room events are queued: bit (1 << kind) of `kinds` (a message's
-- kind is 0, an edit's 1, a delete's 2, reactions 3 and 4). One row,
-- written at every start from `webhooks.events`.
CREATE TABLE IF NOT EXISTS webhook_capture (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    kinds INTEGER NOT NULL
);
INSERT OR IGNORE INTO webhook_capture (id, kinds) VALUES (1, 0);

-- A room event is queued by the statement that stores it, so an append
-- stays one statement (one hand-off to sqlx's SQLite thread) with the
-- webhook on.
CREATE TRIGGER IF NOT EXISTS messages_queue_for_webhook
AFTER INSERT ON messages
WHEN ((SELECT kinds FROM webhook_capture WHERE id = 1) >> NEW.kind) & 1 = 1
BEGIN
    INSERT INTO webhook_queue (room, sequence, created_at_ms)
        VALUES (NEW.room, NEW.sequence, NEW.created_at_ms);
END;
