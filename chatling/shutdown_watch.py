"""What a stop that takes too long is waiting for, and a second signal to hurry it.

``chatling run`` stops gracefully on SIGINT/SIGTERM: sources close, the reply
in flight finishes, the store flushes, the engine shuts down. That normally
takes seconds. When it does not, a streamer (or a supervisor about to send
SIGKILL, which loses the store's last batch) needs to know what it waits
for, so after ``grace_s`` this logs every pending asyncio task with the line
it is awaiting, and ``faulthandler`` writes every thread's stack to stderr
(from its own thread, so it also fires when the event loop is already gone
and the interpreter waits on a worker thread at exit), once. A second
signal does not wait for the reply in flight: ``hurry`` is called, and the
usual clean-up (store flush, engine shutdown) still runs.
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import logging
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)


class ShutdownWatch:
    """Counts stop requests; arms the slow-stop report on the first, hurries on the second."""

    def __init__(self, hurry: Callable[[], None], grace_s: float = 45.0) -> None:
        self._hurry = hurry
        self._grace_s = grace_s
        self._requests = 0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def requested(self) -> bool:
        return self._requests > 0

    def request(self) -> None:
        """One SIGINT/SIGTERM (call from the event loop)."""
        self._requests += 1
        if self._requests == 1:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._grace_s, self.report)
            faulthandler.dump_traceback_later(self._grace_s, exit=False, file=sys.stderr)
        elif self._requests == 2:
            log.warning("second stop signal: not waiting for the reply in flight")
            self._hurry()

    def report(self) -> None:
        """Log what the stop still waits for: the pending tasks (threads: ``faulthandler``)."""
        tasks = [t for t in asyncio.all_tasks() if not t.done()]
        log.warning(
            "still stopping after %.0f s; %d task(s) pending (send the signal again to stop "
            "without the reply in flight):",
            self._grace_s,
            len(tasks),
        )
        for task in tasks:
            out = io.StringIO()
            task.print_stack(limit=4, file=out)
            log.warning("%s", out.getvalue().rstrip())

    def close(self) -> None:
        """The event loop's part is done: no task report (the thread dump stays armed
        until the process exits, which also covers a hang in interpreter shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
