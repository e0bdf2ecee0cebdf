"""Keeps the running engine on the adapter that ``active.json`` names.

The nightly job and ``chatling adapters promote|rollback`` run in other
processes; they change only the pointer file (``chatling.learn.registry``). This task
polls it (a ``stat`` every ``poll_s``; the file is re-read only when its
modification time or size changed) and asks the engine to load what it names.
The engine loads a new adapter before switching to it, so a broken one is
refused while the current one keeps serving; that version is then remembered
as refused and not retried until the pointer changes again.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Protocol

from chatling.core.errors import ConfigError, ModelError
from chatling.learn.registry import AdapterRegistry

log = logging.getLogger(__name__)


class AdapterEngine(Protocol):
    async def set_adapter(self, path: str | Path | None) -> object: ...


class AdapterWatcher:
    """Applies pointer changes to the engine; ``sync()`` once, ``run()`` forever."""

    def __init__(
        self, registry: AdapterRegistry, engine: AdapterEngine, poll_s: float = 2.0
    ) -> None:
        self.registry = registry
        self.engine = engine
        self.poll_s = poll_s
        self.serving: str | None = None
        """The version the engine serves (``None``: the base model)."""
        self.refused: str | None = None
        self.swaps = 0
        self._seen: tuple[float, int] | None = None

    def _stamp(self) -> tuple[float, int] | None:
        try:
            st = self.registry.pointer_path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime, st.st_size)

    async def sync(self) -> bool:
        """Load the pointer's version if it is not the one serving; True if it changed."""
        self._seen = self._stamp()
        try:
            wanted = self.registry.pointer().version
        except ConfigError as exc:
            log.error("%s; keeping adapter %s", exc, self.serving or "none (base model)")
            return False
        if wanted == self.serving or (wanted is not None and wanted == self.refused):
            return False
        path = self.registry.path_of(wanted) if wanted else None
        try:
            await self.engine.set_adapter(path)
        except ModelError as exc:
            self.refused = wanted
            log.error(
                "adapter %s refused (%s); still serving %s",
                wanted,
                exc,
                self.serving or "the base model",
            )
            return False
        log.info("now serving adapter %s (was %s)", wanted or "none", self.serving or "none")
        self.serving, self.refused = wanted, None
        self.swaps += 1
        return True

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self.poll_s)
            stamp = await asyncio.to_thread(self._stamp)
            if stamp != self._seen:
                await self.sync()


__all__ = ["AdapterWatcher"]
