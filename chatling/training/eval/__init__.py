"""Evaluation: ranking the real message among candidates (``evaluate``,
``rankers``, ``metrics``), what the bot would post at held-out moments
(``generate``, ``writing``), and the report."""
