"""What every command shares: the one logging set-up (``chatling.core.logs``) and argparse's
number checks."""

from __future__ import annotations

import argparse

from chatling.core.logs import QUIET_LOGGERS, setup_logging


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


__all__ = ["QUIET_LOGGERS", "positive_int", "setup_logging"]
