"""Alignment of chat to speech: hand-made cases with known answers, and the fast index
against the naive scan on random streams (window edges, K limit, ties, ordering).
Also the DougDoug corpus reader (skipped when the shared data set is absent)."""

from __future__ import annotations

import random

import pytest

from chatling.core.errors import ConfigError
from chatling.core.events import ChatMessage
from chatling.training.data.align import (
    AlignOptions,
    Segment,
    TranscriptIndex,
    Word,
    align,
    align_naive,
    spread_words,
)
from tests.conftest import SHARED, require_shared

SEGMENTS = [
    Segment(0.0, 3.0, "a1 a2 a3", (Word(0, 1, "a1"), Word(1, 2, "a2"), Word(2, 3, "a3"))),
    Segment(5.0, 8.0, "b1 b2 b3", (Word(5, 6, "b1"), Word(6, 7, "b2"), Word(7, 8, "b3"))),
]
OPTS = AlignOptions(window_s=6.0, delay_s=2.0, chat_messages=5)


def msg(t: float, user: str = "ann", text: str = "hi", **kw: object) -> ChatMessage:
    return ChatMessage(offset=t, user=user, text=text, **kw)  # type: ignore[arg-type]


def test_window_edges_are_inclusive_and_words_group_by_segment() -> None:
    # t = 9: speech in [3, 7]; a3 ends at 3 (in), b2 ends at 7 (in), b3 at 8 (out).
    (pair,) = align([msg(9.0)], [], SEGMENTS, "s", OPTS)
    assert pair.transcript == ("a3", "b1 b2")
    # A hair later both edges move: a3 (end 3) falls out, b3 (end 8) is not in yet.
    (later,) = align([msg(9.001)], [], SEGMENTS, "s", OPTS)
    assert later.transcript == ("b1 b2",)
    # Before any speech ended t - delay: nothing.
    (early,) = align([msg(2.5)], [], SEGMENTS, "s", OPTS)
    assert early.transcript == ()
    # Long after: the window is past all speech.
    (late,) = align([msg(20.0)], [], SEGMENTS, "s", OPTS)
    assert late.transcript == ()


def test_chat_is_strictly_before_limited_to_k_and_oldest_first() -> None:
    context = [
        msg(3.0, "dan", "same time"),
        msg(1.0, "bob", "first", display_name="Bob"),
        msg(2.0, "cat", "second"),
        msg(0.5, "eve", "zeroth"),
    ]
    target = msg(3.0, "ann", "  the target  ")
    (pair,) = align([target], [*context, target], SEGMENTS, "s", OPTS)
    # Same offset is not "before"; the target never sees itself; display names as live.
    assert pair.chat == ("eve: zeroth", "Bob: first", "cat: second")
    assert pair.target == "the target" and pair.user == "ann" and pair.offset == 3.0
    (two,) = align([target], context, SEGMENTS, "s", AlignOptions(6.0, 2.0, chat_messages=2))
    assert two.chat == ("Bob: first", "cat: second")
    (none,) = align([target], context, SEGMENTS, "s", AlignOptions(6.0, 2.0, chat_messages=0))
    assert none.chat == ()


def test_pairs_follow_target_order_and_carry_the_source() -> None:
    targets = [msg(9.0, "x"), msg(4.0, "y"), msg(9.0, "z")]
    pairs = align(targets, targets, SEGMENTS, "vod-1", OPTS)
    assert [p.user for p in pairs] == ["x", "y", "z"]
    assert {p.source for p in pairs} == {"vod-1"}
    assert pairs[0].chat == ("y: hi",)  # only y (t=4) is strictly before 9


def test_segments_without_words_spread_or_overlap() -> None:
    seg = Segment(0.0, 5.0, "aa b")
    assert spread_words(seg) == (Word(0.0, 3.0, "aa"), Word(3.0, 5.0, "b"))
    plain = [Segment(0.0, 3.0, "one"), Segment(7.0, 9.0, "two"), Segment(7.1, 9.0, "three")]
    # Overlap mode: a segment counts when it touches [a, b] (edges inclusive), whole.
    index = TranscriptIndex(plain, interpolate_words=False)
    assert index.lines(3.0, 7.0) == ("one", "two")
    assert index.lines(3.01, 7.0) == ("two",)
    # Spread mode: "one" ends at 3.0 and is in [3, 7]; "two" (7-9) is not finished by 7.
    spread = TranscriptIndex(plain, interpolate_words=True)
    assert spread.lines(3.0, 7.0) == ("one",)
    assert spread.lines(3.0, 9.0) == ("one", "two", "three")


