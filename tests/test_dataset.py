"""From chat logs, VODs and the live store to the pairs dataset: filters and their counts,
the parquet dataset (round trip, append, replace, splits that never leak), the transcript
file reader, ``chatling data ingest`` end to end on the demo stream with real
faster-whisper (the second run reads the cache), ``chatling data from-db`` on a real
SQLite store, and clear errors for hostile input."""

from __future__ import annotations

import difflib
import itertools
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from chatling.cli.data import main as data_main
from chatling.core.errors import AudioError, InputFileError
from chatling.core.events import ChatMessage, Reply, Utterance
from chatling.core.paths import PROJECT_ROOT
from chatling.safety import SafetyFilter
from chatling.store import Store
from chatling.training.data.align import AlignOptions, Segment
from chatling.training.data.dataset import (
    DatasetError,
    SourceInfo,
    load_pairs,
    read_manifest,
    source_name,
    split_pairs,
    write_source,
)
from chatling.training.data.filters import FilterOptions, FilterReport, Removed, make_pairs, select
from chatling.training.data.pairs import Pair
from chatling.training.data.vod import read_transcript_file

DEMO = PROJECT_ROOT / "data" / "demo"


def msg(t: float, user: str, text: str, **kw: object) -> ChatMessage:
    return ChatMessage(offset=t, user=user, text=text, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- filters


def test_every_rule_drops_and_counts_and_context_is_what_live_shows() -> None:
    messages = [
        msg(1.0, "ann", "hello there Kappa"),
        msg(2.0, "nightbot", "Follow the channel!"),
        msg(3.0, "bob", "!uptime"),
        msg(4.0, "cat", "check out evil dot com"),
        msg(5.0, "dan", "no SPOILERS please"),
        msg(6.0, "eve", "   "),
        msg(7.0, "fay", "deleted one", message_id="m-7"),
        msg(8.0, "gus", "timed out"),
        msg(9.0, "hal", "flagged bot", is_bot=True),
        *(msg(10.0 + i, f"v{i}", "OMEGALUL OMEGALUL") for i in range(5)),
        msg(60.0, "zed", "omegalul   OMEGALUL"),  # the window has passed: kept again
    ]
    options = FilterOptions(safety=SafetyFilter(["spoilers"], bot_name="chatling"))
    removed = Removed.of(ids=["m-7"], keys=[("GUS", 8.0004)])
    selection = select(messages, options, removed)
    assert selection.report == FilterReport(
        total=15, kept=5, empty=1, bots=2, removed=2, commands=1, links=1, blocked_terms=1,
        copypasta=2,
    )  # fmt: skip
    assert [m.user for m in selection.targets] == ["ann", "v0", "v1", "v2", "zed"]
    # Commands, links and flood copies stay visible as context; bots, removed, blocked don't.
    assert [m.user for m in selection.context] == [
        "ann", "bob", "cat", "v0", "v1", "v2", "v3", "v4", "zed",
    ]  # fmt: skip


def test_make_pairs_aligns_only_kept_targets_against_context() -> None:
    segments = [Segment(0.0, 4.0, "welcome to the stream")]
    messages = [msg(5.0, "nightbot", "rules!"), msg(6.0, "bob", "!so"), msg(9.0, "ann", "hi")]
    pairs, report = make_pairs(messages, segments, "s", AlignOptions(45.0, 4.0, 20))
    assert report.kept == 1 and report.bots == 1 and report.commands == 1
    (pair,) = pairs
    assert pair.chat == ("bob: !so",)
    assert pair.transcript == ("welcome to the stream",)


def test_filter_options_from_settings_include_this_bot_and_known_bots() -> None:
    from chatling.core.settings import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    settings.twitch.bot_login = "MyBotAccount"
    options = FilterOptions.from_settings(settings)
    assert {"nightbot", "chatling", "mybotaccount"} <= options.bots
    assert options.safety is not None
    assert options.to_dict()["blocked_terms"] is True


# --------------------------------------------------------------------------- dataset


def pairs_of(source: str, n: int, start: float = 0.0) -> list[Pair]:
    return [
        Pair(source, start + i, (f"said {i}",), (f"u{i}: before",), f"{source} msg {i}", f"u{i}")
        for i in range(n)
    ]


def test_round_trip_append_and_replace(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    a, b = pairs_of("a", 10), pairs_of("b", 5)
    write_source(out, a, SourceInfo("a", "vod", "sha-a", report=FilterReport(total=12, kept=10)))
    write_source(out, b, SourceInfo("b", "vod", "sha-b"))
    rows = [Pair.from_row(r) for r in load_pairs(out)]
    assert rows == a + b
    assert [Pair.from_row(r) for r in load_pairs(out, ["b"])] == b
    # Same content under another name: replaced, not duplicated; the name it had is reused.
    assert source_name(out, "a-renamed", "sha-a") == "a"
    write_source(out, pairs_of("a", 3), SourceInfo("a", "vod", "sha-a"))
    assert len(load_pairs(out)) == 8
    # Another VOD wanting a taken name gets a suffixed one.
    assert source_name(out, "a", "sha-other") == "a-sha-othe"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total"]["pairs"] == 8 and stats["total"]["sources"] == 2
    assert stats["sources"]["b"]["span_s"] == 4.0
    manifest = read_manifest(out)
    assert manifest["sources"]["a"]["align_options"] == AlignOptions().to_dict()
    assert sorted(p.name for p in (out / "data").iterdir()) == ["a.parquet", "b.parquet"]


def test_replacing_by_content_under_a_new_name_removes_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    write_source(out, pairs_of("old", 4), SourceInfo("old", "vod", "same"))
    write_source(out, pairs_of("new", 2), SourceInfo("new", "vod", "same"))
    assert set(read_manifest(out)["sources"]) == {"new"}
    assert [p.name for p in (out / "data").iterdir()] == ["new.parquet"]
    # A source without pairs is listed with its counts but has no file.
    assert write_source(out, [], SourceInfo("quiet", "live", report=FilterReport(total=3))) is None
    assert len(load_pairs(out)) == 2


def test_arrow_schema_is_the_datasets_features_schema() -> None:
    from chatling.training.data.dataset import arrow_schema, features

    expected = features().arrow_schema
    assert arrow_schema().equals(expected, check_metadata=True)


def test_time_split_never_leaks_and_drops_copies_of_test_targets(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    a = pairs_of("a", 100)
    a[10] = Pair("a", 10.0, (), (), "GG  wp", "x")  # a copy of a test target, in train time
    a[95] = Pair("a", 95.0, (), (), "gg wp", "y")
    write_source(out, a, SourceInfo("a", "vod", "1"))
    write_source(out, pairs_of("b", 50, start=1000.0), SourceInfo("b", "vod", "2"))
    split = split_pairs(load_pairs(out), by="time", test_fraction=0.2)
    train, test = split["train"], split["test"]
    for source in ("a", "b"):
        train_t = [r["offset"] for r in train if r["source"] == source]
        test_t = [r["offset"] for r in test if r["source"] == source]
        assert train_t and test_t and max(train_t) < min(test_t)
    assert not {r["target"].casefold() for r in test} & {r["target"].casefold() for r in train}
    assert "GG  wp" not in train["target"]
    assert len(test) == 20 + 10  # the last 20% of each source's time (a: 80.2.., b: 1039.2..)
    assert len(train) == 80 + 40 - 1
    by_source = split_pairs(load_pairs(out), by="source", test_sources=["a"])
    assert set(by_source["test"]["source"]) == {"a"} and set(by_source["train"]["source"]) == {"b"}
    with pytest.raises(Exception, match="at least one source"):
        split_pairs(load_pairs(out), by="source", test_sources=["a", "b"])


def test_hostile_dataset_directories_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no manifest"):
        load_pairs(tmp_path / "nothing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="manifest"):
        load_pairs(bad)
    (bad / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(DatasetError, match="not a chatling pairs manifest"):
        write_source(bad, [], SourceInfo("x", "vod"))
    good = tmp_path / "good"
    write_source(good, pairs_of("a", 3), SourceInfo("a", "vod"))
    (good / "data" / "a.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(DatasetError, match="re-ingest a"):
        load_pairs(good)


# --------------------------------------------------------------------------- transcripts


def test_transcript_files_in_every_shape(tmp_path: Path) -> None:
    seg = {"start": 1.0, "end": 2.5, "text": " hello chat ",
           "words": [{"start": 1.0, "end": 1.6, "word": " hello"},
                     {"start": 1.7, "end": 2.5, "word": "chat"}]}  # fmt: skip
    later = {"start": 3.0, "end": 4.0, "text_normalized": "bye"}
    shapes = {
        "list.json": json.dumps([later, seg]),
        "whisper.json": json.dumps({"text": "...", "segments": [seg, later]}),
        "lines.jsonl": json.dumps(seg) + "\n\n" + json.dumps(later) + "\n",
    }
    for name, text in shapes.items():
        path = tmp_path / name
        path.write_text(text)
        segments = read_transcript_file(path)
        assert [s.text for s in segments] == ["hello chat", "bye"], name
        assert [w.text for w in segments[0].words] == ["hello", "chat"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "file not found"),
        ("", "empty"),
        ('{"start": 1, "end": 2, "text": "a"}\n{"start": 1, "end"', "line 2"),
        ('[{"start": 5, "end": 2, "text": "a"}]', "ends .* before it starts"),
        ('[{"start": "soon", "end": 2, "text": "a"}]', "segment 0.*number of seconds"),
        ('[{"end": 2, "text": "a"}]', "no 'start'"),
        ('{"comments": []}', "expected a list of segments"),
        ("[]", "no segments"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
    ],
)
def test_bad_transcript_files_name_the_file_and_place(
    tmp_path: Path, content: str | bytes | None, match: str
) -> None:
    path = tmp_path / "t.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(InputFileError, match=match) as info:
        read_transcript_file(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- CLI


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "chatling.cli.data",
            "--env-file",
            "/nonexistent",
            *argv,
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.mark.slow
def test_ingest_demo_stream_end_to_end_then_from_cache(tmp_path: Path) -> None:
    """Real faster-whisper (the packaged Whisper base) through the CLI, in a subprocess."""
    from tests.conftest import require_models

    require_models()
    out, cache = tmp_path / "ds", tmp_path / "cache"
    args = ["data", "ingest", "--vod", str(DEMO / "stream.opus"), "--chat",
            str(DEMO / "chat.json"), "--out", str(out), "--cache-dir", str(cache),
            "--no-progress"]  # fmt: skip
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "(transcribed now)" in first.stdout
    assert "transcribing" in first.stderr
    assert len(list(cache.glob("*.jsonl"))) == 1
    ds = load_pairs(out)
    pairs = [Pair.from_row(r) for r in ds]
    manifest = read_manifest(out)
    (name,) = manifest["sources"]
    entry = manifest["sources"][name]
    assert name == "stream" and entry["kind"] == "vod" and len(entry["sha256"]) == 64
    report = FilterReport.from_dict(entry["stats"]["filters"])
    assert report.total == 327 and report.kept == len(pairs) > 250
    assert report.bots == 3 and report.commands == 2  # Nightbot x3; !game and !commands
    assert report.copypasta > 0  # the scripted floods repeat a few texts
    assert not any(p.user == "nightbot" or p.target.startswith("!") for p in pairs)
    # Whisper heard the streamer: most pairs after the first minute have speech context,
    # and the words chat echoes are in the context it echoes them from.
    late = [p for p in pairs if p.offset > 60]
    assert sum(1 for p in late if p.transcript) > 0.9 * len(late)
    for word in ("swan", "gerald"):
        echo = [p for p in pairs if word in p.target.casefold()]
        assert echo and all(word in " ".join(p.transcript).casefold() for p in echo), word

    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert "(from cache)" in second.stdout
    assert "transcribing" not in second.stderr and "from cache" in second.stderr
    assert [Pair.from_row(r) for r in load_pairs(out)] == pairs  # replaced, not appended


@pytest.mark.slow
def test_transcribe_vod_caches_by_content_model_and_options(
    tmp_path: Path, whisper_model: object
) -> None:
    """Real Whisper base on the demo clip (28 s); the cache hit runs no model at all."""
    from chatling.core.settings import AudioSettings
    from chatling.training.data.vod import VodOptions, transcribe_vod

    options = VodOptions.from_settings(AudioSettings())
    first = transcribe_vod(DEMO / "clip.opus", options, model=whisper_model,
                           cache_dir=tmp_path, progress=False)  # fmt: skip
    assert not first.cached and first.segments
    assert all(s.words for s in first.segments)
    words = [w for s in first.segments for w in s.words]
    assert all(a.end <= b.end for a, b in itertools.pairwise(words))
    assert 0 <= words[0].start and words[-1].end <= first.duration_s + 0.5

    loads: list[VodOptions] = []

    def no_model(opts: VodOptions) -> object:
        loads.append(opts)
        raise AssertionError("the cache should have answered")

    # The same bytes under another name: read back, no model loaded, no transcription.
    copy = tmp_path / "renamed.opus"
    copy.write_bytes((DEMO / "clip.opus").read_bytes())
    again = transcribe_vod(copy, options, cache_dir=tmp_path, progress=False, load_model=no_model)
    assert again.cached and again.segments == first.segments and not loads
    # Other decoding options are another cache entry: the loader is asked this time.
    with pytest.raises(AssertionError, match="cache should have answered"):
        transcribe_vod(copy, VodOptions.from_settings(AudioSettings(), beam_size=2),
                       cache_dir=tmp_path, progress=False, load_model=no_model)  # fmt: skip
    assert len(loads) == 1
    # Cut in two pieces (at the quietest moment near 20 s): the same words, times in order.
    pieces = transcribe_vod(DEMO / "clip.opus", VodOptions.from_settings(AudioSettings(),
                            piece_s=20.0), model=whisper_model, cache_dir=tmp_path,
                            progress=False)  # fmt: skip
    cut_words = [w for s in pieces.segments for w in s.words]
    assert all(a.end <= b.end for a, b in itertools.pairwise(cut_words))
    assert any(w.start > 20.0 for w in cut_words)
    same = difflib.SequenceMatcher(
        None, [w.text.casefold() for w in words], [w.text.casefold() for w in cut_words]
    )
    assert same.ratio() > 0.85, (words, cut_words)
    # A damaged cache file is re-made, not trusted.
    assert first.cache_file is not None
    first.cache_file.write_text(first.cache_file.read_text()[:200])
    fixed = transcribe_vod(copy, options, model=whisper_model, cache_dir=tmp_path,
                           progress=False)  # fmt: skip
    assert not fixed.cached and fixed.segments == first.segments


def cli(*argv: str) -> int:
    """The data commands in this process, without the developer's .env."""
    return data_main(["--env-file", "/nonexistent/.env", *argv])


def test_ingest_with_a_transcript_file(tmp_path: Path) -> None:
    transcript = tmp_path / "t.jsonl"
    transcript.write_text(
        "\n".join(
            json.dumps({"start": s, "end": s + 3.0, "text": f"line at {s}"})
            for s in range(0, 170, 5)
        )
    )
    out = tmp_path / "ds"
    argv = ["data", "ingest", "--chat", str(DEMO / "chat.json"), "--out", str(out)]
    assert cli(*argv, "--transcript", str(transcript), "--delay", "2") == 0
    ((name, entry),) = read_manifest(out)["sources"].items()
    assert name == "t" and entry["sha256"] is None
    assert entry["align_options"]["delay_s"] == 2.0
    assert entry["stats"]["with_transcript"] > 250


def test_ingest_drops_what_moderators_removed_and_inspect_prints_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    log = PROJECT_ROOT / "tests" / "data" / "chatlogs" / "justlog-irc.txt"
    transcript = tmp_path / "speech.json"
    transcript.write_text('[{"start": 0, "end": 5, "text": "hello chat"}]')
    out = tmp_path / "ds"
    argv = ["data", "ingest", "--chat", str(log), "--transcript", str(transcript),
            "--stream-start", "2023-11-14T22:13:20Z", "--out", str(out)]  # fmt: skip
    assert cli(*argv) == 0
    (entry,) = read_manifest(out)["sources"].values()
    report = FilterReport.from_dict(entry["stats"]["filters"])
    # A ban (all of the spammer's messages before it), a timeout and a deletion.
    assert report.total == 7 and report.removed == 3 and report.kept == 4
    targets = [p.target for p in map(Pair.from_row, load_pairs(out))]
    assert not any("example dot com" in t for t in targets)
    capsys.readouterr()
    assert cli("data", "inspect", str(log), "--stream-start", "1700000000") == 0
    printed = capsys.readouterr().out
    assert "format: justlog-irc" in printed and "messages: 7" in printed
    assert cli("data", "inspect", str(transcript)) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.startswith(f"chatling: error: {transcript}")


def test_hostile_input_gives_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    transcript = tmp_path / "t.json"
    transcript.write_text('[{"start": 0, "end": 2, "text": "hi"}]')
    broken_chat = tmp_path / "broken.json"
    broken_chat.write_text('{"comments": [{"content_offset_seconds": 1, ')
    out = tmp_path / "ds"
    chat = ["--chat", str(DEMO / "chat.json")]
    cases = [
        ([*chat, "--vod", str(tmp_path / "missing.mp4")], r"missing\.mp4: no such audio"),
        (["--chat", str(tmp_path / "nope.json"), "--transcript", str(transcript)],
         r"nope\.json: file not found"),
        (["--chat", str(broken_chat), "--transcript", str(transcript)],
         r"broken\.json \(line 1, column \d+\): the JSON stops in the middle"),
        (chat, "give the VOD"),
        ([*chat, "--transcript", str(transcript), "--delay", "50"], r"window .* is empty"),
        ([*chat, "--transcript", str(transcript), "--stream-start", "noon"], "ISO date"),
        ([*chat, "--transcript", str(tmp_path / "none.json")], r"none\.json: cannot read"),
    ]  # fmt: skip
    for argv, pattern in cases:
        capsys.readouterr()
        assert cli("data", "ingest", "--out", str(out), *argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("chatling: error:"), err
        assert re.search(pattern, err[-1]), err[-1]
    assert not out.exists()  # nothing was written
    bad_audio = tmp_path / "bad.opus"
    bad_audio.write_bytes(b"OggS" + bytes(range(256)) * 8)
    with pytest.raises(AudioError, match=r"bad\.opus"):
        _ingest(*chat, "--vod", str(bad_audio), "--out", str(out))


def _ingest(*argv: str) -> int:
    """The ingest handler itself, so the error's type is seen, not its printed line."""
    import argparse

    from chatling.cli.data import add_data_commands

    parser = argparse.ArgumentParser()
    parser.add_argument("--env-file", default="/nonexistent/.env")
    add_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "ingest", *argv, "--no-progress"])
    return int(args.func(args))


async def test_from_db_builds_pairs_from_a_real_store_never_from_the_bot(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    db = tmp_path / "live.sqlite"
    async with Store.open(db) as store:
        sid = await store.start_stream("Friday stream", "twitch", "annchan", "smol", None)
        store.add_utterance(sid, Utterance(0.0, 3.0, "welcome back chat"))
        store.add_utterance(sid, Utterance(10.0, 14.0, "we are playing goose empire today"))
        store.add_chat(sid, ChatMessage(5.0, "ann", "hi streamer", message_id="1"))
        store.add_chat(sid, ChatMessage(19.0, "bob", "goose empire pog", message_id="2"))
        store.add_chat(sid, ChatMessage(19.5, "nightbot", "follow!", message_id="3"))
        store.add_chat(sid, ChatMessage(20.0, "chatling", "geese rule", message_id="4"))
        store.add_chat(sid, ChatMessage(21.0, "botacct", "honk honk", message_id="5"))
        store.add_chat(sid, ChatMessage(22.0, "cat", "flagged", is_bot=True, message_id="6"))
        store.add_chat(sid, ChatMessage(30.0, "dan", "lol", message_id="7"))
        reply = Reply(20.5, "quiet", "prompt", chosen="honk honk", status="posted")
        store.add_reply(sid, reply)
        other = await store.start_stream("other", "replay", None, None, None)
        store.add_chat(other, ChatMessage(1.0, "eve", "other stream", message_id="8"))
    out = tmp_path / "ds"
    assert cli("data", "from-db", "--db", str(db), "--out", str(out)) == 0
    manifest = read_manifest(out)
    assert set(manifest["sources"]) == {"live-stream-1", "live-stream-2"}
    pairs = [Pair.from_row(r) for r in load_pairs(out, ["live-stream-1"])]
    assert [p.target for p in pairs] == ["hi streamer", "goose empire pog", "lol"]
    bob = pairs[1]
    # Speech of [19 - 45, 19 - 4]: both utterances ended by 15 s; the bot is never context.
    assert bob.transcript == ("welcome back chat", "we are playing goose empire today")
    assert bob.chat == ("ann: hi streamer",)
    assert pairs[2].chat == ("ann: hi streamer", "bob: goose empire pog")
    stats = manifest["sources"]["live-stream-1"]["stats"]["filters"]
    assert stats["bots"] == 4 and stats["kept"] == 3
    # --since leaves out older streams; a missing or foreign file is a clear error.
    since = ["data", "from-db", "--db", str(db), "--out", str(out), "--since", "2999-01-01"]
    assert cli(*since) == 2
    assert "no streams since 2999-01-01" in capsys.readouterr().err
    assert cli("data", "from-db", "--db", str(tmp_path / "no.sqlite"), "--out", str(out)) == 2
    assert "no.sqlite: no such database file" in capsys.readouterr().err
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    assert cli("data", "from-db", "--db", str(junk), "--out", str(out)) == 2
    assert "junk.sqlite: cannot read the database" in capsys.readouterr().err


async def test_from_db_leaves_out_deleted_and_bad_marked_and_learns_good_bot_posts(
    tmp_path: Path,
) -> None:
    db = tmp_path / "live.sqlite"
    async with Store.open(db) as store:
        sid = await store.start_stream("Friday stream", "twitch", "annchan", "smol", None)
        store.add_utterance(sid, Utterance(0.0, 3.0, "welcome back chat"))
        chat = [
            (5.0, "ann", "hi streamer", False),
            (6.0, "bob", "you are all terrible", False),  # deleted by a moderator
            (8.0, "chatling", "geese rule the pond", True),  # the bot, marked good
            (9.0, "chatling", "honk at me", True),  # marked good by one, bad by another
            (10.0, "chatling", "nobody marked this one", True),
            (11.0, "cat", "buy followers here", False),  # marked bad
            (30.0, "dan", "lol", False),
        ]
        for i, (t, user, text, is_bot) in enumerate(chat, 1):
            store.add_chat(sid, ChatMessage(t, user, text, message_id=f"m{i}", is_bot=is_bot))
        store.add_reply(
            sid, Reply(7.5, "quiet", "p", chosen="geese rule the pond", status="posted")
        )
        store.mark_deleted(sid, "m2")
        store.add_feedback(sid, "m3", "good", "mod1", "twitch", "geese rule the pond")
        store.add_feedback(sid, "m4", "good", "mod1", "twitch", "honk at me")
        store.add_feedback(sid, "m4", "bad", "mod2", "twitch", "honk at me")
        store.add_feedback(sid, "m6", "bad", "mod1", "twitch", "buy followers here")
        store.add_feedback(sid, "discord:42", "good", "mod1", "discord", "hi ann")
    out = tmp_path / "ds"
    assert cli("data", "from-db", "--db", str(db), "--out", str(out)) == 0
    pairs = [Pair.from_row(r) for r in load_pairs(out)]
    assert [(p.target, p.user) for p in pairs] == [
        ("hi streamer", "ann"),
        ("geese rule the pond", "chatling"),  # the bot's approved post is a target now
        ("lol", "dan"),
    ]
    # Deleted and bad-marked messages are not even context; the approved post is.
    assert pairs[2].chat == ("ann: hi streamer", "chatling: geese rule the pond")
    stats = read_manifest(out)["sources"]["live-stream-1"]["stats"]["filters"]
    assert stats["total"] == 4 and stats["kept"] == 3 and stats["bots"] == 1  # 3 left out


async def test_from_db_reads_a_version_1_log_without_marks(tmp_path: Path) -> None:
    import aiosqlite

    from chatling.store.migrations import load_migrations, migrate

    db = tmp_path / "old.sqlite"
    async with aiosqlite.connect(db, isolation_level=None) as conn:
        assert await migrate(conn, db, load_migrations()[:1]) == [1]
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO streams (id, name, source, started_at) VALUES (1, 'old', 'twitch', 0)"
        )
        conn.executemany(
            "INSERT INTO chat_messages (stream_id, offset_s, user, text, message_id, emotes,"
            " is_bot, source, received_at) VALUES (1, ?, ?, ?, ?, '[]', ?, 'twitch', 0)",
            [(5.0, "ann", "hi streamer", "m1", 0), (8.0, "chatling", "geese", "m2", 1)],
        )
    out = tmp_path / "ds"
    assert cli("data", "from-db", "--db", str(db), "--out", str(out)) == 0
    assert [Pair.from_row(r).target for r in load_pairs(out)] == ["hi streamer"]
