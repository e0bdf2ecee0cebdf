"""Fresher speech pre-empts a reply nobody asked for, with the real engine.

The pipeline replies whenever idle (no cooldowns, quiet interval 0). An
utterance arrives while the engine is generating a quiet reply from older
speech: that reply is dropped unlogged (nothing was filtered or posted) and the
next one is generated with the new utterance in its prompt. An addressed reply
is never pre-empted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from chatling.app import build_limiter, build_safety
from chatling.core.clock import StreamClock
from chatling.core.events import ChatMessage, Utterance
from chatling.core.settings import Settings
from chatling.display import Display
from chatling.pipeline import EndOfStream, Pipeline, PipelineParts
from chatling.prompt import PromptBuilder
from chatling.sinks import TerminalSink
from chatling.store import Store

pytestmark = [pytest.mark.slow]


def _settings() -> Settings:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    for key, value in dict(
        global_cooldown_s=0.0, user_cooldown_s=0.0, quiet_interval_s=0.0, quiet_jitter_s=0.0,
        rate_messages=1000, max_tokens=32,
    ).items():  # fmt: skip
        setattr(settings.reply, key, value)
    return settings


async def _run(tmp_path: Path, engine: Any, addressed: bool) -> tuple[Pipeline, list[dict]]:
    import io

    settings = _settings()
    async with Store.open(tmp_path / "log.sqlite") as store:
        stream = await store.start_stream("t", "replay", None, engine.model_name, None)
        parts = PipelineParts(
            settings=settings.reply,
            engine=engine,
            prompts=PromptBuilder(settings.reply, engine.count_tokens),
            safety=build_safety(settings),
            limiter=build_limiter(settings),
            store=store,
            stream_id=stream,
            sink=TerminalSink(),
            display=Display(file=io.StringIO()),
            clock=StreamClock(1.0),
            channel="test",
            seed=0,
        )
        pipeline = Pipeline(parts)
        # Queued before the loop starts, so the first reply already hears them.
        if addressed:
            await pipeline.inbox.put(ChatMessage(0.0, "fan", "@chatling what are we building?"))
        await pipeline.inbox.put(Utterance(0.0, 0.0, "Welcome back, today we build a castle."))
        running = asyncio.create_task(pipeline.run())
        for _ in range(200):  # until the first reply is inside the engine
            if pipeline._in_engine:
                break
            await asyncio.sleep(0.005)
        assert pipeline._in_engine, "the first reply never reached the engine"
        fresh = Utterance(0.0, 0.0, "Oh no, the dragon just burned the bridge!")
        await pipeline.inbox.put(fresh)
        for _ in range(400):
            if pipeline.stats.posted + pipeline.stats.blocked >= 2:
                break
            await asyncio.sleep(0.025)
        await pipeline.inbox.put(EndOfStream())
        await running
        await store.flush()
        rows = await store.replies(stream)
    return pipeline, rows


async def test_fresh_speech_preempts_a_quiet_reply(tmp_path: Path, engine: Any) -> None:
    pipeline, rows = await _run(tmp_path, engine, addressed=False)
    assert pipeline.stats.preempted == 1
    assert rows, "no reply logged after the pre-emption"
    assert "dragon" in rows[0]["prompt"], "the first logged reply must hear the fresh speech"


async def test_an_addressed_reply_is_never_preempted(tmp_path: Path, engine: Any) -> None:
    pipeline, rows = await _run(tmp_path, engine, addressed=True)
    assert pipeline.stats.preempted == 0
    assert rows[0]["trigger"] == "addressed" and "dragon" not in rows[0]["prompt"]
