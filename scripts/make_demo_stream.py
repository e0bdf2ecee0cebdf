"""Re-make the demo stream that `make demo` replays: speech audio, chat log and a short clip.

The committed files under ``data/demo/`` are what the demo and the tests use; this script
only re-makes them from ``data/demo/script.json`` (the streamer's lines, written for this
project) and ``data/demo/chat_templates.json`` (viewers and chat templates):

- ``stream.opus``: every line spoken by espeak-ng at its start time, one 16 kHz mono track,
  Ogg Opus.
- ``chat.json``: a TwitchDownloader chat JSON (FileInfo version 1.4.0) made from the
  templates by a seeded generator; byte-identical on every run.
- ``clip.opus``, ``clip_chat.json``, ``clip_script.json``: a 25-35 s cut of the same, with
  offsets starting at 0, for fast end-to-end tests.
- ``manifest.json``: the settings that made the files and their measured durations.

Run with the project venv (it needs numpy and PyAV, which faster-whisper brings):

    .venv/bin/python scripts/make_demo_stream.py             # re-make everything
    .venv/bin/python scripts/make_demo_stream.py --chat-only # chat files only, no espeak
    .venv/bin/python scripts/make_demo_stream.py --retime    # re-space start times first

Speech needs espeak-ng on PATH (Debian/Ubuntu: ``apt-get install espeak-ng``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from chatling.core.errors import ChatlingError, InputFileError  # noqa: E402

log = logging.getLogger("make_demo_stream")

SAMPLE_RATE = 16000
TAIL_S = 8  # silence after the last line's start estimate, whole seconds
FIRST_START_S = 1.0
MIN_GAP_S = 0.3  # speech closer than this to the next line means the script needs --retime
DEFAULT_DIR = REPO_ROOT / "data" / "demo"


class DemoBuildError(ChatlingError):
    """A tool the demo build needs is missing or failed."""


@dataclass(frozen=True)
class Line:
    """One thing the streamer says, with the chat cues that follow it.

    ``say`` overrides what espeak-ng speaks where the written form is misheard ("Chat ling"
    makes Whisper write "Chatling"); ``text`` stays the reference transcript.
    """

    start: float
    text: str
    react: str
    say: str | None = None
    echo: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    bot: tuple[str, ...] = ()
    burst: str | None = None


@dataclass(frozen=True)
class Voice:
    """espeak-ng settings."""

    name: str = "en-us+m7"
    speed: int = 180
    pitch: int = 55


@dataclass(frozen=True)
class Planned:
    """A chat message before it becomes a TwitchDownloader comment.

    ``fixed`` messages keep their poster (a command and the bot's answer that names them).
    """

    offset: float
    login: str
    text: str
    fixed: bool = False


# ---------------------------------------------------------------- script and layout


def load_script(path: Path) -> list[Line]:
    """Read script.json; every line needs a text and a start after the previous one."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFileError(path, None, f"cannot read the demo script: {exc}") from exc
    if not isinstance(raw, list) or not raw:
        raise InputFileError(path, None, "expected a non-empty JSON list of lines")
    lines: list[Line] = []
    for i, item in enumerate(raw):
        try:
            line = Line(
                start=float(item["start"]),
                text=str(item["text"]),
                say=item.get("say"),
                react=str(item.get("react", "info")),
                echo=tuple(item.get("echo", ())),
                answers=tuple(item.get("answers", ())),
                bot=tuple(item.get("bot", ())),
                burst=item.get("burst"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputFileError(path, f"line {i}", f"needs 'start' and 'text': {exc}") from exc
        if lines and line.start <= lines[-1].start:
            raise InputFileError(path, f"line {i}", "start must be after the previous line")
        lines.append(line)
    return lines


def stream_length(lines: list[Line]) -> int:
    """Whole seconds of stream: a fixed tail after the last line's start."""
    return math.ceil(lines[-1].start) + TAIL_S


def line_end_estimate(lines: list[Line], i: int) -> float:
    """When line i has been said, judged from the script alone (chat must not need audio)."""
    if i + 1 < len(lines):
        return lines[i + 1].start - 0.8
    return lines[i].start + 0.32 * len(lines[i].text.split())


def clip_bounds(lines: list[Line], first_line: int, seconds: float) -> tuple[float, float]:
    """A clip that starts just before ``first_line`` and ends in the pause before a line."""
    start = max(0.0, lines[first_line].start - 0.3)
    for line in lines[first_line + 1 :]:
        end = line.start - 0.2
        if end - start >= seconds:
            return round(start, 3), round(end, 3)
    raise DemoBuildError(f"no clip of {seconds} s fits after script line {first_line}")


# ---------------------------------------------------------------- chat


def make_viewers(templates: dict, rng: random.Random) -> dict[str, dict]:
    """Commenter records keyed by login, with stable made-up ids and account dates."""
    viewers = {}
    for display, weight, badges, color in templates["viewers"]:
        born = datetime(2016, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(2900))
        viewers[display.lower()] = {
            "display_name": display,
            "_id": str(rng.randrange(40_000_000, 990_000_000)),
            "name": display.lower(),
            "weight": weight,
            "badges": badges,
            "color": color,
            "created_at": iso(born),
        }
    bot = templates["nightbot"]
    viewers[bot["login"]] = {
        "display_name": bot["display_name"],
        "_id": bot["id"],
        "name": bot["login"],
        "weight": 0,
        "badges": bot["badges"],
        "color": bot["color"],
        "created_at": "2014-03-17T18:42:10.000Z",
    }
    return viewers


def pick_viewers(viewers: dict[str, dict], rng: random.Random, k: int) -> list[str]:
    """k distinct chatty viewers, the chattiest more often."""
    pool = [login for login, v in viewers.items() if v["weight"] > 0]
    chosen: list[str] = []
    while len(chosen) < min(k, len(pool)):
        weights = [0 if p in chosen else viewers[p]["weight"] for p in pool]
        chosen.append(rng.choices(pool, weights)[0])
    return chosen


def fill(template: str, echo: str = "") -> str:
    return template.replace("{echo}", echo).replace("{ECHO}", echo.upper())


def plan_line(line: Line, anchor: float, templates: dict, viewers, rng) -> list[Planned]:
    """What chat says in the seconds after one line: reactions, echoes, answers, a burst."""
    lo, hi = templates["reaction_counts"][line.react]
    texts = [rng.choice(templates["reactions"][line.react]) for _ in range(rng.randint(lo, hi))]
    for word in line.echo:
        texts += [fill(rng.choice(templates["echo"]), word) for _ in range(rng.randint(1, 2))]
    if line.answers:
        texts += [rng.choice(line.answers) for _ in range(rng.randint(6, 9))]
    planned = [
        Planned(round(anchor + rng.triangular(2.0, 8.0, 3.5), 3), who, text)
        for who, text in zip(pick_viewers(viewers, rng, len(texts)), texts, strict=True)
    ]
    if line.burst:
        pool = templates["bursts"][line.burst]
        n = rng.randint(10, 15)
        planned += [
            Planned(round(anchor + rng.triangular(1.2, 6.0, 2.2), 3), who, rng.choice(pool))
            for who in pick_viewers(viewers, rng, n)
        ]
    for text in line.bot:
        who = pick_viewers(viewers, rng, 1)[0]
        planned.append(Planned(round(anchor + rng.uniform(2.5, 7.0), 3), who, text))
    return planned


def plan_background(length: int, templates: dict, viewers, rng) -> list[Planned]:
    """Chatter that follows no line: greetings early on, then small talk, about 0.2 per s."""
    planned, t = [], 0.5
    while True:
        t += rng.expovariate(0.22)
        if t >= length - 0.5:
            return planned
        pool = templates["reactions"]["greet"] if t < 15 else templates["background"]
        who = pick_viewers(viewers, rng, 1)[0]
        planned.append(Planned(round(t, 3), who, rng.choice(pool)))


def plan_nightbot(length: int, templates: dict, viewers, rng) -> list[Planned]:
    """A timer message and two commands with Nightbot's answers."""
    bot = templates["nightbot"]
    asker, gamer = pick_viewers(viewers, rng, 2)
    t_cmd, t_game = round(length * 0.55, 3), round(length * 0.2, 3)
    return [
        Planned(round(length * 0.4, 3), bot["login"], bot["timer"][0], True),
        Planned(t_cmd, asker, "!commands", True),
        Planned(round(t_cmd + 1.3, 3), bot["login"], bot["commands"].format(user=asker), True),
        Planned(t_game, gamer, "!game", True),
        Planned(round(t_game + 1.1, 3), bot["login"], bot["game"].format(user=gamer), True),
    ]


def spread_posters(planned: list[Planned], viewers, rng, gap: float = 2.5) -> list[Planned]:
    """Give a message to someone else when its poster spoke less than ``gap`` s before.

    Real viewers rarely post twice within a couple of seconds; the plan above picks
    posters line by line and would otherwise double some up.
    """
    last: dict[str, float] = {}
    out = []
    for p in planned:
        if not p.fixed and p.offset - last.get(p.login, -gap) < gap:
            free = [
                v for v in viewers if viewers[v]["weight"] and p.offset - last.get(v, -gap) >= gap
            ]
            if free:
                p = Planned(
                    p.offset, rng.choices(free, [viewers[v]["weight"] for v in free])[0], p.text
                )
        last[p.login] = p.offset
        out.append(p)
    return out


def fragments_of(body: str, emotes: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """Twitch fragments (text runs and emotes) and emoticon ranges (code points, end inclusive)."""
    fragments: list[dict] = []
    ranges: list[dict] = []
    pos, text = 0, ""
    for i, word in enumerate(body.split(" ")):
        sep = " " if i else ""
        if word in emotes:
            text += sep
            if text:
                fragments.append({"text": text, "emoticon": None})
            fragments.append({"text": word, "emoticon": {"emoticon_id": emotes[word]}})
            begin = pos + len(sep)
            ranges.append({"_id": emotes[word], "begin": begin, "end": begin + len(word) - 1})
            text = ""
        else:
            text += sep + word
        pos += len(sep) + len(word)
    if text:
        fragments.append({"text": text, "emoticon": None})
    return fragments, ranges


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def to_comment(p: Planned, viewer: dict, templates: dict, started: datetime, rng) -> dict:
    """One comment in TwitchDownloader's JSON layout."""
    channel = templates["channel"]
    fragments, ranges = fragments_of(p.text, templates["emotes"])
    return {
        "_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "created_at": iso(started + timedelta(seconds=p.offset)),
        "channel_id": str(channel["id"]),
        "content_type": "video",
        "content_id": channel["video_id"],
        "content_offset_seconds": p.offset,
        "commenter": {
            "display_name": viewer["display_name"],
            "_id": viewer["_id"],
            "name": viewer["name"],
            "bio": None,
            "created_at": viewer["created_at"],
            "updated_at": viewer["created_at"],
            "logo": None,
        },
        "message": {
            "body": p.text,
            "bits_spent": 0,
            "fragments": fragments,
            "user_badges": [
                {"_id": b.split("/")[0], "version": b.split("/")[1]} for b in viewer["badges"]
            ],
            "user_color": viewer["color"],
            "emoticons": ranges,
        },
    }


def build_chat(lines: list[Line], templates: dict, seed: int) -> dict:
    """The whole chat log, a pure function of the script, the templates and the seed."""
    rng = random.Random(seed)
    channel = templates["channel"]
    length = stream_length(lines)
    viewers = make_viewers(templates, rng)
    planned: list[Planned] = []
    for i, line in enumerate(lines):
        planned += plan_line(line, line_end_estimate(lines, i), templates, viewers, rng)
    planned += plan_background(length, templates, viewers, rng)
    planned += plan_nightbot(length, templates, viewers, rng)
    planned = sorted(
        (p for p in planned if 0.2 <= p.offset <= length - 0.3),
        key=lambda p: (p.offset, p.login, p.text),
    )
    planned = spread_posters(planned, viewers, rng)
    started = datetime.fromisoformat(channel["stream_started_at"].replace("Z", "+00:00"))
    comments = [to_comment(p, viewers[p.login], templates, started, rng) for p in planned]
    return chat_root(channel, started, length, comments)


def chat_root(channel: dict, started: datetime, length: float, comments: list[dict]) -> dict:
    made = iso(started + timedelta(hours=2))
    return {
        "FileInfo": {
            "Version": {"Major": 1, "Minor": 4, "Patch": 0},
            "CreatedAt": made,
            "UpdatedAt": made,
        },
        "streamer": {
            "name": channel["display_name"],
            "login": channel["login"],
            "id": channel["id"],
        },
        "clipper": None,
        "video": {
            "title": channel["title"],
            "description": None,
            "id": channel["video_id"],
            "created_at": iso(started),
            "start": 0,
            "end": length,
            "length": length,
            "viewCount": 1873,
            "game": channel["game"],
            "chapters": [],
        },
        "comments": comments,
        "embeddedData": None,
    }


def clip_chat(chat: dict, start: float, end: float) -> dict:
    """The comments of [start, end) with offsets shifted to start at 0."""
    clipped = json.loads(json.dumps(chat))
    kept = [c for c in clipped["comments"] if start <= c["content_offset_seconds"] < end]
    for c in kept:
        c["content_offset_seconds"] = round(c["content_offset_seconds"] - start, 3)
    clipped["comments"] = kept
    clipped["video"].update(
        title=chat["video"]["title"] + " (demo clip)",
        start=0,
        end=round(end - start, 3),
        length=round(end - start, 3),
    )
    return clipped


# ---------------------------------------------------------------- audio


def find_espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DemoBuildError(
            "espeak-ng was not found on PATH; it speaks the demo script. Install it "
            "(Debian/Ubuntu: `apt-get install espeak-ng`) or run with --chat-only."
        )
    return exe


def speak(exe: str, text: str, voice: Voice, workdir: Path) -> np.ndarray:
    """One line as float32 samples at 16 kHz."""
    wav = workdir / "line.wav"
    cmd = [exe, "-v", voice.name, "-s", str(voice.speed), "-p", str(voice.pitch), "-w", str(wav)]
    done = subprocess.run([*cmd, text], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not wav.exists():
        raise DemoBuildError(f"espeak-ng failed on {text!r}: {done.stderr.strip()}")
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks = []
    with av.open(str(wav)) as container:
        for frame in container.decode(audio=0):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32)


def voiced_span(samples: np.ndarray) -> tuple[float, float]:
    """Seconds from the clip's start to its first and last audible sample."""
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    if loud.size == 0:
        return 0.0, 0.0
    return loud[0] / SAMPLE_RATE, (loud[-1] + 1) / SAMPLE_RATE


def retime(lines: list[Line], speech: list[np.ndarray], seed: int) -> list[float]:
    """New start times: each line follows the previous one's last sound after a pause.

    Pauses are 0.5-1.1 s, and 1.2-1.5 s after a question to chat, so the transcriber
    commits each line as its own utterance.
    """
    rng = random.Random(seed)
    starts, t = [], FIRST_START_S
    for i, samples in enumerate(speech):
        if i:
            pause = rng.uniform(1.2, 1.5) if lines[i - 1].answers else rng.uniform(0.5, 1.1)
            t = starts[-1] + voiced_span(speech[i - 1])[1] + pause - voiced_span(samples)[0]
        starts.append(round(t, 2))
    return starts


def mix(lines: list[Line], speech: list[np.ndarray], length: int) -> np.ndarray:
    """All lines on one track at their start times, peak-normalised to -1 dBFS."""
    track = np.zeros(length * SAMPLE_RATE, dtype=np.float32)
    for i, (line, samples) in enumerate(zip(lines, speech, strict=True)):
        at = round(line.start * SAMPLE_RATE)
        end_s = line.start + voiced_span(samples)[1]
        if (
            i + 1 < len(lines)
            and end_s > lines[i + 1].start + voiced_span(speech[i + 1])[0] - MIN_GAP_S
        ):
            log.warning("line %d runs into line %d; run with --retime", i, i + 1)
        if at + len(samples) > len(track):
            raise DemoBuildError(f"line {i} ends after the stream's {length} s; run --retime")
        track[at : at + len(samples)] += samples
    return track * (0.89 / max(1e-6, float(np.abs(track).max())))


def encode_opus(samples: np.ndarray, path: Path, bitrate: int, title: str) -> None:
    """Write Ogg Opus with PyAV (libopus), atomically."""
    tmp = path.with_suffix(".tmp.opus")
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
    bitexact = {"fflags": "+bitexact", "serial_offset": "0"}  # same bytes on every run
    with av.open(str(tmp), "w", format="ogg", options=bitexact) as out:
        out.metadata.update(title=title, comment="chatling demo stream, original, MIT")
        stream = out.add_stream("libopus", rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = bitrate
        step = SAMPLE_RATE  # one second per frame; the encoder re-chunks
        for i in range(0, len(pcm), step):
            frame = av.AudioFrame.from_ndarray(pcm[None, i : i + step], format="s16", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    os.replace(tmp, path)
    log.info("wrote %s (%.1f s, %d bytes)", path, len(samples) / SAMPLE_RATE, path.stat().st_size)


# ---------------------------------------------------------------- files and CLI


def chat_text(chat: dict) -> str:
    """Compact JSON like TwitchDownloader's, but one comment a line so diffs stay readable."""
    parts = []
    for key, value in chat.items():
        if key == "comments":
            rows = ",\n".join(json.dumps(c, ensure_ascii=False) for c in value)
            parts.append(f'"comments": [\n{rows}\n]')
        else:
            parts.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{" + ",\n".join(parts) + "}"


def write_text(path: Path, text: str) -> None:
    """Write atomically (temp file, then rename) with a trailing newline."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
    log.info("wrote %s", path)


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, ensure_ascii=False, indent=2))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Files are written to --out-dir; see data/demo/README.md.",
    )
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_DIR, help="where the files go")
    parser.add_argument("--voice", default=Voice.name, help="espeak-ng voice (default %(default)s)")
    parser.add_argument("--speed", type=int, default=Voice.speed, help="words per minute")
    parser.add_argument("--pitch", type=int, default=Voice.pitch, help="espeak-ng pitch 0-99")
    parser.add_argument("--seed", type=int, default=20240518, help="chat and pause seed")
    parser.add_argument("--bitrate", type=int, default=24000, help="Opus bits per second")
    parser.add_argument("--clip-line", type=int, default=30, help="script line the clip starts at")
    parser.add_argument("--clip-seconds", type=float, default=28.0, help="shortest clip length")
    parser.add_argument("--chat-only", action="store_true", help="re-make chat files, no audio")
    parser.add_argument(
        "--retime",
        action="store_true",
        help="re-space script.json start times to espeak's durations first",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> None:
    out: Path = args.out_dir
    script_path = out / "script.json"
    lines = load_script(script_path)
    templates = json.loads((out / "chat_templates.json").read_text(encoding="utf-8"))
    voice = Voice(args.voice, args.speed, args.pitch)
    speech: list[np.ndarray] = []
    if not args.chat_only:
        exe = find_espeak()
        log.info(
            "speaking %d lines with espeak-ng voice=%s speed=%d pitch=%d",
            len(lines),
            voice.name,
            voice.speed,
            voice.pitch,
        )
        with tempfile.TemporaryDirectory() as tmp:
            speech = [speak(exe, line.say or line.text, voice, Path(tmp)) for line in lines]
    if args.retime:
        if not speech:
            raise DemoBuildError("--retime needs the audio; drop --chat-only")
        raw = json.loads(script_path.read_text(encoding="utf-8"))
        for item, start in zip(raw, retime(lines, speech, args.seed), strict=True):
            item["start"] = start
        write_json(script_path, raw)
        lines = load_script(script_path)
    length = stream_length(lines)
    start, end = clip_bounds(lines, args.clip_line, args.clip_seconds)
    chat = build_chat(lines, templates, args.seed)
    clipped = clip_chat(chat, start, end)
    write_text(out / "chat.json", chat_text(chat))
    write_text(out / "clip_chat.json", chat_text(clipped))
    clip_lines = [
        {"start": round(ln.start - start, 3), "text": ln.text}
        for ln in lines
        if start <= ln.start < end
    ]
    write_json(out / "clip_script.json", clip_lines)
    log.info(
        "chat: %d messages, clip %.1f-%.1f s: %d messages",
        len(chat["comments"]),
        start,
        end,
        len(clipped["comments"]),
    )
    if args.chat_only:
        return
    track = mix(lines, speech, length)
    title = chat["video"]["title"]
    encode_opus(track, out / "stream.opus", args.bitrate, title)
    cut = track[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)]
    encode_opus(cut, out / "clip.opus", args.bitrate, title + " (demo clip)")
    write_json(out / "manifest.json", manifest(args, voice, lines, chat, clipped, start, end))


def manifest(args, voice: Voice, lines, chat, clipped, start: float, end: float) -> dict:
    version = subprocess.run([find_espeak(), "--version"], capture_output=True, text=True)
    return {
        "made_by": "scripts/make_demo_stream.py",
        "espeak_ng": version.stdout.split("  Data at")[0].strip(),
        "voice": voice.name,
        "speed_wpm": voice.speed,
        "pitch": voice.pitch,
        "seed": args.seed,
        "sample_rate": SAMPLE_RATE,
        "opus_bitrate": args.bitrate,
        "stream": {
            "audio": "stream.opus",
            "chat": "chat.json",
            "script": "script.json",
            "duration_s": chat["video"]["length"],
            "lines": len(lines),
            "messages": len(chat["comments"]),
        },
        "clip": {
            "audio": "clip.opus",
            "chat": "clip_chat.json",
            "script": "clip_script.json",
            "source_start_s": start,
            "source_end_s": end,
            "duration_s": round(end - start, 3),
            "messages": len(clipped["comments"]),
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        build(args)
    except ChatlingError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
