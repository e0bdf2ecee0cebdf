"""Shared fixtures: the real vLLM engine and Whisper model, built once per session.

Tests use the packaged models provisioned by ``make test`` (``python -m chatling
models provision``); the engine runs with ``enforce_eager=True`` so the
session starts in about half a minute instead of compiling.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from chatling.core.paths import DEFAULT_MODEL_DIR, DEFAULT_WHISPER_DIR
from chatling.core.settings import AudioSettings, ModelSettings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SPEECH = SHARED / "data" / "speech"


def require_shared(path: Path) -> Path:
    """Skip (with the reason) when the shared data set beside the checkout is absent."""
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared data set is not beside this checkout")
    return path


def require_models() -> None:
    if (
        not (DEFAULT_MODEL_DIR / "config.json").exists()
        or not (DEFAULT_WHISPER_DIR / "model.bin").exists()
    ):
        pytest.fail("packaged models are not provisioned: run `make test` (or `make setup`)")


@pytest.fixture(autouse=True)
def _no_thread_dump_outlives_its_test() -> Iterator[None]:
    """A run stopped by a signal arms a thread dump until the process exits (right for
    ``chatling run``); this session goes on, so each test's armed dumps are disarmed."""
    yield
    from chatling.shutdown_watch import cancel_thread_dumps

    cancel_thread_dumps()


@pytest.fixture(scope="session")
def whisper_model() -> Any:
    """The packaged Whisper base (CTranslate2), loaded once."""
    require_models()
    from chatling.transcribe import load_whisper

    return load_whisper(AudioSettings())


@pytest_asyncio.fixture(scope="session")
async def engine() -> AsyncIterator[Any]:
    """The real vLLM engine with the packaged SmolLM2-135M-Instruct, once per session."""
    require_models()
    from chatling.engine import VllmEngine

    async with VllmEngine.start(ModelSettings(enforce_eager=True, max_model_len=2048)) as eng:
        yield eng
