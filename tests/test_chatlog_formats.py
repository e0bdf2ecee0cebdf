"""Tests for the text and archive chat-log formats of chatling.chatlog: TwitchDownloader text
(Relative, Utc, UtcFull, None), justlog/rustlog (raw IRC, plain text, JSON) and Chatterino;
that every fixture is claimed by exactly one reader; wall-clock times and the stream start;
moderation actions; ``inspect``; and hostile files (binary, a 50 MB line, broken JSON).

Every test reads real files (hand-made fixtures in tests/data/chatlogs, or files
written to tmp_path); nothing is mocked.

Run: .venv/bin/python -m pytest -q tests/test_chatlog_formats.py
"""

from __future__ import annotations

import gzip
import json
import random
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chatling.chatlog import (
    REGISTRY,
    ChatLogInfo,
    ModerationEvent,
    detect_format,
    drop_moderated,
    inspect_chat_log,
    read_chat_log,
    read_chat_log_full,
)
from chatling.chatlog.base import HEAD_BYTES, read_head
from chatling.chatlog.irc import parse_irc, unescape_tag
from chatling.chatlog.lines import MAX_LINE_CHARS
from chatling.cli.inspect import hms, inspect_lines
from chatling.core.errors import ChatlingError, ChatLogError
from chatling.core.events import ChatMessage

DATA = Path(__file__).resolve().parent / "data" / "chatlogs"
START = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
JUSTLOG_TEXT_START = 1_699_142_340.0  # 2023-11-04 23:59:00 UTC
CHATTERINO = DATA / "dougdoug-2023-11-14.log"
CHATTERINO_START = 1_700_002_680.0  # 2023-11-14 23:58:00 CET

FIXTURES = {
    "td-1.4.json": "twitchdownloader-json",
    "td-old.json": "twitchdownloader-json",
    "v5-object.json": "twitch-v5",
    "v5-bare.json": "twitch-v5",
    "chat-downloader-vod.json": "chat-downloader",
    "chat-downloader-vod.jsonl": "chat-downloader",
    "chat-downloader-live.jsonl": "chat-downloader",
    "td-relative.txt": "twitchdownloader-text",
    "td-utc.txt": "twitchdownloader-text",
    "td-utcfull.txt": "twitchdownloader-text",
    "td-none.txt": "twitchdownloader-text",
    "justlog-irc.txt": "justlog-irc",
    "justlog-text.txt": "justlog-text",
    "rustlog-text.txt": "justlog-text",
    "justlog.json": "justlog-json",
    "dougdoug-2023-11-14.log": "chatterino",
}
TEXT_FORMATS = ("twitchdownloader-text", "justlog-irc", "justlog-text", "chatterino")


def error_for(path: Path, **kwargs: object) -> ChatLogError:
    """The ChatLogError that reading ``path`` raises; checks it names the file."""
    with pytest.raises(ChatLogError) as info:
        read_chat_log(path, **kwargs)  # type: ignore[arg-type]
    assert path.name in str(info.value)
    return info.value


def rows(messages: list[ChatMessage]) -> list[tuple[float, str, str]]:
    return [(m.offset, m.user, m.text) for m in messages]


# ----------------------------------------------------------------- detection


def test_fixture_list_is_complete() -> None:
    """A new fixture must be added to FIXTURES, so the detection tests cover it."""
    on_disk = {p.name for p in DATA.iterdir() if p.name != "README.md"}
    assert on_disk == set(FIXTURES)


@pytest.mark.parametrize(("name", "fmt"), sorted(FIXTURES.items()))
def test_every_fixture_is_claimed_by_exactly_its_reader(name: str, fmt: str) -> None:
    head = read_head(DATA / name)
    claimed = [reader.name for reader in REGISTRY.readers if reader.sniff(DATA / name, head)]
    assert claimed == [fmt]
    assert detect_format(DATA / name) == fmt


