"""What the training commands share: one logging set-up and argparse's number checks."""

from __future__ import annotations

import argparse
import logging
import sys

QUIET_LOGGERS = ("httpx", "urllib3", "datasets", "filelock", "faster_whisper", "chatling.safety")
"""Libraries whose INFO lines drown the command's own progress (shown with --verbose)."""


def setup_logging(verbose: bool) -> None:
    """Timestamped lines on stderr; DEBUG with ``--verbose``, else INFO and quiet libraries."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if not verbose:
        for noisy in QUIET_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.WARNING)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


__all__ = ["QUIET_LOGGERS", "positive_int", "setup_logging"]
