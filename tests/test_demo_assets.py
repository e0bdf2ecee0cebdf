"""Checks on the committed demo stream under data/demo/ that `make demo` replays.

They guard what a user of the demo would notice: the chat loads as a TwitchDownloader
file with chat that plausibly follows the streamer, the audio decodes (with
faster-whisper's own decoder) to the stream's length with speech where the script says,
the clip is the stream's audio and chat of one time range, and the committed chat is
exactly what scripts/make_demo_stream.py makes from the script. No espeak-ng needed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.audio import decode_audio

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
GENERATOR = REPO / "scripts" / "make_demo_stream.py"
SR = 16000


def load(name: str):
    return json.loads((DEMO / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def chat() -> dict:
    return load("chat.json")


@pytest.fixture(scope="module")
def clip_chat() -> dict:
    return load("clip_chat.json")


@pytest.fixture(scope="module")
def script() -> list[dict]:
    return load("script.json")


@pytest.fixture(scope="module")
def manifest() -> dict:
    return load("manifest.json")


@pytest.fixture(scope="module")
def stream_audio() -> np.ndarray:
    return decode_audio(str(DEMO / "stream.opus"), sampling_rate=SR)


@pytest.fixture(scope="module")
def clip_audio() -> np.ndarray:
    return decode_audio(str(DEMO / "clip.opus"), sampling_rate=SR)


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("make_demo_stream", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def envelope(samples: np.ndarray, hop: int = SR // 100) -> np.ndarray:
    """RMS per 10 ms."""
    n = len(samples) // hop
    return np.sqrt(np.mean(samples[: n * hop].reshape(n, hop) ** 2, axis=1))


def offsets(chat: dict) -> list[float]:
    return [c["content_offset_seconds"] for c in chat["comments"]]


# ---------------------------------------------------------------- chat


def test_chat_has_twitchdownloader_layout(chat):
    assert chat["FileInfo"]["Version"] == {"Major": 1, "Minor": 4, "Patch": 0}
    assert {"name", "id"} <= chat["streamer"].keys()
    assert {"title", "id", "created_at", "start", "end", "length"} <= chat["video"].keys()
    for i, c in enumerate(chat["comments"]):
        assert {"_id", "created_at", "content_offset_seconds", "commenter", "message"} <= c.keys()
        assert {"display_name", "_id", "name"} <= c["commenter"].keys(), i
        msg = c["message"]
        assert {"body", "fragments", "user_badges", "user_color", "emoticons"} <= msg.keys(), i
        assert "".join(f["text"] for f in msg["fragments"]) == msg["body"], i
    assert len({c["_id"] for c in chat["comments"]}) == len(chat["comments"])


def test_chat_size_and_timing_are_plausible(chat):
    times = offsets(chat)
    assert 250 <= len(times) <= 400
    assert times == sorted(times)
    assert 0 <= times[0] and times[-1] < chat["video"]["length"]
    viewers = {c["commenter"]["name"] for c in chat["comments"]}
    assert 35 <= len(viewers) <= 45
    # no long dead air: every 15 s window of the stream has chat in it
    for t in range(0, int(chat["video"]["length"]) - 15, 5):
        assert any(t <= x < t + 15 for x in times), f"no chat between {t} and {t + 15} s"


def test_chat_echoes_the_streamer_after_he_speaks(chat, script):
    for line in script:
        for word in line.get("echo", []):
            hits = [
                c["content_offset_seconds"] - line["start"]
                for c in chat["comments"]
                if word.lower() in c["message"]["body"].lower()
            ]
            assert any(1.0 <= d <= 14.0 for d in hits), f"nobody echoes {word!r} in time"


def test_chat_answers_questions_and_floods_after_big_moments(chat, script):
    times = np.array(offsets(chat))
    for line in script:
        window = (times >= line["start"] + 1) & (times <= line["start"] + 14)
        if line.get("answers"):
            said = zip(chat["comments"], window, strict=True)
            bodies = {c["message"]["body"] for c, w in said if w}
            assert len(bodies & set(line["answers"])) >= 3, line["text"]
        if line.get("burst"):
            assert window.sum() >= 15, f"no flood after {line['text']!r}"


def test_chat_addresses_the_bot_a_few_times_spread_out(chat):
    addressed = [
        c["content_offset_seconds"]
        for c in chat["comments"]
        if "chatling" in c["message"]["body"].lower()
    ]
    assert 8 <= len(addressed) <= 12
    assert sum(1 for c in chat["comments"] if c["message"]["body"].startswith("@chatling")) >= 4
    assert addressed[0] < 45 and addressed[-1] > chat["video"]["length"] - 45
    assert max(np.diff(addressed)) < 50


def test_chat_has_commands_and_nightbot(chat):
    bodies = [(c["commenter"]["name"], c["message"]["body"]) for c in chat["comments"]]
    askers = [user for user, body in bodies if body == "!commands"]
    assert askers
    assert any(user == "nightbot" and body.startswith(f"@{askers[0]} ") for user, body in bodies)


def test_emotes_are_fragments_with_ids(chat):
    seen = set()
    for c in chat["comments"]:
        msg = c["message"]
        emote_fragments = [f for f in msg["fragments"] if f["emoticon"]]
        assert len(emote_fragments) == len(msg["emoticons"])
        for frag, rng in zip(emote_fragments, msg["emoticons"], strict=True):
            assert frag["emoticon"]["emoticon_id"] == rng["_id"]
            assert msg["body"][rng["begin"] : rng["end"] + 1] == frag["text"]
            seen.add(frag["text"])
    assert {"KEKW", "LUL", "PogChamp", "Kappa", "OMEGALUL"} <= seen


# ---------------------------------------------------------------- audio


def test_stream_audio_decodes_to_the_stream_length(stream_audio, chat, manifest):
    assert (DEMO / "stream.opus").stat().st_size < 2_000_000
    assert abs(len(stream_audio) / SR - chat["video"]["length"]) <= 1.0
    assert manifest["stream"]["duration_s"] == chat["video"]["length"]
    assert 120 <= chat["video"]["length"] <= 190


def test_speech_starts_at_script_times_after_a_pause(stream_audio, script):
    env = envelope(stream_audio)
    speaking = env > 0.01
    for i, line in enumerate(script):
        at = round(line["start"] * 100)
        assert speaking[at : at + 50].any(), f"no speech within 0.5 s of line {i}"
        if i:
            before = speaking[at - 40 : at]
            assert not before.any(), f"no pause of 0.4 s before line {i}: {line['text']!r}"
    tail = speaking[round((script[-1]["start"] + 4) * 100) :]
    assert tail.size and not tail[-100:].any(), "the stream should end in silence"


# ---------------------------------------------------------------- clip


def test_clip_audio_is_the_stream_cut(clip_audio, stream_audio, clip_chat, manifest):
    seconds = len(clip_audio) / SR
    assert 25 <= seconds <= 35
    assert abs(seconds - clip_chat["video"]["length"]) <= 1.0
    start = round(manifest["clip"]["source_start_s"] * SR)
    part = stream_audio[start : start + len(clip_audio)]
    a, b = envelope(clip_audio), envelope(part)
    n = min(len(a), len(b))
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.9


def test_clip_chat_is_the_stream_chat_of_that_range(chat, clip_chat, manifest):
    start, end = manifest["clip"]["source_start_s"], manifest["clip"]["source_end_s"]
    expected = [c for c in chat["comments"] if start <= c["content_offset_seconds"] < end]
    got = clip_chat["comments"]
    assert [c["_id"] for c in got] == [c["_id"] for c in expected]
    for g, e in zip(got, expected, strict=True):
        assert g["content_offset_seconds"] == pytest.approx(e["content_offset_seconds"] - start)
        assert g["message"] == e["message"]
    assert offsets(clip_chat)[0] >= 0
    assert any("chatling" in c["message"]["body"].lower() for c in got)


def test_clip_script_matches_the_clip(clip_audio, script, manifest):
    clip_script = load("clip_script.json")
    start = manifest["clip"]["source_start_s"]
    assert any("chatling" in line["text"].lower() for line in clip_script)
    full = {line["text"]: line["start"] for line in script}
    for line in clip_script:
        assert line["start"] == pytest.approx(full[line["text"]] - start)
        assert 0 <= line["start"] < len(clip_audio) / SR


# ---------------------------------------------------------------- generator


def test_committed_chat_is_what_the_generator_makes(generator, manifest):
    lines = generator.load_script(DEMO / "script.json")
    templates = load("chat_templates.json")
    made = generator.build_chat(lines, templates, manifest["seed"])
    assert generator.chat_text(made) + "\n" == (DEMO / "chat.json").read_text(encoding="utf-8")
    start, end = manifest["clip"]["source_start_s"], manifest["clip"]["source_end_s"]
    clipped = generator.clip_chat(made, start, end)
    assert generator.chat_text(clipped) + "\n" == (DEMO / "clip_chat.json").read_text("utf-8")


def test_generator_says_how_to_install_espeak_when_missing(tmp_path):
    for name in ("script.json", "chat_templates.json"):
        shutil.copy(DEMO / name, tmp_path / name)
    env = {**os.environ, "PATH": str(tmp_path)}  # a PATH without espeak-ng
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert "apt-get install espeak-ng" in done.stderr
    assert not (tmp_path / "chat.json").exists()


def test_generator_help_explains_itself():
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "--retime" in done.stdout and "--chat-only" in done.stdout