@pytest.mark.parametrize("name", sorted(n for n in FIXTURES if n.endswith((".txt", ".log"))))
def test_gzip_text_logs_read_like_plain(tmp_path: Path, name: str) -> None:
    packed = tmp_path / f"{name}.gz"
    packed.write_bytes(gzip.compress((DATA / name).read_bytes()))
    assert detect_format(packed) == FIXTURES[name]
    plain, zipped = inspect_chat_log(DATA / name), inspect_chat_log(packed)
    assert (zipped.count, zipped.first_time, zipped.first_offset) == (
        plain.count,
        plain.first_time,
        plain.first_offset,
    )


@pytest.mark.parametrize(
    "content",
    [
        "hello there\nthis is text\n",
        "# notes\n- buy milk\n",
        '{"guild": {}, "messages": [{"id": "1", "content": "hi", "author": {}}]}',
        "[12:00] a: b\n",
        "@ not irc\n",
    ],
)
def test_other_text_is_unknown_format(tmp_path: Path, content: str) -> None:
    path = tmp_path / "other.txt"
    path.write_text(content)
    assert "supported formats" in str(error_for(path))


# ----------------------------------------------------------------- TwitchDownloader text


def test_td_relative() -> None:
    messages = read_chat_log(DATA / "td-relative.txt")
    assert rows(messages) == [
        (3.0, "foobar", "first!"),
        (12.0, "viewer_one", "Kappa hi"),
        (12.0, "小明", "你好"),  # a tie keeps file order
        (65.0, "foobar", "note: colons in the text stay"),
        (3723.0, "viewer_two", "gg"),
        (90001.0, "viewer_one", "still here a day later"),  # hours past 24
    ]
    assert messages[0].display_name == "FooBar"
    assert read_chat_log(DATA / "td-relative.txt", stream_start=START) == messages


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le"])
def test_text_logs_in_other_encodings(tmp_path: Path, encoding: str) -> None:
    """A BOM, or UTF-16 from a Windows shell redirect, reads like plain UTF-8."""
    path = tmp_path / f"{encoding}.txt"
    path.write_bytes((DATA / "td-relative.txt").read_text().encode(encoding))
    assert read_chat_log(path) == read_chat_log(DATA / "td-relative.txt")


def test_td_utc_needs_a_stream_start() -> None:
    error = error_for(DATA / "td-utc.txt")
    assert "wall-clock" in error.problem
    assert "stream start is required" in error.problem
    assert "--stream-start" in error.problem


def test_td_utc_and_utcfull_with_stream_start() -> None:
    utc = read_chat_log(DATA / "td-utc.txt", stream_start=START)
    assert rows(utc) == [  # "Early" wrote before the stream started: skipped
        (3.0, "foobar", "first!"),
        (12.0, "viewer_one", "Kappa hi"),
        (3723.0, "viewer_two", "gg"),
    ]
    full = read_chat_log(DATA / "td-utcfull.txt", stream_start=START)
    assert [m.offset for m in full] == [3.25, 12.5, 3723.125]


def test_td_none_is_refused_with_the_fix() -> None:
    error = error_for(DATA / "td-none.txt")
    assert error.where == "line 1"
    assert "no timestamps" in error.problem
    assert "--timestamp-format Relative" in error.problem
    info = inspect_chat_log(DATA / "td-none.txt")  # inspect still summarises it
    assert (info.clock, info.count, info.users, info.span) == ("none", 3, 3, 0.0)


def test_td_text_bad_line_names_it(tmp_path: Path) -> None:
    lines = (DATA / "td-relative.txt").read_text().splitlines()
    lines.insert(3, "this line is not chat")
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(lines) + "\n")
    error = error_for(path)
    assert error.where == "line 4"
    assert "[h:mm:ss] user: message" in error.problem


def test_td_text_truncated_last_line(tmp_path: Path) -> None:
    text = (DATA / "td-relative.txt").read_text()
    path = tmp_path / "cut.txt"
    path.write_text(text[: text.index("[25:00") + 5])
    error = error_for(path)
    assert error.where == "line 7"
    assert "truncated" in error.problem


