"""Event sources: each puts ``ChatMessage`` and ``Utterance`` values on the inbox."""
