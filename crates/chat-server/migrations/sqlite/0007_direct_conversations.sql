-- Direct conversations: one room per pair of users (user_a < user_b), which
-- only those two may join, read or write to. Names are as each user last
-- gave them (the other's id until then).
CREATE TABLE IF NOT EXISTS direct_conversations (
    room          TEXT   PRIMARY KEY,
    user_a        TEXT   NOT NULL,
    name_a        TEXT   NOT NULL,
    user_b        TEXT   NOT NULL,
    name_b        TEXT   NOT NULL,
    opened_at_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS direct_conversations_by_a ON direct_conversations (user_a, opened_at_ms);
CREATE INDEX IF NOT EXISTS direct_conversations_by_b ON direct_conversations (user_b, opened_at_ms);
