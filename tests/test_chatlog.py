"""Tests for chatling.chatlog: each format and variant read from a real small file,
the real Northernlion v5 log when /work/shared is present, and every kind of bad
file turned into a ChatLogError that names the file.

Run: .venv/bin/python -m pytest -q tests/test_chatlog.py
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import shutil
from pathlib import Path

import pytest

from chatling.chatlog import (
    FORMATS,
    ChatLogInfo,
    detect_format,
    inspect_chat_log,
    read_chat_log,
)
from chatling.chatlog.base import HEAD_BYTES
from chatling.core.errors import ChatlingError, ChatLogError
from chatling.core.events import ChatMessage

DATA = Path(__file__).resolve().parent / "data" / "chatlogs"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NORTHERNLION = SHARED / "data" / "chat" / "northernlion-1087079172.json"


def offsets(messages: list[ChatMessage]) -> list[float]:
    return [m.offset for m in messages]


def error_for(path: Path, **kwargs: object) -> ChatLogError:
    """The ChatLogError that reading ``path`` raises; checks it names the file."""
    with pytest.raises(ChatLogError) as info:
        read_chat_log(path, **kwargs)  # type: ignore[arg-type]
    assert path.name in str(info.value)
    return info.value


# ----------------------------------------------------------------- formats


def test_formats_lists_every_reader() -> None:
    assert set(FORMATS) == {
        "twitchdownloader-json",
        "twitch-v5",
        "chat-downloader",
        "justlog-json",
        "justlog-irc",
        "chatterino",
        "justlog-text",
        "twitchdownloader-text",
    }


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("td-1.4.json", "twitchdownloader-json"),
        ("td-old.json", "twitchdownloader-json"),
        ("v5-object.json", "twitch-v5"),
        ("v5-bare.json", "twitch-v5"),
        ("chat-downloader-vod.json", "chat-downloader"),
        ("chat-downloader-vod.jsonl", "chat-downloader"),
        ("chat-downloader-live.jsonl", "chat-downloader"),
    ],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(DATA / name) == fmt


def test_twitchdownloader_1_4() -> None:
    messages = read_chat_log(DATA / "td-1.4.json")
    # Sorted by offset; the two at 12.5 s keep their file order; the empty body is skipped.
    assert [m.text for m in messages] == ["first!", "Kappa hi", "LUL LUL", "gg"]
    assert offsets(messages) == [3.25, 12.5, 12.5, 30.75]
    kappa = messages[1]
    assert kappa == ChatMessage(
        offset=12.5,
        user="foobar",
        text="Kappa hi",
        display_name="FooBar",
        message_id="c-td14-01",
        emotes=("Kappa",),
        source="replay",
    )
    assert messages[2].emotes == ("LUL", "LUL")
    assert messages[0].emotes == ()


def test_twitchdownloader_gzip_reads_like_plain(tmp_path: Path) -> None:
    packed = tmp_path / "td-1.4.json.gz"
    packed.write_bytes(gzip.compress((DATA / "td-1.4.json").read_bytes()))
    assert detect_format(packed) == "twitchdownloader-json"
    assert read_chat_log(packed) == read_chat_log(DATA / "td-1.4.json")


def test_twitchdownloader_without_fileinfo() -> None:
    messages = read_chat_log(DATA / "td-old.json")
    assert [(m.offset, m.user, m.text) for m in messages] == [
        (42.0, "newbie", "hi"),
        (100.5, "oldtimer", "Kreygasm nice"),
        (250.25, "oldtimer", "bye"),
    ]
    assert messages[1].emotes == ("Kreygasm",)


def test_twitchdownloader_newer_version_warns_and_reads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = json.loads((DATA / "td-1.4.json").read_text())
    data["FileInfo"]["Version"] = "2.0.0"
    path = tmp_path / "td-2.json"
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="chatling.chatlog"):
        assert len(read_chat_log(path)) == 4
    assert "2.0.0" in caplog.text


def test_v5_object_and_bare_array_agree() -> None:
    messages = read_chat_log(DATA / "v5-object.json")
    assert read_chat_log(DATA / "v5-bare.json") == messages
    assert [(m.offset, m.user, m.text, m.emotes) for m in messages] == [
        (0.0, "alpha", "hello chat <3", ("<3",)),
        (7.0, "betauser", "PogChamp what", ("PogChamp",)),  # login lower-cased
        (61.0, "alpha", "nice run", ()),
    ]
    assert messages[1].display_name == "BetaUser"
    assert all(isinstance(m.offset, float) for m in messages)


def test_chat_downloader_json_and_jsonl_agree(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="chatling.chatlog"):
        messages = read_chat_log(DATA / "chat-downloader-vod.json")
    assert "1 resubscription items" in caplog.text  # skipped and counted, not an error
    assert read_chat_log(DATA / "chat-downloader-vod.jsonl") == messages
    assert [(m.offset, m.user, m.display_name, m.text) for m in messages] == [
        (2.0, "viewer_two", "Viewer_Two", "hi Kappa"),
        (4.5, "viewer_one", "Viewer_One", "OMEGALUL this is great OMEGALUL"),
        (11.25, "viewer_one", "Viewer_One", "gg"),
    ]
    assert messages[1].emotes == ("OMEGALUL", "OMEGALUL")
    assert messages[0].emotes == ("Kappa",)
    assert messages[0].message_id == "m-cd-02"


def test_live_capture_without_stream_start_is_refused() -> None:
    error = error_for(DATA / "chat-downloader-live.jsonl")
    assert "wall-clock" in str(error)
    assert "stream_start" in str(error)


def test_live_capture_with_stream_start() -> None:
    messages = read_chat_log(DATA / "chat-downloader-live.jsonl", stream_start=1_700_000_000.0)
    # The message sent before the stream started and the raid notice are skipped.
    assert [(m.user, m.text) for m in messages] == [
        ("viewer_one", "hello"),
        ("viewer_two", "LUL"),
    ]
    assert offsets(messages) == pytest.approx([5.25, 12.5])
    assert messages[1].emotes == ("LUL",)


def test_live_capture_bad_stream_start_is_refused() -> None:
    live = DATA / "chat-downloader-live.jsonl"
    assert "milliseconds" in str(error_for(live, stream_start=1_700_000_000_000.0))
    assert "every message is before" in str(error_for(live, stream_start=1_800_000_000.0))
    assert "stream_start is text" in str(error_for(live, stream_start="1700000000"))
    assert "stream_start is a number (nan" in str(error_for(live, stream_start=float("nan")))


def test_stream_start_is_ignored_for_vod_offsets() -> None:
    vod = DATA / "chat-downloader-vod.json"
    assert read_chat_log(vod, stream_start=1_700_000_000.0) == read_chat_log(vod)


def test_explicit_format_overrides_detection() -> None:
    # A v5-shaped bare array also reads fine when named explicitly.
    assert read_chat_log(DATA / "td-old.json", format="twitch-v5") == read_chat_log(
        DATA / "td-old.json"
    )


def test_explicit_wrong_format_says_what_it_found() -> None:
    error = error_for(DATA / "v5-object.json", format="chat-downloader")
    assert "a JSON object with keys video, comments" in str(error)
    error = error_for(DATA / "chat-downloader-vod.json", format="twitchdownloader-json")
    assert "is an array, expected a TwitchDownloader JSON object" in str(error)


def test_unknown_format_name_lists_formats() -> None:
    error = error_for(DATA / "td-1.4.json", format="irc")
    for name in FORMATS:
        assert name in str(error)


def test_inspect_chat_log() -> None:
    info = inspect_chat_log(DATA / "td-1.4.json")
    assert info == ChatLogInfo(
        path=DATA / "td-1.4.json",
        format="twitchdownloader-json",
        count=4,
        users=3,
        first_offset=3.25,
        last_offset=30.75,
    )
    assert info.span == 27.5


def test_youtube_style_items(tmp_path: Path) -> None:
    """No locations on emotes, negative replay times (pre-stream chat), no display_name."""
    items = [
        {"message": "hi :wave: :wave:", "message_type": "text_message", "time_in_seconds": 3.0,
         "author": {"name": "Some Person"}, "emotes": [{"id": "w", "name": ":wave:"}]},
        {"message": "waiting", "message_type": "text_message", "time_in_seconds": -20.0,
         "author": {"name": "Early"}},
    ]  # fmt: skip
    path = tmp_path / "youtube.json"
    path.write_text(json.dumps(items))
    [message] = read_chat_log(path)
    assert (message.user, message.display_name) == ("some person", "Some Person")
    assert message.emotes == (":wave:", ":wave:")


def _grow(name: str, copies: int) -> object:
    """The fixture with its comments or items repeated, to make a file past the sniff head."""
    data = json.loads((DATA / name).read_text())
    if isinstance(data, dict):
        data["comments"] = data["comments"] * copies
    else:
        data = data * copies
    return data


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("td-1.4.json", "twitchdownloader-json"),
        ("td-old.json", "twitchdownloader-json"),
        ("v5-object.json", "twitch-v5"),
        ("v5-bare.json", "twitch-v5"),
        ("chat-downloader-vod.json", "chat-downloader"),
    ],
)
def test_large_files_are_detected_from_their_head(tmp_path: Path, name: str, fmt: str) -> None:
    path = tmp_path / name
    path.write_text(json.dumps(_grow(name, 200), indent=2))
    assert path.stat().st_size > HEAD_BYTES
    assert detect_format(path) == fmt
    assert len(read_chat_log(path)) == 200 * len(read_chat_log(DATA / name))


# ----------------------------------------------------------------- the real log


@pytest.fixture(scope="module")
def northernlion() -> list[ChatMessage]:
    if not NORTHERNLION.exists():
        pytest.skip(f"shared data not present: {NORTHERNLION}")
    return read_chat_log(NORTHERNLION)


def test_real_v5_log(northernlion: list[ChatMessage]) -> None:
    assert detect_format(NORTHERNLION) == "twitch-v5"
    assert len(northernlion) == 3090
    assert northernlion[0].offset == 0.0
    assert northernlion[-1].offset == 2922.0
    assert offsets(northernlion) == sorted(offsets(northernlion))
    first = northernlion[0]
    assert (first.user, first.display_name, first.text, first.emotes) == (
        "dunkopop",
        "DunkoPop",
        "<3",
        ("<3",),
    )
    emotes = [e for m in northernlion for e in m.emotes]
    assert emotes.count("LUL") > 100
    assert sum(1 for m in northernlion if m.emotes) > 500
    assert all(m.user == m.user.lower() and m.text for m in northernlion)


def test_real_v5_log_inspect(northernlion: list[ChatMessage]) -> None:
    info = inspect_chat_log(NORTHERNLION)
    assert (info.count, info.first_offset, info.last_offset) == (3090, 0.0, 2922.0)
    assert info.users == len({m.user for m in northernlion})


def test_100k_messages_are_all_read(tmp_path: Path) -> None:
    comments = json.loads((DATA / "v5-bare.json").read_text())
    big = []
    for i in range(100_000):
        comment = dict(comments[i % len(comments)])
        comment["content_offset_seconds"] = i * 0.1
        comment["_id"] = f"id-{i}"
        big.append(comment)
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"video": {}, "comments": big}))
    messages = read_chat_log(path)
    assert len(messages) == 75_000  # one comment in four has a blank body


# ----------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    error = error_for(tmp_path / "nope.json")
    assert "not found" in str(error)
    with pytest.raises(ChatLogError, match=r"nope\.json"):
        detect_format(tmp_path / "nope.json")


def test_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "chat.json"
    folder.mkdir()
    assert "directory" in str(error_for(folder))


@pytest.mark.parametrize("content", [b"", b"  \n\n \t"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.json"
    path.write_bytes(content)
    assert "empty" in str(error_for(path))
    assert "empty" in str(error_for(path, format="twitch-v5"))


def test_binary_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage.json"
    path.write_bytes(random.Random(7).randbytes(4096))
    assert "binary" in str(error_for(path))
    assert "binary" in str(error_for(path, format="chat-downloader"))


def test_truncated_json_names_line(tmp_path: Path) -> None:
    text = (DATA / "td-1.4.json").read_text()
    cut = text.index('"c-td14-03"') + 5  # stop in the middle of the third comment's id
    path = tmp_path / "cut.json"
    path.write_text(text[:cut])
    error = error_for(path)
    line = text[:cut].count("\n") + 1
    assert error.where is not None and error.where.startswith(f"line {line}, column")
    assert "truncated" in str(error)


def test_truncated_json_after_a_value(tmp_path: Path) -> None:
    text = (DATA / "v5-object.json").read_text()
    path = tmp_path / "cut.json"
    path.write_text(text[: text.index('"c-v5-02"') + len('"c-v5-02",')])
    assert "truncated" in str(error_for(path))


def test_truncated_gzip(tmp_path: Path) -> None:
    packed = gzip.compress((DATA / "td-1.4.json").read_bytes())
    path = tmp_path / "chat.json.gz"
    path.write_bytes(packed[: len(packed) // 2])
    assert "gzip" in str(error_for(path))


def test_random_json_object_is_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"volume": 3, "theme": "dark", "items": [1, 2]}))
    error = error_for(path)
    assert "volume, theme, items" in str(error)  # says what it found
    for name in FORMATS:  # and what it can read
        assert name in str(error)


@pytest.mark.parametrize("content", ["hello there\nthis is text\n", "[1, 2, 3]", "[]", "42"])
def test_other_content_is_unknown_format(tmp_path: Path, content: str) -> None:
    path = tmp_path / "other.txt"
    path.write_text(content)
    assert "supported formats" in str(error_for(path))


def test_comment_without_offset_names_index(tmp_path: Path) -> None:
    data = json.loads((DATA / "v5-object.json").read_text())
    del data["comments"][2]["content_offset_seconds"]
    path = tmp_path / "no-offset.json"
    path.write_text(json.dumps(data))
    error = error_for(path)
    assert error.where == "comments[2]"
    assert "content_offset_seconds" in str(error)


def _drop_message(comment: dict) -> None:
    del comment["message"]


def _drop_body_and_fragments(comment: dict) -> None:
    del comment["message"]["body"], comment["message"]["fragments"]


def _number_body(comment: dict) -> None:
    comment["message"]["body"] = 5


def _text_offset(comment: dict) -> None:
    comment["content_offset_seconds"] = "12s"


def _boolean_offset(comment: dict) -> None:
    comment["content_offset_seconds"] = True


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (_drop_message, "message is null"),
        (_drop_body_and_fragments, "no message.body"),
        (_number_body, "body is a number"),
        (_text_offset, "content_offset_seconds is text"),
        (_boolean_offset, "content_offset_seconds is a boolean"),
    ],
)
def test_bad_comment_fields(tmp_path: Path, change, words: str) -> None:
    data = json.loads((DATA / "td-1.4.json").read_text())
    change(data["comments"][1])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    error = error_for(path)
    assert error.where == "comments[1]"
    assert words in error.problem


def test_comment_that_is_not_an_object(tmp_path: Path) -> None:
    good = json.loads((DATA / "v5-bare.json").read_text())[0]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"comments": [good, "oops"]}))
    error = error_for(path)
    assert error.where == "comments[1]"
    assert "is text, expected a comment object" in error.problem


def test_jsonl_bad_line_names_line(tmp_path: Path) -> None:
    lines = (DATA / "chat-downloader-vod.jsonl").read_text().splitlines()
    lines.insert(2, '{"message": "broken", "time_in_seconds": ')
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    error = error_for(path)
    assert error.where is not None and error.where.startswith("line 3,")


def test_jsonl_item_without_offset_among_replay_items(tmp_path: Path) -> None:
    items = [
        json.loads(line) for line in (DATA / "chat-downloader-vod.jsonl").read_text().splitlines()
    ]
    del items[3]["time_in_seconds"]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    error = error_for(path)
    assert error.where == "line 4"
    assert "time_in_seconds" in str(error)


def test_chat_downloader_array_item_without_message(tmp_path: Path) -> None:
    items = json.loads((DATA / "chat-downloader-vod.json").read_text())
    del items[1]["message"]
    path = tmp_path / "no-message.json"
    path.write_text(json.dumps(items, indent=2))
    error = error_for(path)
    assert error.where == "items[1]"


def test_invalid_utf8_in_body(tmp_path: Path) -> None:
    raw = (DATA / "v5-object.json").read_bytes().replace(b"nice run", b"nice \xff\xfe run")
    path = tmp_path / "latin.json"
    path.write_bytes(raw)
    error = error_for(path)
    assert "UTF-8" in str(error)


def test_utf8_bom_and_utf16_files_read(tmp_path: Path) -> None:
    text = (DATA / "v5-object.json").read_text()
    expected = read_chat_log(DATA / "v5-object.json")
    for encoding in ("utf-8-sig", "utf-16"):
        path = tmp_path / f"{encoding}.json"
        path.write_bytes(text.encode(encoding))
        assert read_chat_log(path) == expected, encoding


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


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.json*")))
def test_damaged_files_never_crash(tmp_path: Path, name: str) -> None:
    """Whatever damage a download does, the reader returns messages or a ChatLogError."""
    for i, blob in enumerate(_mutations((DATA / name).read_bytes(), seed=len(name), count=150)):
        path = tmp_path / f"{i}-{name}"
        path.write_bytes(blob)
        try:
            messages = read_chat_log(path, stream_start=1_700_000_000.0)
        except ChatlingError as error:
            assert isinstance(error, ChatLogError)
            assert path.name in str(error)
        else:
            assert all(isinstance(m, ChatMessage) for m in messages)


def test_wrong_types_at_top_level_never_crash(tmp_path: Path) -> None:
    shapes = [
        {"comments": None},
        {"comments": {"a": 1}},
        {"FileInfo": {"Version": 3}, "streamer": None, "comments": [None]},
        {"streamer": "x"},
        [{"content_offset_seconds": 1, "message": None}],
        [{"content_offset_seconds": 1, "message": {"body": "x", "fragments": "y"}}],
        [{"content_offset_seconds": 1, "message": {"fragments": [1, {"text": 2}]}}],
        [{"message": 3, "time_in_seconds": 1}],
        [
            {
                "message": "x",
                "time_in_seconds": 1,
                "author": "y",
                "emotes": [{"name": 1}, 7],
            }
        ],
        [{"message": "x", "time_in_seconds": None, "author": {}}],
        [{"message": "x", "timestamp": "now", "author": {"name": "a"}}],
    ]
    for i, shape in enumerate(shapes):
        path = tmp_path / f"shape-{i}.json"
        path.write_text(json.dumps(shape))
        for fmt in ("auto", *FORMATS):
            try:
                read_chat_log(path, format=fmt, stream_start=1_700_000_000.0)
            except ChatLogError as error:
                assert path.name in str(error)


def test_copy_keeps_working_after_move(tmp_path: Path) -> None:
    """Detection looks at content, not names: a renamed file reads the same."""
    path = tmp_path / "chat.txt"
    shutil.copy(DATA / "chat-downloader-vod.jsonl", path)
    assert read_chat_log(path) == read_chat_log(DATA / "chat-downloader-vod.jsonl")
