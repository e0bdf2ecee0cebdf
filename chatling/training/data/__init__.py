"""Training data: chat logs and VODs (or the bot's own SQLite log) aligned into
(context -> chat message) pairs, filtered, stored as a dataset and split."""
