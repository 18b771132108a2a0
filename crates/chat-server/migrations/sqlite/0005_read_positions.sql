-- How far each user has read each room (the last sequence read). Shared by
-- all of the user's sessions; never moves backwards. Retention leaves it.
CREATE TABLE IF NOT EXISTS read_positions (
    room          TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    sequence      INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (room, user_id)
);
