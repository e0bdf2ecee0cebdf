"""Child process of the SIGKILL test: one ``chatling replay`` into a SQLite file.

Run: ``python tests/hardening/replay_child.py DB CHAT_LOG SPEED UNTIL_S``

Runs the real ``chatling.app.replay`` (store, pipeline, policy, filter, limiter,
chat-log reader, audio decoding of the demo stream) with two stand-ins that
keep a child quick to start: ``StubEngine`` for vLLM and a transcriber that
turns every 4 s of audio into one utterance. Each time a batch commits it
writes one JSON line to stdout (flushed at once): the stream id and the rows
committed so far. Every line is a promise the parent checks after killing this
process: those rows are in the file. ``chat`` + ``duplicates`` counts the chat
messages, in log order, whose row is in the file (written now, or by an
earlier run of the same log). stdout is the protocol, which is why this prints.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

import chatling.app
from chatling.app import ReplayRequest, replay
from chatling.audio import SAMPLE_RATE
from chatling.core.events import Utterance
from chatling.core.settings import Settings
from chatling.display import Display
from chatling.store import Store
from tests.hardening.common import StubEngine


class ReportingStore(Store):
    """A ``Store`` that reports every commit on stdout."""

    stream_id = 0

    async def start_stream(self, *args: object, **kwargs: object) -> int:
        self.stream_id = await super().start_stream(*args, **kwargs)  # type: ignore[arg-type]
        self._report()
        return self.stream_id

    async def _commit_next(self) -> None:
        await super()._commit_next()
        self._report()

    def _report(self) -> None:
        c = self.committed
        line = {
            "stream": self.stream_id,
            "chat": c.chat,
            "duplicates": c.duplicates,
            "utterances": c.utterances,
            "replies": c.replies,
        }
        print(json.dumps(line), flush=True)


class EveryFourSeconds:
    """Stands in for Whisper: one utterance per 4 s of audio, at its stream time."""

    def __init__(self) -> None:
        self.fed = 0.0
        self.next_cut = 4.0

    async def apush(self, samples: np.ndarray) -> list[Utterance]:
        self.fed += samples.size / SAMPLE_RATE
        out = []
        while self.fed >= self.next_cut:
            out.append(
                Utterance(self.next_cut - 3.5, self.next_cut, f"words up to {self.next_cut}")
            )
            self.next_cut += 4.0
        return out

    async def aflush(self) -> list[Utterance]:
        return []


async def main(db: Path, chat: Path, speed: float, until: float) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    settings.storage.db_path = str(db)
    settings.storage.flush_interval_s = 0.1
    settings.storage.max_batch = 200
    for key, value in dict(global_cooldown_s=2.0, quiet_interval_s=5.0, quiet_jitter_s=1.0).items():
        setattr(settings.reply, key, value)
    chatling.app.Store = ReportingStore  # type: ignore[misc]
    with open(os.devnull, "w", encoding="utf-8") as devnull:
        await replay(
            settings,
            ReplayRequest(audio=chatling.app.DEMO_AUDIO, chat=chat, speed=speed, until_s=until),
            Display(file=devnull),
            engine=StubEngine(),  # type: ignore[arg-type]
            whisper_model=object(),
            transcriber=EveryFourSeconds(),  # type: ignore[arg-type]
        )
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
