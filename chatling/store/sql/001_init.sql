-- 001_init.sql: the first chatling schema (streams, utterances, chat, replies,
-- and the training_pairs view).
--
-- Units, the same in every table:
--   *_s  columns (start_s, end_s, offset_s, latency_s...) are seconds; start_s,
--        end_s and offset_s count from the start of the stream (the VOD offset),
--        so live logs and replayed VODs line up the same way.
--   *_at columns (started_at, created_at, received_at...) are wall-clock Unix
--        seconds (UTC, REAL); read them with datetime(x, 'unixepoch').
-- Closed sets (streams.source, bot_replies.status) are checked in store.py,
-- not with CHECK, so a new value does not need a table rebuild.

CREATE TABLE streams (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,          -- a title: VOD file name or stream title
    source      TEXT NOT NULL,          -- 'replay' or 'twitch'
    channel     TEXT,
    started_at  REAL NOT NULL,
    ended_at    REAL,                   -- NULL while the stream runs (or if it crashed)
    model       TEXT,
    adapter     TEXT
);

CREATE TABLE utterances (
    id          INTEGER PRIMARY KEY,
    stream_id   INTEGER NOT NULL REFERENCES streams (id),
    start_s     REAL NOT NULL,
    end_s       REAL NOT NULL,
    text        TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE INDEX utterances_by_stream_end ON utterances (stream_id, end_s);

CREATE TABLE chat_messages (
    id           INTEGER PRIMARY KEY,
    stream_id    INTEGER NOT NULL REFERENCES streams (id),
    offset_s     REAL NOT NULL,
    user         TEXT NOT NULL,
    display_name TEXT,
    text         TEXT NOT NULL,
    message_id   TEXT,                  -- platform id; unique where present
    emotes       TEXT NOT NULL DEFAULT '[]',   -- JSON list of emote names
    is_bot       INTEGER NOT NULL DEFAULT 0,   -- 1: this bot or a known bot account
    source       TEXT NOT NULL,         -- 'replay', 'twitch', 'discord'
    received_at  REAL NOT NULL
);
-- A resumed replay re-sends messages it already logged: inserts use
-- ON CONFLICT (message_id) DO NOTHING against this index.
CREATE UNIQUE INDEX chat_messages_message_id ON chat_messages (message_id)
    WHERE message_id IS NOT NULL;
CREATE INDEX chat_messages_by_stream_offset ON chat_messages (stream_id, offset_s);

CREATE TABLE bot_replies (
    id            INTEGER PRIMARY KEY,
    stream_id     INTEGER NOT NULL REFERENCES streams (id),
    offset_s      REAL NOT NULL,
    trigger       TEXT NOT NULL,        -- 'addressed', 'burst' or 'quiet'
    prompt        TEXT NOT NULL,
    candidates    TEXT NOT NULL DEFAULT '[]',  -- JSON [{text, allowed, reason, score}]
    chosen        TEXT,
    verdicts      TEXT NOT NULL DEFAULT '{}',  -- JSON {reason: number of candidates}
    status        TEXT NOT NULL,        -- 'posted', 'blocked', 'rate_limited', 'failed'
    in_reply_to   TEXT,                 -- message_id answered, when addressed
    reply_to_user TEXT,
    latency_s     REAL,
    first_token_s REAL,
    model         TEXT,
    adapter       TEXT,
    created_at    REAL NOT NULL
);
CREATE INDEX bot_replies_by_stream_offset ON bot_replies (stream_id, offset_s);

-- One row per non-bot chat message at offset t, with the context a chatter had:
--   transcript:   text of the utterances of the same stream whose end_s lies in
--                 [t - 60, t - 1], in speaking order, joined by one space.
--                 60 s = TRANSCRIPT_WINDOW_S, 1 s = REACTION_GAP_S (speech that
--                 ended less than a second before t cannot have been read yet).
--   chat_context: the 10 (CHAT_CONTEXT_MESSAGES) chat messages of the same stream
--                 before this one (bots included), oldest first, each as
--                 "user: text", joined by newlines. "Before" means a smaller
--                 offset, or the same offset and logged earlier (smaller id).
-- Empty strings where there is nothing. A later issue makes the three
-- constants configurable from Python.
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
WHERE m.is_bot = 0;