def test_partial_segment_keeps_only_words_inside() -> None:
    long = Segment(
        0.0, 10.0, "w0 w1 w2 w3 w4", tuple(Word(i * 2, i * 2 + 2, f"w{i}") for i in range(5))
    )
    index = TranscriptIndex([long])
    assert index.lines(3.0, 7.0) == ("w1 w2",)  # ends 4 and 6
    assert index.lines(0.0, 10.0) == ("w0 w1 w2 w3 w4",)


@pytest.mark.parametrize("seed", range(6))
def test_fast_alignment_equals_the_naive_scan(seed: int) -> None:
    rng = random.Random(seed)
    segments = []
    t = 0.0
    for n in range(60):
        start = t + rng.choice([0.0, 0.5, 2.0])
        words = []
        w_t = start
        for k in range(rng.randint(1, 6)):
            w_end = w_t + rng.choice([0.25, 0.5, 1.0])
            words.append(Word(w_t, w_end, f"s{n}w{k}"))
            w_t = w_end
        with_words = rng.random() < 0.6
        segments.append(
            Segment(start, w_t, " ".join(w.text for w in words), tuple(words) if with_words else ())
        )
        t = w_t if rng.random() < 0.8 else start + 0.3  # some segments overlap
    # Times on a 0.25 s grid so that edges and ties are hit exactly.
    messages = [msg(rng.randrange(0, int(t * 4) + 40) / 4, f"u{i}", f"m{i}") for i in range(300)]
    for opts in (
        AlignOptions(10.0, 2.0, 5),
        AlignOptions(3.0, 0.0, 1),
        AlignOptions(45.0, 4.0, 20),
    ):
        targets = messages[::2]
        assert align(targets, messages, segments, "r", opts) == align_naive(
            targets, messages, segments, "r", opts
        )


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="empty"):
        AlignOptions(window_s=4.0, delay_s=4.0)
    with pytest.raises(ConfigError, match="empty"):
        AlignOptions(window_s=10.0, delay_s=-1.0)
    with pytest.raises(ConfigError, match="chat_messages"):
        AlignOptions(chat_messages=-1)
    with pytest.raises(ConfigError, match="finite"):
        AlignOptions(window_s=float("nan"))
    opts = AlignOptions(30.0, 3.0, 7, interpolate_words=False)
    assert AlignOptions.from_dict(opts.to_dict()) == opts


def test_segment_json_round_trip() -> None:
    for seg in [*SEGMENTS, Segment(1.0, 2.0, "plain")]:
        assert Segment.from_json(seg.to_json()) == seg


def test_dougdoug_reader_dedups_and_interpolates_times() -> None:
    corpus_dir = require_shared(SHARED / "data" / "dougdoug-takeover-europe")
    from devtools.dougdoug_corpus import load_corpus, read_chat

    corpus = load_corpus(corpus_dir)
    assert corpus.frames > 600 and len(corpus.segments) > 300
    assert 0 < len(corpus.messages) < corpus.sightings
    offsets = [m.offset for m in corpus.messages]
    assert offsets == sorted(offsets)
    # No (user, text) twice within the dedup window.
    last: dict[tuple[str, str], float] = {}
    for m in corpus.messages:
        key = (m.user, " ".join(m.text.split()))
        assert key not in last or m.offset - last[key] > 60.0 - 25.0  # frames are <= 23 s apart
        last[key] = m.offset
    # Frame times are never earlier than interpolated ones (a message is first seen late).
    framed, _, _ = read_chat(corpus_dir / "chat_frames.jsonl", timing="frame")
    assert len(framed) == len(corpus.messages)
    by_id = {m.message_id: m.offset for m in framed}
    assert all(m.offset <= by_id[m.message_id] + 1e-9 for m in corpus.messages)