def test_td_utc_bad_date(tmp_path: Path) -> None:
    path = tmp_path / "bad-date.txt"
    path.write_text("[2023-11-14 22:13:23 UTC] A: hi\n[2023-02-30 22:13:23 UTC] B: hi\n")
    error = error_for(path, stream_start=START)
    assert error.where == "line 2"
    assert "date" in error.problem


# ----------------------------------------------------------------- justlog / rustlog


def test_justlog_irc_messages() -> None:
    messages = read_chat_log(DATA / "justlog-irc.txt", stream_start=START)
    assert rows(messages) == [
        (3.0, "foobar", "Kappa hi Kappa"),
        (12.5, "viewer_one", "@FooBar hi there"),
        (20.0, "spammer", "buy followers at example dot com"),
        (30.0, "viewer_two", "oops bad word"),
        (45.0, "xiaoming", "waves LUL"),  # /me (ACTION) unwrapped
        (55.0, "troll", "you all suck"),
        (75.0, "viewer_one", "gg"),
    ]
    foobar, reply = messages[0], messages[1]
    assert foobar.emotes == ("Kappa", "Kappa")
    assert foobar.badges == ("broadcaster",)
    assert foobar.message_id == "m-1"
    assert foobar.display_name == "FooBar"
    assert reply.badges == ("moderator", "subscriber")
    assert reply.parent_message_id == "m-1"
    assert reply.is_moderator
    assert (messages[4].display_name, messages[4].emotes) == ("小明", ("LUL",))


def test_justlog_irc_moderation_and_drop() -> None:
    log = read_chat_log_full(DATA / "justlog-irc.txt", stream_start=START)
    assert (log.clock, log.stream_start, log.vod_relative) == ("wall-clock", START, True)
    assert log.moderation == (
        ModerationEvent(21.0, "timeout", "spammer", duration=600.0),
        ModerationEvent(31.0, "delete", "viewer_two", "m-5"),
        ModerationEvent(60.0, "ban", "troll"),
        ModerationEvent(70.0, "clear"),
    )
    kept = drop_moderated(log.messages, log.moderation)
    assert [m.user for m in kept] == ["foobar", "viewer_one", "xiaoming", "viewer_one"]
    everything_cleared = drop_moderated(log.messages, log.moderation, drop_cleared_chat=True)
    assert [m.text for m in everything_cleared] == ["gg"]


def test_justlog_irc_needs_tmi_sent_ts(tmp_path: Path) -> None:
    path = tmp_path / "no-ts.txt"
    lines = (DATA / "justlog-irc.txt").read_text().splitlines()
    lines[2] = lines[2].replace("tmi-sent-ts=1700000012500;", "")
    path.write_text("\n".join(lines) + "\n")
    error = error_for(path, stream_start=START)
    assert error.where == "line 3"
    assert "tmi-sent-ts" in error.problem


def test_irc_parsing_details() -> None:
    assert unescape_tag(r"a\sb\:c\\d\re\nf\x\\") == "a b;c\\d\re\nfx\\"
    line = parse_irc("@a=1;b :tmi.twitch.tv CLEARCHAT #chan spammer")
    assert line is not None
    assert (line.tags, line.nick, line.command, line.params, line.trailing) == (
        {"a": "1", "b": ""},
        None,
        "CLEARCHAT",
        ["#chan", "spammer"],
        None,
    )
    assert parse_irc("just some text") is None
    assert parse_irc(":nick PRIVMSG #c :hi there").trailing == "hi there"  # type: ignore[union-attr]


def test_justlog_text_crosses_midnight_with_unpadded_days() -> None:
    log = read_chat_log_full(DATA / "justlog-text.txt", stream_start=JUSTLOG_TEXT_START)
    assert rows(log.messages) == [
        (3.0, "foobar", "first!"),
        (12.0, "viewer_one", "Kappa hi"),
        (20.0, "spammer", "buy followers"),
        (65.0, "viewer_two", "past midnight"),  # 2023-11-5 00:00:05
    ]
    assert log.moderation == (
        ModerationEvent(21.0, "timeout", "spammer", duration=600.0),
        ModerationEvent(70.0, "ban", "troll"),
    )


