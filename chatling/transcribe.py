"""Streaming transcription: 16 kHz audio in, timed utterances out.

faster-whisper transcribes whole segments, not streams, so this module cuts
the stream into utterances with Silero VAD (bundled with faster-whisper): audio
accumulates until a pause of ``silence_commit_s`` follows speech, or speech
has run for ``max_utterance_s``; then that stretch is transcribed once and
committed as an ``Utterance`` with stream times. Committed text never changes,
so the rolling prompt and the store only ever see stable text.

``StreamingTranscriber.push`` blocks (it runs the model); async callers use
``await transcriber.apush(...)``, which runs it in a worker thread so the event
loop never stalls.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from chatling.audio import SAMPLE_RATE
from chatling.core.errors import ModelError
from chatling.core.events import Utterance
from chatling.core.paths import resolve_path
from chatling.core.settings import AudioSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TranscriberOptions:
    """How the stream is cut and decoded (from ``AudioSettings``)."""

    language: str | None = "en"
    beam_size: int = 1
    silence_commit_s: float = 0.5
    max_utterance_s: float = 12.0
    vad_threshold: float = 0.5
    speech_pad_s: float = 0.2
    min_speech_s: float = 0.25
    """Shorter stretches of 'speech' are clicks or noise; Whisper turns them into
    hallucinations such as "Thank you.", so they are never transcribed."""
    hotwords: str | None = None
    """Words Whisper should expect, such as the bot's name (which it otherwise
    hears as a common word: "Chatling" comes out as "Chaplin")."""

    @classmethod
    def from_settings(
        cls, settings: AudioSettings, hotwords: str | None = None
    ) -> TranscriberOptions:
        return cls(
            hotwords=hotwords,
            language=settings.language,
            beam_size=settings.beam_size,
            silence_commit_s=settings.silence_commit_s,
            max_utterance_s=settings.max_utterance_s,
        )


def load_whisper(settings: AudioSettings) -> Any:
    """Load the faster-whisper model named in settings (a CTranslate2 directory or an id)."""
    from faster_whisper import WhisperModel

    name = settings.whisper_model
    if resolve_path(name).exists():
        name = str(resolve_path(name))
    elif "/" in name:
        raise ModelError(
            f"whisper model path {name} does not exist; run `python -m chatling.models` or set "
            "CHATLING_AUDIO__WHISPER_MODEL"
        )
    try:
        return WhisperModel(
            name,
            device="auto",
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load whisper model {name}: {exc}") from exc


class StreamingTranscriber:
    """Cuts a 16 kHz stream into utterances and transcribes each once."""

    def __init__(self, model: Any, options: TranscriberOptions, start_offset: float = 0.0) -> None:
        self._model = model
        self._options = options
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = start_offset
        """Stream time (s) of the first sample in the buffer."""
        self._previous_text = ""
        """The last committed text, given to Whisper as context for the next cut."""

    @property
    def stream_time(self) -> float:
        """Stream time (s) just after the last sample pushed."""
        return self._buffer_start + self._buffer.size / SAMPLE_RATE

    def restart(self, start_offset: float) -> None:
        """Forget buffered audio after a gap in live audio; next sample at ``start_offset``."""
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = start_offset

    async def apush(self, samples: np.ndarray) -> list[Utterance]:
        """``push`` in a worker thread."""
        return await asyncio.to_thread(self.push, samples)

    async def aflush(self) -> list[Utterance]:
        """``flush`` in a worker thread."""
        return await asyncio.to_thread(self.flush)

    def push(self, samples: np.ndarray) -> list[Utterance]:
        """Add audio; return the utterances this audio completed (often none)."""
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float32, copy=False)])
        return self._commit(final=False)

    def flush(self) -> list[Utterance]:
        """End of stream: commit whatever speech is still buffered."""
        return self._commit(final=True)

    def _speech_spans(self) -> list[tuple[int, int]]:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        opts = self._options
        vad = VadOptions(
            threshold=opts.vad_threshold,
            min_silence_duration_ms=int(opts.silence_commit_s * 1000),
            speech_pad_ms=int(opts.speech_pad_s * 1000),
            min_speech_duration_ms=int(opts.min_speech_s * 1000),
        )
        spans = get_speech_timestamps(self._buffer, vad, sampling_rate=SAMPLE_RATE)
        return [(int(s["start"]), int(s["end"])) for s in spans]

    def _commit(self, *, final: bool) -> list[Utterance]:
        if self._buffer.size < SAMPLE_RATE // 4 and not final:
            return []
        spans = self._speech_spans() if self._buffer.size else []
        keep_tail = int(0.5 * SAMPLE_RATE)
        if not spans:
            # Silence: keep only a short tail so a word starting now keeps its onset.
            self._drop(max(0, self._buffer.size - keep_tail))
            return []
        # A span's end already carries ``speech_pad_s`` of padding; the pause is
        # counted from the end of the speech itself (0.2 s sooner a commit).
        pad = int(self._options.speech_pad_s * SAMPLE_RATE)
        silence_needed = int(self._options.silence_commit_s * SAMPLE_RATE)
        closed = [s for s in spans if s[1] - pad + silence_needed <= self._buffer.size]
        too_long = (self._buffer.size - spans[0][0]) >= self._options.max_utterance_s * SAMPLE_RATE
        if final:
            closed = spans
        elif not closed and too_long:
            closed = spans
        if not closed:
            return []
        start, end = closed[0][0], closed[-1][1]
        speech = sum(e - s for s, e in closed)
        if speech < self._options.min_speech_s * SAMPLE_RATE:
            self._drop(end)
            return []
        utterance = self._transcribe(start, end)
        self._drop(end)
        return [utterance] if utterance else []

    def _drop(self, samples: int) -> None:
        self._buffer = self._buffer[samples:]
        self._buffer_start += samples / SAMPLE_RATE

    def _transcribe(self, start: int, end: int) -> Utterance | None:
        audio = self._buffer[start:end]
        segments, _info = self._model.transcribe(
            audio,
            language=self._options.language,
            beam_size=self._options.beam_size,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
            initial_prompt=self._previous_text[-200:] or None,
            hotwords=self._options.hotwords,
        )
        # Whisper's own hallucination signals: likely silence, or low confidence.
        text = " ".join(
            seg.text.strip()
            for seg in segments
            if seg.no_speech_prob < 0.8 and seg.avg_logprob > -1.0 and seg.compression_ratio < 2.4
        ).strip()
        if not text:
            return None
        self._previous_text = text
        t0 = self._buffer_start + start / SAMPLE_RATE
        t1 = self._buffer_start + end / SAMPLE_RATE
        log.debug("utterance %.1f-%.1f: %s", t0, t1, text)
        return Utterance(start=round(t0, 3), end=round(t1, 3), text=text)
