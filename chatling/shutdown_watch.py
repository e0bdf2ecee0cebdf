"""What a stop that takes too long is waiting for, and a second signal to hurry it.

``chatling run`` stops gracefully on SIGINT/SIGTERM: sources close, the reply
in flight finishes, the store flushes, the engine shuts down. That normally
takes seconds. When it does not, a streamer (or a supervisor about to send
SIGKILL, which loses the store's last batch) needs to know what it waits
for, so after ``grace_s`` this logs every pending asyncio task with the line
it is awaiting, and a daemon timer thread writes every thread's stack to stderr
(from its own thread, so it also fires when the event loop is already gone
and the interpreter waits on a worker thread at exit), once. Not
``faulthandler.dump_traceback_later``: its watchdog reads the other threads'
frames without the GIL, and with the engine's threads running it crashed a
test run with a segmentation fault (CI, 2026-12-06); a crash in the stop loses
the store's last batch. The timer takes the GIL (``sys._current_frames``), so a
thread stuck in C code holding the GIL delays the dump, never corrupts it. A second
signal does not wait for the reply in flight: ``hurry`` is called, and the
usual clean-up (store flush, engine shutdown) still runs.

``StopSignals`` keeps the signals on the event loop until the run has
returned, clean-up included: asyncio's ``remove_signal_handler`` puts back
Python's default SIGINT handler, so a Ctrl-C after the reply loop ended but
before the last flush and the engine's shutdown used to raise
``KeyboardInterrupt`` at whatever line was running.
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Every thread dump armed and not yet fired or cancelled: a process that goes on after
# its runs have stopped (a test session) disarms them all with ``cancel_thread_dumps``.
_armed_dumps: set[_ThreadDump] = set()
_armed_lock = threading.Lock()


class StopSignals:
    """SIGINT/SIGTERM handled on the event loop from ``install`` until ``close``.

    A run installs it where the reply loop starts and closes it last of all
    (first on its exit stack), so a signal during the clean-up still goes to
    ``on_signal`` (a second one hurries, as the first did nothing more) and
    never raises in the middle of a flush. ``close`` puts back whatever
    handler was there before (``asyncio.run``'s own, which cancels the main
    task), not Python's default.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[int, Any] = {}

    def install(self, on_signal: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, on_signal)
        self._loop = loop

    def close(self) -> None:
        if self._loop is None:
            return
        for sig in STOP_SIGNALS:
            self._loop.remove_signal_handler(sig)
            previous = self._previous.get(sig)
            if callable(previous) or previous in (signal.SIG_DFL, signal.SIG_IGN):
                signal.signal(sig, previous)
        self._loop = None


class ShutdownWatch:
    """Counts stop requests; arms the slow-stop report on the first, hurries on the second."""

    def __init__(self, hurry: Callable[[], None], grace_s: float = 45.0) -> None:
        self._hurry = hurry
        self._grace_s = grace_s
        self._requests = 0
        self._timer: asyncio.TimerHandle | None = None
        self._thread_dump: _ThreadDump | None = None

    @property
    def requested(self) -> bool:
        return self._requests > 0

    def request(self) -> None:
        """One SIGINT/SIGTERM (call from the event loop)."""
        self._requests += 1
        if self._requests == 1:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._grace_s, self.report)
            self._thread_dump = _ThreadDump(self._grace_s).arm()
        elif self._requests == 2:
            log.warning("second stop signal: not waiting for the reply in flight")
            self._hurry()

    def report(self) -> None:
        """Log what the stop still waits for: the pending tasks (threads: ``dump_threads``)."""
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

    def cancel_thread_dump(self) -> None:
        """Disarm the thread dump (a process that goes on after a stop, as a test does)."""
        if self._thread_dump is not None:
            self._thread_dump.disarm()
            self._thread_dump = None


class _ThreadDump(threading.Timer):
    """A daemon timer that dumps every thread's stack once, known to ``cancel_thread_dumps``."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s, self._fire)
        self.daemon = True
        self.name = "chatling-slow-stop-dump"

    def arm(self) -> _ThreadDump:
        with _armed_lock:
            _armed_dumps.add(self)
        self.start()
        return self

    def disarm(self) -> None:
        self.cancel()
        with _armed_lock:
            _armed_dumps.discard(self)

    def _fire(self) -> None:
        with _armed_lock:
            _armed_dumps.discard(self)
        dump_threads()


def cancel_thread_dumps() -> int:
    """Disarm every armed thread dump; how many there were.

    A dump stays armed until the process exits (``ShutdownWatch.close``), which is right
    for ``chatling run`` and wrong for a process that goes on after a run stopped: a test
    session would get, 45 s after each stopped run, every thread's stack in the middle of
    another test."""
    with _armed_lock:
        timers = list(_armed_dumps)
    for timer in timers:
        timer.disarm()
    return len(timers)


def dump_threads() -> None:
    """Every thread's stack, to stderr: what a slow stop waits for outside the event loop."""
    names = {t.ident: t.name for t in threading.enumerate()}
    stacks = _snapshot_stacks()
    out = sys.stderr
    try:
        out.write("chatling: still stopping; the stack of every thread:\n")
        for ident, frames in stacks.items():
            out.write(f"\nThread {names.get(ident, ident)}:\n")
            out.write("".join(traceback.StackSummary.from_list(frames).format()))
        out.flush()
    except (OSError, ValueError):  # stderr closed at exit: nothing to write to
        pass


def _snapshot_stacks() -> dict[int, list[tuple[str, int, str, str | None]]]:
    """Each thread's frames, outermost first, read before any source line is looked up.

    Reading a source line is file I/O, which lets the other threads run: walked
    then, a busy thread's generator frame that finished meanwhile ends its chain (a
    one-frame stack). The frames are walked first, holding the GIL between switches."""
    stacks = {}
    for ident, frame in sys._current_frames().items():
        frames = []
        current: Any = frame
        while current is not None:
            code = current.f_code
            frames.append((code.co_filename, current.f_lineno, code.co_name, None))
            current = current.f_back
        stacks[ident] = frames[::-1]
    return stacks