def test_rustlog_text_moderation_after_the_user() -> None:
    log = read_chat_log_full(DATA / "rustlog-text.txt", stream_start=START)
    # The sub notice written after "sub_guy:" is not chat; CRLF line ends are fine.
    assert rows(log.messages) == [
        (3.0, "foobar", "first!"),
        (12.0, "spammer", "buy followers"),
        (40.0, "viewer_one", "gg"),
    ]
    assert log.moderation == (
        ModerationEvent(13.0, "timeout", "spammer", duration=600.0),
        ModerationEvent(30.0, "clear"),
    )


def test_justlog_json() -> None:
    log = read_chat_log_full(DATA / "justlog.json", stream_start=START)
    assert rows(log.messages) == [
        (3.25, "foobar", "Kappa hi"),  # tmi-sent-ts (ms) wins over the timestamp (s)
        (12.5, "viewer_one", "@FooBar hello"),  # RFC 3339 with fraction, no tags
        (20.0, "spammer", "buy followers"),
        (40.0, "viewer_two", "gg"),
    ]
    first, second = log.messages[:2]
    assert (first.emotes, first.badges, first.message_id) == (("Kappa",), ("broadcaster",), "m-1")
    assert (second.display_name, second.badges, second.parent_message_id) == (
        "Viewer_One",
        ("vip",),
        "m-1",
    )
    assert log.moderation == (ModerationEvent(21.0, "timeout", "spammer", duration=600.0),)


@pytest.mark.parametrize(
    ("data", "where", "words"),
    [
        ({"messages": 5}, None, "expected a 'messages' array"),
        ([1, 2], None, "found an array"),
        ({"messages": [{"type": 1, "text": "hi", "username": "a"}, 7]}, "messages[0]", "timestamp"),
        ({"messages": [{"type": 1, "text": 3, "username": "a"}]}, "messages[0]", "text is a"),
        ({"messages": [None]}, "messages[0]", "expected a message object"),
        (
            {"messages": [{"type": 1, "text": "x", "username": "a", "timestamp": "yesterday"}]},
            "messages[0]",
            "not an RFC 3339 time",
        ),
        (
            {"messages": [{"type": 1, "text": "x", "timestamp": "2023-11-14T22:13:20"}]},
            "messages[0]",
            "no time zone",
        ),
    ],
)  # fmt: skip
def test_justlog_json_bad_records(tmp_path: Path, data: object, where: str, words: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    error = error_for(path, format="justlog-json", stream_start=START)
    assert error.where == where
    assert words in error.problem


def test_justlog_json_truncated(tmp_path: Path) -> None:
    text = (DATA / "justlog.json").read_text()
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) // 2])
    assert detect_format(path) == "justlog-json"
    error = error_for(path, stream_start=START)
    assert error.where is not None and error.where.startswith("line 1, column")
    assert "truncated" in error.problem


@pytest.mark.parametrize("name", ["justlog-irc.txt", "justlog-text.txt", "justlog.json"])
def test_justlog_needs_a_stream_start(name: str) -> None:
    error = error_for(DATA / name)
    assert "wall-clock" in error.problem and "--stream-start" in error.problem


# ----------------------------------------------------------------- Chatterino


def test_chatterino_local_times_across_midnight() -> None:
    messages = read_chat_log(CHATTERINO, stream_start=CHATTERINO_START)
    assert rows(messages) == [
        (3.0, "foobar", "first!"),
        (12.0, "viewer_one", "Kappa hi"),
        (119.0, "xiaoming", "你好"),
        (125.0, "viewer_two", "past midnight"),
        (126.0, "viewer_one", "one space works too"),
        (1921.0, "foobar", "back again"),  # the second session's header sets the date
    ]
    assert messages[2].display_name == "小明"
    assert "--stream-start" in error_for(CHATTERINO).problem


