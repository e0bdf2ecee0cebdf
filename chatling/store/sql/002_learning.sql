-- 002_learning.sql: what the nightly retrain needs (feedback marks, deleted
-- chat, one row per training run).
--
-- feedback: a moderator's mark on a message. target_message_id is the platform
--   id of the marked message (Twitch: the message id of the bot's post, as it
--   came back through EventSub; Discord: "discord:<interaction id>" of the
--   /chat exchange, the same key bot_replies.in_reply_to holds). target_text is
--   the marked message's text when known (Twitch sends the parent's body), so
--   a mark can be matched to the bot_replies row that posted it.
-- chat_messages.deleted_at: set when a moderator deleted the message (Twitch
--   channel.chat.message_delete); deleted messages never become targets.
-- training_runs: one row per nightly (or `chatling retrain --now`) run, from
--   start to decision; status in 'running', 'promoted', 'rejected', 'failed',
--   'skipped' (checked in Python). A row left 'running' by a killed process is
--   closed as 'failed' by the next run.

ALTER TABLE chat_messages ADD COLUMN deleted_at REAL;

CREATE TABLE feedback (
    id                INTEGER PRIMARY KEY,
    target_message_id TEXT NOT NULL,
    target_text       TEXT,
    mark              TEXT NOT NULL,      -- 'good' or 'bad'
    by_user           TEXT NOT NULL,
    source            TEXT NOT NULL,      -- 'twitch' or 'discord'
    created_at        REAL NOT NULL
);
CREATE INDEX feedback_by_target ON feedback (target_message_id);

CREATE TABLE training_runs (
    id                INTEGER PRIMARY KEY,
    trigger           TEXT NOT NULL,      -- 'schedule' or 'manual'
    status            TEXT NOT NULL,
    started_at        REAL NOT NULL,
    ended_at          REAL,
    since_at          REAL,               -- logs newer than this were exported
    new_pairs         INTEGER,
    base_pairs        INTEGER,
    preference_pairs  INTEGER,
    current_version   TEXT,               -- the adapter serving when the run began
    candidate_version TEXT,
    current_metrics   TEXT,               -- JSON
    candidate_metrics TEXT,               -- JSON
    reason            TEXT,
    error             TEXT,
    pid               INTEGER
);

-- The training_pairs view of 001, now without deleted or marked-bad messages.
DROP VIEW training_pairs;
CREATE VIEW training_pairs AS
SELECT
    m.id AS chat_id,
    m.stream_id,
    m.offset_s,
    m.user,
    m.text,
    m.message_id,
    coalesce((
        SELECT group_concat(w.text, ' ')
        FROM (
            SELECT u.text
            FROM utterances AS u
            WHERE u.stream_id = m.stream_id
              AND u.end_s >= m.offset_s - 60.0   -- TRANSCRIPT_WINDOW_S
              AND u.end_s <= m.offset_s - 1.0    -- REACTION_GAP_S
            ORDER BY u.start_s, u.id
        ) AS w
    ), '') AS transcript,
    coalesce((
        SELECT group_concat(r.line, char(10))
        FROM (
            SELECT p.line
            FROM (
                SELECT c.user || ': ' || c.text AS line, c.offset_s, c.id
                FROM chat_messages AS c
                WHERE c.stream_id = m.stream_id
                  AND (c.offset_s < m.offset_s OR (c.offset_s = m.offset_s AND c.id < m.id))
                ORDER BY c.offset_s DESC, c.id DESC
                LIMIT 10                          -- CHAT_CONTEXT_MESSAGES
            ) AS p
            ORDER BY p.offset_s, p.id
        ) AS r
    ), '') AS chat_context
FROM chat_messages AS m
WHERE m.is_bot = 0
  AND m.deleted_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM feedback AS f
      WHERE f.target_message_id = m.message_id AND f.mark = 'bad'
  );
