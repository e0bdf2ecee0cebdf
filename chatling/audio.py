"""Decode any audio or video file into 16 kHz mono chunks, streamed.

Uses the same decoder as faster-whisper (PyAV with FFmpeg's resampler) but
yields fixed-size chunks instead of one array, so a four-hour VOD replays in
constant memory. A file FFmpeg cannot read becomes an ``AudioError`` naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from pathlib import Path

import numpy as np

from chatling.core.errors import AudioError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000


def iter_audio_chunks(path: str | Path, chunk_s: float = 1.0) -> Generator[np.ndarray, None, None]:
    """Yield float32 mono chunks of ``chunk_s`` seconds (the last may be shorter)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise AudioError(path, None, "no such audio or video file")
    chunk_len = max(1, int(chunk_s * SAMPLE_RATE))
    pending: list[np.ndarray] = []
    pending_len = 0
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    decoded_any = False
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError(path, None, "the file has no audio stream")
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1).astype(np.float32) / 32768.0
                    decoded_any = True
                    pending.append(samples)
                    pending_len += samples.size
                    while pending_len >= chunk_len:
                        joined = np.concatenate(pending)
                        yield joined[:chunk_len]
                        rest = joined[chunk_len:]
                        pending, pending_len = ([rest] if rest.size else []), rest.size
            for out in resampler.resample(None):
                pending.append(out.to_ndarray().reshape(-1).astype(np.float32) / 32768.0)
    except av.error.FFmpegError as exc:
        raise AudioError(path, None, f"cannot decode audio: {exc}") from None
    if not decoded_any:
        raise AudioError(path, None, "no audio could be decoded (empty or corrupt file)")
    if pending:
        tail = np.concatenate(pending)
        if tail.size:
            yield tail


def load_audio(path: str | Path) -> np.ndarray:
    """The whole file as one 16 kHz float32 array (for tests and short clips)."""
    chunks = list(iter_audio_chunks(path, chunk_s=30.0))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def probe_audio(path: str | Path) -> float:
    """Check that the file decodes (first chunk); return its duration if known.

    Called before anything slow starts, so a corrupt file fails in a second.
    """
    import av

    path = Path(path)
    chunks = iter_audio_chunks(path, chunk_s=0.5)
    try:
        next(chunks)
    except StopIteration:
        raise AudioError(path, None, "no audio could be decoded (empty file)") from None
    finally:
        chunks.close()  # type: ignore[attr-defined]
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return float(container.duration or 0) / 1_000_000
    except av.error.FFmpegError:
        return 0.0
