"""Which engine serves the bot: vLLM in this process, or a vLLM server over HTTP.

``CHATLING_MODEL__BACKEND`` names one entry of ``BACKENDS``; each entry is the
engine class's ``start`` (an async context manager that checks, yields and
always closes the engine). Both engines have the interface of
``chatling.pipeline.Engine`` plus ``set_adapter``/``adapter`` for the adapter
watcher, so callers never ask which one they hold.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from chatling.core.settings import ModelSettings
from chatling.engine import VllmEngine
from chatling.engine_server import ServerEngine

EngineStart = Callable[[ModelSettings], AbstractAsyncContextManager[Any]]

BACKENDS: dict[str, EngineStart] = {
    "inprocess": VllmEngine.start,
    "server": ServerEngine.start,
}


def start_engine(settings: ModelSettings) -> AbstractAsyncContextManager[Any]:
    """The engine ``settings.backend`` names, as an async context manager."""
    return BACKENDS[settings.backend](settings)


__all__ = ["BACKENDS", "start_engine"]