def test_chatterino_timezone_option_overrides_the_header() -> None:
    as_utc = read_chat_log(CHATTERINO, stream_start=CHATTERINO_START, timezone="UTC")
    assert as_utc[0].offset == 3603.0  # the same clock readings, one hour later in UTC
    berlin = read_chat_log(CHATTERINO, stream_start=CHATTERINO_START, timezone="Europe/Berlin")
    assert berlin == read_chat_log(CHATTERINO, stream_start=CHATTERINO_START)
    error = error_for(CHATTERINO, stream_start=CHATTERINO_START, timezone="Mars/Olympus")
    assert "unknown time zone" in error.problem


def test_chatterino_ambiguous_zone_needs_timezone(tmp_path: Path) -> None:
    path = tmp_path / "chan-2023-11-14.log"
    path.write_text("# Start logging at 2023-11-14 12:00:00 CST\n[12:00:05]  a: hi\n")
    error = error_for(path, stream_start=START)
    assert error.where == "line 1"
    assert "'CST' is ambiguous" in error.problem and "timezone" in error.problem
    six_pm_utc = 1_699_984_800.0  # 2023-11-14 18:00:00 UTC = 12:00 in Chicago (CST)
    [message] = read_chat_log(path, stream_start=six_pm_utc, timezone="America/Chicago")
    assert message.offset == 5.0
    assert inspect_chat_log(path).variant == "local time (zone 'CST' unknown: taken as UTC)"


def test_chatterino_end_of_daylight_saving(tmp_path: Path) -> None:
    """01:00-01:59 happens twice on 2023-11-05 in New York; the log says so by going back."""
    path = tmp_path / "chan-2023-11-05.log"
    path.write_text(
        "# Start logging at 2023-11-05 01:30:00 EDT\n"
        "[01:30:00]  a: one\n[01:59:59]  a: two\n[01:00:30]  a: three\n[02:10:00]  a: four\n"
    )
    start = 1_699_162_200.0  # 2023-11-05 05:30:00 UTC = 01:30 EDT
    messages = read_chat_log(path, stream_start=start, timezone="America/New_York")
    assert [m.offset for m in messages] == [0.0, 1799.0, 1830.0, 6000.0]


def test_chatterino_without_header(tmp_path: Path) -> None:
    path = tmp_path / "cut.log"
    path.write_text("[23:58:03]  foobar: first!\n[23:58:12]  viewer_one: Kappa hi\n")
    assert detect_format(path) == "chatterino"
    error = error_for(path, stream_start=START)
    assert error.where == "line 1"
    assert "Start logging at" in error.problem


# ----------------------------------------------------------------- stream start, inspect


def test_bad_stream_starts_are_refused() -> None:
    path = DATA / "justlog-irc.txt"
    assert "milliseconds" in error_for(path, stream_start=START * 1000).problem
    assert "every message is before" in error_for(path, stream_start=START + 86400).problem
    assert "stream_start is text" in error_for(path, stream_start="1700000000").problem


def test_read_chat_log_full_for_older_formats() -> None:
    vod = read_chat_log_full(DATA / "td-1.4.json")
    assert (vod.clock, vod.moderation, vod.vod_relative) == ("vod", (), True)
    live = read_chat_log_full(DATA / "chat-downloader-live.jsonl", stream_start=START)
    assert (live.clock, live.stream_start) == ("wall-clock", START)
    assert live.messages == read_chat_log(DATA / "chat-downloader-live.jsonl", stream_start=START)


