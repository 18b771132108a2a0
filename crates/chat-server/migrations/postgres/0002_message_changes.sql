-- Edits and deletes are numbered events of their room, stored as rows of
-- `messages` with a kind (0 message, 1 edit, 2 delete) and the sequence of
-- the message they change; that message's row holds its current state (the
-- last edit's text and time, or deleted with its text gone).
ALTER TABLE messages ADD COLUMN IF NOT EXISTS kind SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS target_sequence BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS edited_at_ms BIGINT NOT NULL DEFAULT 0;
-- The sequence of the edit whose text a message holds (0: none): clients
-- order edits by it, never by clocks.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS edited_sequence BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS deleted BOOLEAN NOT NULL DEFAULT false;

-- A delete empties the text of the message's earlier edits too (kind 1).
CREATE INDEX IF NOT EXISTS messages_edits
    ON messages (room, target_sequence) WHERE kind = 1;
