"""The slow-stop report and the second-signal hurry of ``chatling run`` (chatling.shutdown_watch).

Real asyncio tasks and a real (short) grace period; the live test
(tests/test_live.py) covers a real SIGTERM of the whole bot.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading

from chatling.shutdown_watch import ShutdownWatch, StopSignals, cancel_thread_dumps


async def test_first_request_reports_pending_tasks_after_grace(caplog) -> None:
    hurried: list[bool] = []
    watch = ShutdownWatch(hurry=lambda: hurried.append(True), grace_s=0.2)
    stuck = asyncio.create_task(asyncio.sleep(30), name="stuck-reply")
    caplog.set_level(logging.WARNING, logger="chatling.shutdown_watch")
    try:
        watch.request()
        assert watch.requested and not hurried
        await asyncio.sleep(0.5)
    finally:
        watch.cancel_thread_dump()
        stuck.cancel()
        watch.close()
    text = caplog.text
    assert "still stopping after 0 s" in text
    assert "stuck-reply" in text and "sleep" in text


async def test_second_request_hurries_once_and_close_stops_the_report(caplog) -> None:
    hurried: list[bool] = []
    watch = ShutdownWatch(hurry=lambda: hurried.append(True), grace_s=0.2)
    caplog.set_level(logging.WARNING, logger="chatling.shutdown_watch")
    try:
        watch.request()
        watch.request()
        watch.request()
        assert hurried == [True]
        watch.close()
        await asyncio.sleep(0.4)
    finally:
        watch.cancel_thread_dump()
    assert "second stop signal" in caplog.text
    assert "still stopping" not in caplog.text


async def test_stop_signals_reach_the_loop_until_closed_then_the_old_handler_is_back() -> None:
    """A Ctrl-C between the reply loop's end and the last flush must not raise
    KeyboardInterrupt (asyncio's remove_signal_handler alone puts Python's default back)."""
    seen: list[str] = []

    def before(signum: int, frame: object) -> None:
        seen.append("before")

    previous = signal.signal(signal.SIGINT, before)
    try:
        signals = StopSignals()
        signals.install(lambda: seen.append("loop"))
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.05)
        assert seen == ["loop", "loop"]
        signals.close()
        assert signal.getsignal(signal.SIGINT) is before
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.05)
        assert seen == ["loop", "loop", "before"]
        signals.close()  # twice is harmless (a run's exit stack may close it once more)
    finally:
        signal.signal(signal.SIGINT, previous)


async def test_slow_stop_dumps_every_thread_with_busy_threads_running(capsys) -> None:
    """The thread dump holds the GIL while it reads frames: a busy Python thread (the
    engine's, in a real run) changing its stack meanwhile cannot crash it, as
    faulthandler's watchdog crashed a CI run."""
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(i * i for i in range(200))

    worker = threading.Thread(target=busy, name="busy-worker", daemon=True)
    worker.start()
    watch = ShutdownWatch(hurry=lambda: None, grace_s=0.1)
    try:
        watch.request()
        await asyncio.sleep(0.3)
        # On a loaded machine the dump (formatting every stack) can take longer than the grace:
        # wait for the dump thread itself to end, not a fixed time.
        # (Only this test's: conftest disarms every other test's dump.)
        for thread in threading.enumerate():
            if thread.name == "chatling-slow-stop-dump":
                await asyncio.to_thread(thread.join, 30)
    finally:
        watch.cancel_thread_dump()
        watch.close()
        stop.set()
        worker.join(5)
    err = capsys.readouterr().err
    assert "still stopping; the stack of every thread" in err
    assert "Thread MainThread:" in err and "Thread chatling-slow-stop-dump:" in err
    # The busy thread's own frames are there (its frames are walked before any source
    # line is read; walked after, a finished generator frame cut its stack to one line).
    busy_section = err.partition("Thread busy-worker:")[2].partition("\nThread ")[0]
    assert "test_shutdown_watch.py" in busy_section, err


async def test_cancel_thread_dumps_disarms_every_armed_dump(capsys) -> None:
    """What conftest does after each test: runs stopped in this process dump nothing later."""
    watches = [ShutdownWatch(hurry=lambda: None, grace_s=0.2) for _ in range(3)]
    for watch in watches:
        watch.request()
        watch.close()
    assert cancel_thread_dumps() == 3
    assert cancel_thread_dumps() == 0
    await asyncio.sleep(0.5)
    assert "still stopping" not in capsys.readouterr().err


async def test_a_cancelled_thread_dump_writes_nothing(capsys) -> None:
    watch = ShutdownWatch(hurry=lambda: None, grace_s=0.1)
    watch.request()
    watch.cancel_thread_dump()
    watch.close()
    await asyncio.sleep(0.3)
    assert "still stopping" not in capsys.readouterr().err