def test_inspect_reports_the_clock() -> None:
    vod = inspect_chat_log(DATA / "td-1.4.json")
    assert vod == ChatLogInfo(DATA / "td-1.4.json", "twitchdownloader-json", 4, 3, 3.25, 30.75)
    assert vod.vod_relative
    wall = inspect_chat_log(DATA / "td-utc.txt")
    assert (wall.clock, wall.vod_relative, wall.first_offset) == ("wall-clock", False, None)
    assert (wall.first_time, wall.last_time, wall.span) == (START - 10, START + 3723, 3733.0)
    aligned = inspect_chat_log(DATA / "td-utc.txt", stream_start=START)
    assert (aligned.vod_relative, aligned.first_offset, aligned.first_time) == (
        True,
        3.0,
        START + 3,
    )
    live = inspect_chat_log(DATA / "chat-downloader-live.jsonl")
    assert (live.clock, live.count) == ("wall-clock", 3)
    assert inspect_chat_log(DATA / "justlog-irc.txt").moderation == 4


def test_inspect_lines() -> None:
    relative = inspect_lines(DATA / "td-relative.txt")
    assert "format: twitchdownloader-text (Relative)" in relative
    assert "messages: 6" in relative and "users: 4" in relative
    assert "times: VOD-relative" in relative
    assert "time span: 24:59:58 (0:00:03 to 25:00:01)" in relative
    wall = inspect_lines(DATA / "justlog-irc.txt")
    assert any(line.startswith("times: wall-clock") and "--stream-start" in line for line in wall)
    assert "time span: 0:01:25 (2023-11-14 22:13:10 UTC to 2023-11-14 22:14:35 UTC)" in wall
    assert any("moderation actions: 4" in line for line in wall)
    none = inspect_lines(DATA / "td-none.txt")
    assert any("no timestamps" in line for line in none)
    missing = inspect_lines(DATA / "nope.txt")
    assert missing[-1].startswith("error: ") and "not found" in missing[-1]
    assert hms(90001) == "25:00:01" and hms(0.4) == "0:00:00"


# ----------------------------------------------------------------- moderation rule


def test_drop_moderated_lookback_and_order() -> None:
    messages = [ChatMessage(float(t), "a", f"m{t}", message_id=f"id{t}") for t in (0, 50, 100, 200)]
    timeout = ModerationEvent(120.0, "timeout", "A", duration=60.0)
    assert [m.offset for m in drop_moderated(messages, [timeout])] == [200.0]
    assert [m.offset for m in drop_moderated(messages, [timeout], lookback=30)] == [
        0.0,
        50.0,
        200.0,
    ]
    delete = ModerationEvent(60.0, "delete", None, "id50")
    assert [m.offset for m in drop_moderated(messages, [delete])] == [0.0, 100.0, 200.0]
    assert drop_moderated(messages, [ModerationEvent(150.0, "clear")]) == messages


