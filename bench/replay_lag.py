"""How soon after the streamer stops talking can the bot have a reply ready?

Replays the demo stream in real time through the whole pipeline (faster-whisper
and vLLM sharing the 2 cores, as live) with the policy set to reply whenever
it is idle, and measures, for each utterance, the stream time from its end in
the audio to the first reply ready whose prompt contains it; split into the
transcription lag (end of speech -> utterance committed) and the rest.
Baseline in the same run: the same pipeline with a naive transcriber that
cuts fixed 5-second windows instead of cutting on pauses with VAD. Caveat: the
baseline's "utterance end" is its window boundary, usually mid-sentence, so its
lag is counted from a moment that is not the end of speech; read it as what a
window transcriber adds per window, not as a like-for-like speech-end lag.
A second baseline: the VAD pipeline with the `chat` prompt form (persona +
instructions in the chat template, the default before the writing issue)
against the served `log` form, whose prompts and replies are shorter.

Run: ``.venv/bin/python bench/replay_lag.py [--until SECONDS]``
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PeakMemory, percentile, print_table, write_result
from chatling.app import ReplayRequest, replay
from chatling.audio import SAMPLE_RATE
from chatling.core.events import Utterance
from chatling.core.settings import Settings
from chatling.display import Display
from chatling.engine import VllmEngine
from chatling.transcribe import StreamingTranscriber, TranscriberOptions, load_whisper


class FixedWindowTranscriber(StreamingTranscriber):
    """Baseline: transcribe every ``window_s`` of audio, wherever the words fall."""

    window_s = 5.0

    def _commit(self, *, final: bool) -> list[Utterance]:
        window = int(self.window_s * SAMPLE_RATE)
        if self._buffer.size < window and not (final and self._buffer.size):
            return []
        end = min(window, self._buffer.size)
        utterance = self._transcribe(0, end)
        self._drop(end)
        return [utterance] if utterance else []


def first_reply_lags(stats) -> list[float]:
    """Per utterance end: the first reply ready that saw it, minus that end."""
    first: dict[float, float] = {}
    for end, ready in stats.seen_speech:
        first[end] = min(first.get(end, float("inf")), ready)
    return [ready - end for end, ready in sorted(first.items())]


async def run(until: float | None) -> list[dict]:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    settings.storage.db_path = "/tmp/chatling-bench-replay-lag.sqlite"
    for key, value in dict(
        global_cooldown_s=0.0, quiet_interval_s=0.0, quiet_jitter_s=0.0, rate_messages=1000
    ).items():
        setattr(settings.reply, key, value)
    whisper = load_whisper(settings.audio)
    options = TranscriberOptions.from_settings(settings.audio, hotwords=settings.reply.bot_name)
    rows = []
    async with VllmEngine.start(settings.model) as engine:
        for name, form, transcriber in [
            ("VAD streaming, log prompt (chatling)", "log", StreamingTranscriber(whisper, options)),
            ("VAD streaming, chat prompt (before)", "chat", StreamingTranscriber(whisper, options)),
            ("fixed 5 s windows (baseline)", "log", FixedWindowTranscriber(whisper, options)),
        ]:
            settings.reply.prompt_form = form  # type: ignore[assignment]
            Path(settings.storage.db_path).unlink(missing_ok=True)
            with PeakMemory() as mem:
                result = await replay(
                    settings,
                    ReplayRequest(speed=1.0, until_s=until),
                    Display(file=io.StringIO()),
                    engine=engine,
                    whisper_model=whisper,
                    transcriber=transcriber,
                )
            st = result.stats
            lags = first_reply_lags(st)
            rows.append(
                {
                    "pipeline": name,
                    "utterances": st.utterances_in,
                    "replies": len(st.latencies_s),
                    "speech_to_reply_p50_s": round(percentile(lags, 50), 2),
                    "speech_to_reply_p95_s": round(percentile(lags, 95), 2),
                    "transcription_lag_p50_s": round(percentile(st.transcription_lag_s, 50), 2),
                    "generation_p50_s": round(percentile(st.latencies_s, 50), 2),
                    "peak_rss_mib": round(mem.peak_bytes / 2**20),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--until", type=float, default=None, help="replay only this many seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    np.seterr(all="ignore")
    rows = asyncio.run(run(args.until))
    print_table(
        "end of speech -> reply ready, demo stream replayed in real time (stream seconds)",
        [
            "pipeline",
            "utterances",
            "replies",
            "p50",
            "p95",
            "transcribe p50",
            "generate p50",
            "peak MiB",
        ],
        [
            [
                r["pipeline"],
                r["utterances"],
                r["replies"],
                f"{r['speech_to_reply_p50_s']} s",
                f"{r['speech_to_reply_p95_s']} s",
                f"{r['transcription_lag_p50_s']} s",
                f"{r['generation_p50_s']} s",
                r["peak_rss_mib"],
            ]
            for r in rows
        ],
    )
    print(f"\nwritten {write_result('replay_lag', {'results': rows})}")


if __name__ == "__main__":
    main()
