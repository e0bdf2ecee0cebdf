"""The nightly retrain, scheduled inside ``chatling run`` (apscheduler 3.x).

The job does not train in this process: it starts ``python -m chatling.learn.nightly``
as a child (which lowers its own priority for the trainer) and awaits it, so
the event loop keeps answering chat and the engine keeps its memory. The cron
trigger comes from ``ScheduleSettings`` (crontab syntax and time zone);
``coalesce=True`` folds missed firings into one and ``max_instances=1`` stops
a slow run from overlapping the next (the child also takes a file lock).
With ``only_when_offline`` a firing while the stream is live (chat or speech
within ``live_idle_minutes``) is skipped with a log line. A promotion reaches
the engine through the pointer file (``chatling.learn.watcher``), not from here.
On shutdown a running child gets SIGTERM: it records its run as failed
("stopped") and the serving adapter stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

from chatling.core.errors import ConfigError
from chatling.core.paths import PROJECT_ROOT
from chatling.core.settings import ScheduleSettings

log = logging.getLogger(__name__)

JOB_ID = "nightly-retrain"


def cron_trigger(settings: ScheduleSettings) -> Any:
    """The apscheduler trigger of ``settings.cron`` in ``settings.timezone``; clear errors."""
    from apscheduler.triggers.cron import CronTrigger

    try:
        return CronTrigger.from_crontab(settings.cron, timezone=settings.timezone)
    except (ValueError, KeyError) as exc:
        raise ConfigError(
            f"CHATLING_SCHEDULE__CRON={settings.cron!r} / __TIMEZONE={settings.timezone!r}: "
            f"{exc}; use crontab syntax like '0 4 * * *' and a zone like 'Europe/Berlin'"
        ) from None


class NightlyScheduler:
    """``async with NightlyScheduler(...)``: the job is scheduled while inside."""

    def __init__(
        self,
        settings: ScheduleSettings,
        is_live: Callable[[], bool],
        *,
        env_file: str | None = ".env",
        trigger: Any = None,
        command: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.is_live = is_live
        self.env_file = env_file
        self.trigger = trigger if trigger is not None else cron_trigger(settings)
        self.command = command or [
            sys.executable, "-m", "chatling.learn.nightly", "--trigger", "schedule",
            *(["--env-file", env_file] if env_file else []),
        ]  # fmt: skip
        self.fired = 0
        self.skipped = 0
        self.finished: list[int] = []
        """Exit statuses of the runs that ended."""
        self._child: asyncio.subprocess.Process | None = None
        self._scheduler: Any = None

    async def __aenter__(self) -> NightlyScheduler:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        self._scheduler.add_job(
            self.run_once,
            self.trigger,
            id=JOB_ID,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=3600,
        )
        self._scheduler.start()
        job = self._scheduler.get_job(JOB_ID)
        log.info("nightly retrain scheduled; next run %s", job.next_run_time if job else "?")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        child = self._child
        if child is not None and child.returncode is None:
            log.info("stopping the retrain in progress (it records itself as stopped)")
            child.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wait(), 60)
            if child.returncode is None:
                child.kill()
                await child.wait()

    async def run_once(self) -> int | None:
        """One firing: skip while live, else run the job child to its end."""
        self.fired += 1
        if self.settings.only_when_offline and self.is_live():
            self.skipped += 1
            log.info(
                "nightly retrain skipped: the stream is live "
                "(CHATLING_SCHEDULE__ONLY_WHEN_OFFLINE=true)"
            )
            return None
        log.info("nightly retrain starting: %s", " ".join(self.command))
        self._child = await asyncio.create_subprocess_exec(
            *self.command,
            cwd=PROJECT_ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self._child.stdout is not None
        last = ""
        async for raw in self._child.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                last = line
                log.debug("retrain: %s", line)
        code = await self._child.wait()
        self.finished.append(code)
        if code == 0:
            log.info("nightly retrain finished: %s", last)
        else:
            log.error("nightly retrain failed (exit %s): %s", code, last)
        return code


__all__ = ["JOB_ID", "NightlyScheduler", "cron_trigger"]
