"""The whole pipeline on a short clip of the demo stream, at high speed.

Real parts: the demo clip's audio through faster-whisper, its chat log through
the TwitchDownloader reader, the real vLLM engine, the safety filter, the rate
limiter and a real SQLite file. Asserts what a streamer would check: the bot
replied, every reply is stored with its candidates and verdicts, nothing that
was posted breaks the filter's rules, and the rate limit held.
"""

from __future__ import annotations

import io
import sqlite3

import pytest

from chatling.app import ReplayRequest, build_safety, replay
from chatling.chatlog import read_chat_log
from chatling.core.events import ChatMessage
from chatling.core.paths import PROJECT_ROOT
from chatling.core.settings import Settings
from chatling.display import Display

CLIP = PROJECT_ROOT / "data" / "demo" / "clip.opus"
CLIP_CHAT = PROJECT_ROOT / "data" / "demo" / "clip_chat.json"

pytestmark = [pytest.mark.engine]


def _settings(tmp_path, **reply) -> Settings:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    settings.storage.db_path = str(tmp_path / "replay.sqlite")
    settings.storage.flush_interval_s = 0.2
    # Eager replies so a 30 s clip exercises the reply path several times.
    defaults = dict(
        global_cooldown_s=2.0,
        quiet_interval_s=6.0,
        quiet_jitter_s=1.0,
        rate_messages=3,
        rate_window_s=30.0,
    )
    for key, value in {**defaults, **reply}.items():
        setattr(settings.reply, key, value)
    return settings


async def test_replay_clip_end_to_end(engine, whisper_model, tmp_path) -> None:
    settings = _settings(tmp_path)
    out = io.StringIO()
    result = await replay(
        settings,
        ReplayRequest(audio=CLIP, chat=CLIP_CHAT, speed=3.0),
        Display(file=out),
        engine=engine,
        whisper_model=whisper_model,
    )
    stats = result.stats
    expected_chat = len(read_chat_log(CLIP_CHAT))
    assert stats.chat_in == expected_chat
    assert stats.utterances_in >= 3
    assert stats.posted >= 1
    attempts = stats.posted + stats.blocked + stats.rate_limited + stats.failed
    assert attempts >= 2

    db = sqlite3.connect(result.db_path)
    try:
        db.row_factory = sqlite3.Row
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM chat_messages").fetchone()[0] == expected_chat
        assert db.execute("SELECT COUNT(*) FROM utterances").fetchone()[0] == stats.utterances_in
        replies = db.execute("SELECT * FROM bot_replies ORDER BY offset_s").fetchall()
        stream = db.execute("SELECT * FROM streams").fetchone()
    finally:
        db.close()
    assert stream["ended_at"] is not None
    assert len(replies) == attempts
    posted = [r for r in replies if r["status"] == "posted"]
    assert len(posted) == stats.posted
    # The rate limit (3 per 30 s of stream) held over any window.
    times = [r["offset_s"] for r in posted]
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u < t + 30.0) <= 3
    # Every posted reply passes the filter again, and was a candidate that passed it.
    safety = build_safety(settings)
    for row in posted:
        assert row["chosen"] and len(row["chosen"]) <= 500
        verdict = safety.check(
            row["chosen"], now=row["offset_s"], reply_to_user=row["reply_to_user"], recent_chat=[]
        )
        assert verdict.allowed, (row["chosen"], verdict.reason)
        assert '"allowed": true' in row["candidates"]
        assert row["model"] and row["latency_s"] > 0
        # The default prompt is the chat-log form: the streamer's words, the chat lines
        # as `name: text`, and the bot's own name left open for the model to fill in.
        assert "The streamer is saying:" in row["prompt"]
        assert row["prompt"].rstrip().endswith(f"{settings.reply.bot_name}:")
        assert any(
            f"{m.display_name or m.user}: " in row["prompt"] for m in read_chat_log(CLIP_CHAT)
        )
    # The bot never repeats its own post within the duplicate window, in a replay too
    # (where no platform echoes its lines back as chat).
    for i, row in enumerate(posted):
        earlier = [
            ChatMessage(offset=r["offset_s"], user=settings.reply.bot_name, text=r["chosen"])
            for r in posted[:i]
        ]
        verdict = safety.check(
            row["chosen"], now=row["offset_s"], reply_to_user=None, recent_chat=earlier
        )
        assert verdict.reason != "duplicate_of_chat", row["chosen"]
    text = out.getvalue()
    assert "streamer" in text and "chatling" in text


async def test_replay_until_stops_early(engine, whisper_model, tmp_path) -> None:
    settings = _settings(tmp_path)
    result = await replay(
        settings,
        ReplayRequest(audio=CLIP, chat=CLIP_CHAT, speed=4.0, until_s=8.0),
        Display(file=io.StringIO()),
        engine=engine,
        whisper_model=whisper_model,
    )
    all_chat = read_chat_log(CLIP_CHAT)
    assert result.stats.chat_in == sum(1 for m in all_chat if m.offset <= 8.0)
    db = sqlite3.connect(result.db_path)
    try:
        ends = [row[0] for row in db.execute("SELECT end_s FROM utterances")]
    finally:
        db.close()
    assert ends and max(ends) <= 9.0, "no audio past --until should be transcribed"


async def test_a_stop_while_audio_is_decoding_ends_cleanly(whisper_model) -> None:
    """Ctrl-C while the decoder thread is inside the audio generator: the replay's audio
    source ends with the cancellation, not with "generator already executing" (a CI run
    of the browser test ended a replay's stop with that error), and no decoder thread is
    left behind. The demo stream decoded as one 175 s chunk takes about half a second
    here, so a cancel after 0.1 s lands while it decodes."""
    import asyncio
    import threading

    from chatling.core.clock import StreamClock
    from chatling.sources.replay import replay_audio
    from chatling.transcribe import StreamingTranscriber, TranscriberOptions

    inbox: asyncio.Queue = asyncio.Queue()
    transcriber = StreamingTranscriber(whisper_model, TranscriberOptions())
    for _ in range(3):
        task = asyncio.create_task(
            replay_audio(
                PROJECT_ROOT / "data" / "demo" / "stream.opus",
                StreamClock(speed=1000.0),
                transcriber,
                inbox,
                chunk_s=175.0,
            )
        )
        await asyncio.sleep(0.1)
        assert not task.done(), "the chunk decoded before the stop: the test proves nothing"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The decoder's thread exits on its own once the close has run; the replay does not
    # wait for that exit (a few milliseconds), so give it a bounded moment here.
    decoders = [t for t in threading.enumerate() if t.name.startswith("chatling-decode")]
    for thread in decoders:
        thread.join(timeout=10)
    assert not [t for t in decoders if t.is_alive()]
