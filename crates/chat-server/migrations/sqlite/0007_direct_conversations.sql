-- Direct conversations: one room per pair of users (user_a < user_b), which
-- only those two may join, read or write to. The room's name is random
-- (`dm.` and 40 hex digits), drawn when the pair first opens it: nobody can
-- guess it, or have written to it before. Names are as each user last gave
-- them (the other's id until then).
CREATE TABLE IF NOT EXISTS direct_conversations (
    room          TEXT   PRIMARY KEY,
    user_a        TEXT   NOT NULL,
    name_a        TEXT   NOT NULL,
    user_b        TEXT   NOT NULL,
    name_b        TEXT   NOT NULL,
    opened_at_ms  INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS direct_conversations_pair ON direct_conversations (user_a, user_b);
CREATE INDEX IF NOT EXISTS direct_conversations_by_a ON direct_conversations (user_a, opened_at_ms);
CREATE INDEX IF NOT EXISTS direct_conversations_by_b ON direct_conversations (user_b, opened_at_ms);
