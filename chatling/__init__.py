"""chatling: a bot that chats live like a streamer's own Twitch chat.

The package is a pipeline: sources put typed events on one inbox, a rolling
context and a pure reply policy decide when to speak, an in-process vLLM engine
writes candidates, a safety filter and a rate limiter guard what is posted, and
every step is logged to SQLite.
"""

import logging

__version__ = "0.1.0"

# A library logger with no handlers: the CLI decides where logs go.
logging.getLogger(__name__).addHandler(logging.NullHandler())
