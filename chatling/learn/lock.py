"""One retrain at a time per runs directory.

The scheduler inside ``chatling run`` and ``chatling retrain --now`` may start a
run while another is going (a slow run overlapping the next night, a manual run
during a scheduled one). Two runs would train on the same logs, number their
rows and directories in between each other and race to promote, so every run
takes an exclusive ``flock`` on ``RUNS_DIR/.lock`` first; one that cannot is
skipped, not queued. The lock goes with the process: a killed run leaves none.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def run_lock(runs_dir: Path) -> Iterator[bool]:
    """Exclusive per runs directory; yields False when another run holds it."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    with (runs_dir / ".lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


__all__ = ["run_lock"]
