"""Tests of the rolling context and prompt trimming (chatling/context.py)."""

from __future__ import annotations

import random

import pytest

from chatling.context import ContextSnapshot, RollingContext, format_line, trim_to_budget
from chatling.core.errors import ConfigError
from chatling.core.events import ChatMessage, Utterance


def words(text: str) -> int:
    """A real, simple token counter: one token per whitespace-separated word."""
    return len(text.split())


def chat(offset: float, user: str = "viewer", text: str = "hello", **kw) -> ChatMessage:
    return ChatMessage(offset=offset, user=user, text=text, **kw)


def test_snapshot_keeps_speech_of_the_last_window_only() -> None:
    ctx = RollingContext(transcript_window_s=60, max_chat_messages=20)
    ctx.add_utterance(Utterance(0, 5, "too old"))
    ctx.add_utterance(Utterance(30, 45, "just inside"))
    ctx.add_utterance(Utterance(90, 100, "recent"))
    ctx.add_utterance(Utterance(104, 108, "not yet said at 105"))
    snap = ctx.snapshot(105)
    assert [u.text for u in snap.utterances] == ["just inside", "recent"]
    assert snap.now == 105


def test_snapshot_keeps_last_viewer_messages_oldest_first() -> None:
    ctx = RollingContext(transcript_window_s=60, max_chat_messages=3)
    for i in range(6):
        ctx.add_chat(chat(float(i), text=f"m{i}"))
    ctx.add_chat(chat(5.5, user="nightbot", text="bot says hi", is_bot=True))
    ctx.add_chat(chat(9.0, text="from the future"))
    snap = ctx.snapshot(6.0)
    assert [m.text for m in snap.chat] == ["m4", "m5"]  # m3 was evicted by m9's arrival
    assert all(not m.is_bot for m in snap.chat)
    assert [m.text for m in ctx.snapshot(10.0).chat] == ["m4", "m5", "from the future"]


def test_bot_messages_never_enter_the_context() -> None:
    ctx = RollingContext(60, 5)
    ctx.add_chat(chat(1.0, user="chatling", text="I am the bot", is_bot=True))
    assert ctx.snapshot(2.0).chat == ()


def test_late_events_are_put_in_time_order() -> None:
    ctx = RollingContext(60, 10)
    ctx.add_chat(chat(3.0, text="c"))
    ctx.add_chat(chat(1.0, text="a"))
    ctx.add_chat(chat(2.0, text="b"))
    ctx.add_utterance(Utterance(5, 6, "second"))
    ctx.add_utterance(Utterance(1, 2, "first"))
    snap = ctx.snapshot(10)
    assert [m.text for m in snap.chat] == ["a", "b", "c"]
    assert [u.text for u in snap.utterances] == ["first", "second"]


def test_memory_stays_bounded_over_a_ten_hour_stream() -> None:
    ctx = RollingContext(transcript_window_s=60, max_chat_messages=20)
    rng = random.Random(7)
    t = 0.0
    peak = 0
    while t < 10 * 3600:
        t += rng.uniform(0.05, 1.0)
        if rng.random() < 0.3:
            ctx.add_utterance(Utterance(t - 2, t, "words " * rng.randint(1, 20)))
        else:
            ctx.add_chat(chat(t, text="chat"))
        peak = max(peak, len(ctx))
    # 60 s of utterances at most one every 0.05 s plus 20 chat lines.
    assert peak <= 60 / 0.05 + 20
    assert len(ctx.snapshot(t).chat) == 20
    assert len(ctx) < 300


def test_invalid_sizes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="TRANSCRIPT_WINDOW_S"):
        RollingContext(0, 5)
    with pytest.raises(ConfigError, match="MAX_CHAT_MESSAGES"):
        RollingContext(60, -1)


def make_snapshot() -> ContextSnapshot:
    utts = tuple(Utterance(i * 10.0, i * 10.0 + 5, f"streamer line {i} " * 3) for i in range(6))
    msgs = tuple(chat(i * 10.0 + 7, user=f"u{i}", text=f"chat line {i}") for i in range(6))
    return ContextSnapshot(now=60.0, utterances=utts, chat=msgs)


