"""Does the bot listen to the stream? Word overlap of posts with the moment's speech.

For every moment of a `chatling generate` file: does the posted line share a content
word (``chatling.topical.content_words``) with the transcript its prompt showed, against
the transcript of another moment of the same file at least ``--gap`` seconds away
(the control: chance overlap with stream talk in general)? The same for the real
messages of the moment, so the bot's figure reads beside chat's own. A bot that
listens shows a gap between "own moment" and "other moment", as real chat does.

Run: .venv/bin/python scripts/writing_listens.py FILE.jsonl [FILE.jsonl ...] [--gap 120]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chatling.topical import content_words
from chatling.training.eval.writing import read_moments

SPEECH_PREFIX = "The streamer is saying: "


def speech_of(prompt: str) -> set[str]:
    """Content words of the transcript line of a `log`-form prompt (empty when none)."""
    for line in prompt.splitlines():
        if line.startswith(SPEECH_PREFIX):
            return set(content_words(line[len(SPEECH_PREFIX) :]))
    return set()


def overlap_share(texts: list[str], speech: list[set[str]]) -> float:
    hits = [bool(set(content_words(t)) & s) for t, s in zip(texts, speech, strict=True)]
    return sum(hits) / len(hits) if hits else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--gap", type=float, default=120.0, help="control moment distance (s)")
    args = parser.parse_args()
    print("file | posts sharing a word with: own speech / other moment's | real chat: own / other")
    for path in args.files:
        rng = random.Random(0)
        moments = [m for m in read_moments(path) if speech_of(m.prompt)]
        posts, own, other, real, real_own, real_other = [], [], [], [], [], []
        for m in moments:
            far = [x for x in moments if abs(x.time - m.time) >= args.gap]
            if not far:
                continue
            control = speech_of(rng.choice(far).prompt)
            if m.chosen:
                posts.append(m.chosen)
                own.append(speech_of(m.prompt))
                other.append(control)
            for text in m.real:
                real.append(text)
                real_own.append(speech_of(m.prompt))
                real_other.append(control)
        print(
            f"{path.name} ({len(posts)} posts) | {overlap_share(posts, own):.1%} / "
            f"{overlap_share(posts, other):.1%} | {overlap_share(real, real_own):.1%} / "
            f"{overlap_share(real, real_other):.1%}"
        )


if __name__ == "__main__":
    main()
