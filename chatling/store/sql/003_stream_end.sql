-- 003_stream_end.sql: how a stream ended, and which process wrote it.
--
-- streams.ended_cleanly: 1 when the bot ended the stream itself (end_stream);
--   0 when a later start found it still open after its process had died
--   (kill -9, out of memory, power loss) and closed it, with ended_at set to
--   the time of its last logged event; NULL while the stream runs.
-- streams.writer: '<host>:<pid>:<start ticks>' of the process writing the
--   stream (chatling/procwatch.py, process_token), so that a start closes only
--   streams whose writer is gone: two bots may log into one file. NULL for
--   streams from before this migration; those still open are closed.

ALTER TABLE streams ADD COLUMN ended_cleanly INTEGER;
ALTER TABLE streams ADD COLUMN writer TEXT;
UPDATE streams SET ended_cleanly = 1 WHERE ended_at IS NOT NULL;
