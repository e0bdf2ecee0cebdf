"""The slow-stop report and the second-signal hurry of ``chatling run`` (chatling.shutdown_watch).

Real asyncio tasks and a real (short) grace period; the live test
(tests/test_live.py) covers a real SIGTERM of the whole bot.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging

from chatling.shutdown_watch import ShutdownWatch


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
        faulthandler.cancel_dump_traceback_later()
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
        faulthandler.cancel_dump_traceback_later()
    assert "second stop signal" in caplog.text
    assert "still stopping" not in caplog.text