def cost(snap: ContextSnapshot) -> int:
    return sum(words(format_line(x)) for x in (*snap.utterances, *snap.chat))


def when(x: Utterance | ChatMessage) -> float:
    return x.end if isinstance(x, Utterance) else x.offset


def test_trim_fits_the_budget_and_drops_oldest_first() -> None:
    snap = make_snapshot()
    full = cost(snap)
    everything = [*snap.utterances, *snap.chat]
    for budget in range(0, full + 5):
        out = trim_to_budget(snap, words, budget)
        spent = cost(out)
        assert spent <= budget
        kept = [*out.utterances, *out.chat]
        if not kept:
            continue
        oldest_kept = min(when(x) for x in kept)
        for line in everything:
            if line in kept:
                continue
            if when(line) > oldest_kept:
                # A newer line was dropped while an older one stayed: only
                # because it could not fit beside what was kept.
                assert spent + words(format_line(line)) > budget
    assert trim_to_budget(snap, words, full) == snap


def test_trim_drops_strictly_oldest_when_lines_are_equal() -> None:
    lines = tuple(chat(float(i), text="one two three") for i in range(10))
    snap = ContextSnapshot(now=10.0, chat=lines)
    per_line = words(format_line(lines[0]))
    for n in range(11):
        out = trim_to_budget(snap, words, n * per_line)
        assert out.chat == lines[10 - n :]


def test_trim_keeps_newest_utterance_and_chat_when_they_fit() -> None:
    snap = make_snapshot()
    newest_u, newest_c = snap.utterances[-1], snap.chat[-1]
    budget = words(format_line(newest_u)) + words(format_line(newest_c))
    out = trim_to_budget(snap, words, budget)
    assert out.utterances == (newest_u,)
    assert out.chat == (newest_c,)
    assert out.now == snap.now
    # The input is untouched.
    assert len(snap.utterances) == 6 and len(snap.chat) == 6


def test_trim_keeps_newest_utterance_even_if_chat_is_newer() -> None:
    snap = make_snapshot()  # chat lines come 2 s after each utterance
    budget = words(format_line(snap.utterances[-1])) + words(format_line(snap.chat[-1])) + 3
    out = trim_to_budget(snap, words, budget)
    assert snap.utterances[-1] in out.utterances
    assert snap.chat[-1] in out.chat


def test_trim_keeps_the_answered_message() -> None:
    snap = make_snapshot()
    target = snap.chat[1]
    budget = sum(words(format_line(x)) for x in (target, snap.chat[-1], snap.utterances[-1]))
    out = trim_to_budget(snap, words, budget, keep=target)
    assert out.chat == (target, snap.chat[-1])
    assert out.utterances == (snap.utterances[-1],)


def test_trim_drops_a_newest_line_too_big_but_keeps_older_ones_that_fit() -> None:
    huge = Utterance(50, 59, "blah " * 500)
    small = tuple(chat(float(i), text="hi") for i in range(5))
    snap = ContextSnapshot(now=60, utterances=(huge,), chat=small)
    out = trim_to_budget(snap, words, 50)
    assert out.utterances == ()
    assert out.chat == small


def test_trim_counts_each_line_once() -> None:
    snap = make_snapshot()
    calls: list[str] = []

    def counting(text: str) -> int:
        calls.append(text)
        return words(text)

    trim_to_budget(snap, counting, 20)
    assert len(calls) == len(snap.utterances) + len(snap.chat)


def test_trim_with_custom_renderer_and_zero_budget() -> None:
    snap = make_snapshot()
    out = trim_to_budget(snap, len, 40, render_line=lambda x: "x" * 20)
    assert len(out.utterances) + len(out.chat) == 2
    assert trim_to_budget(snap, words, 0) == ContextSnapshot(now=snap.now)
