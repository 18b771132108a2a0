-- Retention by age finds old messages through this index instead of
-- scanning the table (it deletes them in bounded chunks).
CREATE INDEX IF NOT EXISTS messages_by_time ON messages (created_at_ms);
