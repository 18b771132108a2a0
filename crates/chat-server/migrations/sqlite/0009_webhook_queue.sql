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
