"""The one logging set-up: the ``chatling`` command and the processes it starts
(the nightly retrain child, ``python -m chatling.models``) all log the same way."""

from __future__ import annotations

import logging
import os
import sys

QUIET_LOGGERS = ("httpx", "urllib3", "datasets", "filelock", "faster_whisper", "chatling.safety")
"""Libraries whose INFO lines drown the command's own progress (shown with --verbose)."""


def setup_logging(verbose: bool = False, level: str = "INFO") -> None:
    """Timestamped lines on stderr; DEBUG with ``--verbose``, else ``level`` (settings'
    ``log_level``) with vLLM's per-step lines and chatty libraries kept to warnings.
    A no-op where logging is set up already (a command run from another, a test)."""
    if logging.getLogger().handlers:
        return
    logging.basicConfig(
        level=logging.DEBUG if verbose else getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if not verbose:
        # vLLM logs every engine step at INFO; keep the terminal for the stream.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        for noisy in QUIET_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.WARNING)
