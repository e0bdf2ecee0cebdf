-- 004_drop_training_pairs_view.sql: the training_pairs view goes.
--
-- 001 and 002 defined a view of (chat message, transcript, chat context) rows
-- with its own hard-coded cut: speech that ended 60 s to 1 s before the
-- message, the 10 chat lines before it. Training never read it: `chatling data
-- from-db` and the nightly export read streams through chatling/store/reader.py
-- and cut the context in Python (chatling/training/data/align.py,
-- AlignOptions: configurable, by default 45 s to 4 s and 20 chat lines, and
-- word-timed). A second definition of a training pair that disagrees with the
-- one in use only misleads whoever queries the file, so it is dropped. The
-- tables are untouched.

DROP VIEW IF EXISTS training_pairs;