# ----------------------------------------------------------------- hostile files


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_binary_file_with_explicit_text_format(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "garbage.log"
    path.write_bytes(random.Random(3).randbytes(8192))
    assert "binary" in error_for(path, format=fmt, stream_start=START).problem


def test_text_then_binary(tmp_path: Path) -> None:
    """Bad bytes past the head are found by the line reader, which names the line."""
    path = tmp_path / "half.txt"
    good = b"".join(b"[0:00:%02d] someone: hello there\n" % (i % 60) for i in range(3000))
    assert len(good) > HEAD_BYTES
    path.write_bytes(good + b"[0:00:02] b: \xff\xfe oops\n")
    error = error_for(path)
    assert error.where == "line 3001"
    assert "UTF-8" in error.problem
    path.write_bytes(good[:640] + b"[0:00:02] b: \xff\xfe oops\n")  # inside the head
    assert "line 21" in error_for(path).problem


def test_huge_single_line_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    with path.open("wb") as f:
        f.write(b"[0:00:01] someone: ")
        for _ in range(50):
            f.write(b"a" * 1_000_000)
    tracemalloc.start()
    try:
        error = error_for(path)  # detection sees no complete line in its head
        assert "not a chat log format" in error.problem
        for fmt in TEXT_FORMATS:
            error = error_for(path, format=fmt, stream_start=START)
            assert error.where == "line 1" and "longer than" in error.problem, fmt
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MAX_LINE_CHARS + 4 * HEAD_BYTES  # never the 50 MB line


def _mutations(data: bytes, seed: int, count: int) -> list[bytes]:
    """Damaged copies of ``data``: cut, bytes flipped, slices dropped."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        blob = bytearray(data)
        how = rng.randrange(3)
        if how == 0:
            blob = blob[: rng.randrange(len(blob))]
        elif how == 1:
            for _ in range(rng.randrange(1, 6)):
                blob[rng.randrange(len(blob))] = rng.randrange(256)
        else:
            start = rng.randrange(len(blob))
            del blob[start : start + rng.randrange(1, 200)]
        out.append(bytes(blob))
    return out


@pytest.mark.parametrize("name", sorted(n for n in FIXTURES if not n.endswith((".jsonl",))))
def test_damaged_files_never_crash(tmp_path: Path, name: str) -> None:
    """Whatever damage a download does, every reader returns messages or a ChatLogError."""
    for i, blob in enumerate(_mutations((DATA / name).read_bytes(), seed=len(name), count=80)):
        path = tmp_path / f"{i}-{name}"
        path.write_bytes(blob)
        for fmt in ("auto", FIXTURES[name]):
            try:
                messages = read_chat_log(path, format=fmt, stream_start=START)
            except ChatlingError as error:
                assert isinstance(error, ChatLogError)
                assert path.name in str(error)
            else:
                assert all(isinstance(m, ChatMessage) for m in messages)


# ----------------------------------------------------------------- size


def big_log(fmt: str, count: int) -> str:
    """A ``count``-message log of format ``fmt`` (one message every 0.1 s from START)."""
    out = []
    for i in range(count):
        t = START + i * 0.1
        when = datetime.fromtimestamp(int(t), UTC)
        clock = when.strftime("%H:%M:%S")
        text = f"message {i} Kappa"
        if fmt == "twitchdownloader-text":
            out.append(f"[{hms(i * 0.1)}] User_{i % 97}: {text}\n")
        elif fmt == "justlog-irc":
            out.append(
                f"@badge-info=;badges=subscriber/1;display-name=User_{i % 97};"
                f"emotes=25:{len(text) - 5}-{len(text) - 1};id=id-{i};mod=0;room-id=1;"
                f"subscriber=1;tmi-sent-ts={int(t * 1000)};"
                f"user-id={i % 97} :user_{i % 97}!user_{i % 97}@user_{i % 97}.tmi.twitch.tv "
                f"PRIVMSG #chan :{text}\n"
            )
        elif fmt == "justlog-text":
            out.append(f"[{when:%Y-%m-%d} {clock}] #chan user_{i % 97}: {text}\n")
        elif fmt == "chatterino":
            if i == 0:
                out.append("# Start logging at 2023-11-14 22:13:20 UTC\n")
            out.append(f"[{clock}]  user_{i % 97}: {text}\n")
    if fmt == "justlog-json":
        items = [
            {"text": f"message {i}", "username": f"user_{i % 97}", "displayName": f"User_{i % 97}",
             "channel": "chan", "timestamp": "2023-11-14T22:13:20Z", "id": f"id-{i}", "type": 1,
             "raw": "", "tags": {"tmi-sent-ts": str(int((START + i * 0.1) * 1000))}}
            for i in range(count)
        ]  # fmt: skip
        return json.dumps({"messages": items})
    return "".join(out)


@pytest.mark.parametrize("fmt", [*TEXT_FORMATS, "justlog-json"])
def test_large_logs_are_detected_and_read(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "big.log"
    path.write_text(big_log(fmt, 5000))
    assert path.stat().st_size > HEAD_BYTES
    assert detect_format(path) == fmt
    messages = read_chat_log(path, stream_start=START)
    assert len(messages) == 5000
    assert [m.offset for m in messages] == sorted(m.offset for m in messages)
