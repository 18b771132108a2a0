-- The room's counter follows its messages: an append is one INSERT whose
-- sequence is the counter plus one, and this trigger advances the counter
-- in the same statement. (Retention deletes messages, never counters.)
CREATE TRIGGER IF NOT EXISTS messages_advance_room_counter
AFTER INSERT ON messages
BEGIN
    UPDATE rooms SET last_sequence = NEW.sequence
        WHERE room = NEW.room AND last_sequence < NEW.sequence;
    INSERT OR IGNORE INTO rooms (room, last_sequence) VALUES (NEW.room, NEW.sequence);
END;
