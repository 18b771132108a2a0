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
