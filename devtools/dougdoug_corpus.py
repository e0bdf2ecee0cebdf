"""Reader of the DougDoug development corpus (``../shared/data/dougdoug-takeover-europe``).

NOT a product chat-log format: the chat was read off the video frames by a
vision model, and the transcript is another project's ASR export. This reader
exists to develop and measure the alignment (``bench/reaction_delay.py``,
``bench/align_throughput.py``) on real chat; the corpus has no licence, so it
is read in place and never copied into this repository.

- ``chat_frames.jsonl``: one sampled frame a line, ``{frame, video_time_sec,
  chat_messages: [{user_name, message, emotes}]}``. A message stays on screen
  for several frames, so it is kept once: the first time its ``(user, message)``
  is seen, skipping repeats within ``dedup_window_s``. A frame only shows that
  a message was posted after the previous frame and by this one; with
  ``timing="interpolate"`` (default) the new messages of a frame are spread
  over that interval in screen order (top is oldest), with ``"frame"`` they
  all get the frame's time (late by up to a frame interval, 2.3 s median).
- ``transcript.jsonl``: ASR segments ``{start, end, text_normalized, words}``
  (``words`` is empty in this export).

Run ``.venv/bin/python devtools/dougdoug_corpus.py [DIR]`` for a summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chatling.core.errors import InputFileError
from chatling.core.events import ChatMessage
from chatling.training.data.align import Segment, Word

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "dougdoug-takeover-europe"
SOURCE = "dougdoug-takeover-europe"


@dataclass(frozen=True, slots=True)
class Corpus:
    segments: list[Segment]
    messages: list[ChatMessage]
    frames: int
    """Frames read from ``chat_frames.jsonl``."""
    sightings: int
    """Messages seen over all frames, before de-duplication."""


def _lines(path: Path) -> list[tuple[int, dict]]:
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputFileError(path, None, f"cannot read the corpus file ({exc.strerror})") from None
    out = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(path, f"line {number}", f"invalid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise InputFileError(path, f"line {number}", "expected one JSON object a line")
        out.append((number, value))
    return out


def read_transcript(path: Path) -> list[Segment]:
    """The ASR segments, sorted by start; word timings kept when the export has them."""
    segments = []
    for number, row in _lines(path):
        try:
            text = str(row.get("text_normalized") or row.get("text_raw") or "").strip()
            words = tuple(
                Word(float(w["start"]), float(w["end"]), str(w.get("word") or w.get("text")))
                for w in row.get("words") or ()
            )
            segments.append(Segment(float(row["start"]), float(row["end"]), text, words))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputFileError(path, f"line {number}", f"bad segment ({exc!r})") from None
    segments.sort(key=lambda s: (s.start, s.end))
    return segments


def read_chat(
    path: Path,
    *,
    dedup_window_s: float = 60.0,
    timing: Literal["interpolate", "frame"] = "interpolate",
) -> tuple[list[ChatMessage], int, int]:
    """(messages sorted by offset, frames, sightings before de-duplication)."""
    seen: dict[tuple[str, str], float] = {}  # (user, text) -> last frame showing it
    messages: list[ChatMessage] = []
    prev_time = 0.0
    frames = sightings = 0
    for number, row in _lines(path):
        try:
            t = float(row["video_time_sec"])
            items = list(row.get("chat_messages") or ())
        except (KeyError, TypeError, ValueError) as exc:
            raise InputFileError(path, f"line {number}", f"bad frame ({exc!r})") from None
        frames += 1
        sightings += len(items)
        # Forget messages not on screen for the window (a few hundred keys at most).
        for old in [key for key, last in seen.items() if last < t - dedup_window_s]:
            del seen[old]
        new = []
        for item in items:
            user = str(item.get("user_name") or "").strip()
            text = str(item.get("message") or "")
            key = (user.casefold(), " ".join(text.split()))
            if not user or key in seen:
                if key in seen:
                    seen[key] = t  # still on screen: the window runs from the last sighting
                continue
            seen[key] = t
            emotes = tuple(str(e.get("emote_name")) for e in item.get("emotes") or ())
            new.append((user, text, emotes))
        for i, (user, text, emotes) in enumerate(new):
            offset = t if timing == "frame" else prev_time + (t - prev_time) * (i + 1) / len(new)
            messages.append(
                ChatMessage(
                    offset=round(offset, 3),
                    user=user.casefold(),
                    text=text,
                    display_name=user,
                    emotes=emotes,
                    message_id=f"dd-{number}-{i}",
                )
            )
        prev_time = t
    messages.sort(key=lambda m: m.offset)
    return messages, frames, sightings


def load_corpus(
    directory: Path = DEFAULT_DIR, *, timing: Literal["interpolate", "frame"] = "interpolate"
) -> Corpus:
    segments = read_transcript(directory / "transcript.jsonl")
    messages, frames, sightings = read_chat(directory / "chat_frames.jsonl", timing=timing)
    return Corpus(segments, messages, frames, sightings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    corpus = load_corpus(args.directory)
    print(
        f"{len(corpus.segments)} transcript segments "
        f"({corpus.segments[0].start:.0f}-{corpus.segments[-1].end:.0f} s), "
        f"{corpus.frames} frames, {corpus.sightings} sightings -> "
        f"{len(corpus.messages)} chat messages from "
        f"{len({m.user for m in corpus.messages})} users"
    )


if __name__ == "__main__":
    main()
