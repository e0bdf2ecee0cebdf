"""Replay a recorded stream: its chat log and its audio, on a ``StreamClock``.

The chat source posts each message when the clock reaches its offset. The
audio source decodes the file chunk by chunk, hands each chunk to the
streaming transcriber once the clock has reached the chunk's end (as live
audio would arrive), and posts the utterances it commits. At high speeds the
transcriber may fall behind the clock; it never skips audio.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from chatling.audio import SAMPLE_RATE, iter_audio_chunks
from chatling.core.clock import StreamClock
from chatling.core.events import ChatMessage, Utterance
from chatling.transcribe import StreamingTranscriber

log = logging.getLogger(__name__)

Inbox = asyncio.Queue[ChatMessage | Utterance]


async def replay_chat(
    messages: Sequence[ChatMessage], clock: StreamClock, inbox: Inbox, until: float | None = None
) -> int:
    """Put each message on the inbox at its offset; return how many were sent."""
    sent = 0
    for message in messages:
        if until is not None and message.offset > until:
            break
        await clock.sleep_until(message.offset)
        await inbox.put(message)
        sent += 1
    log.info("chat replay finished: %d messages", sent)
    return sent


def _next_chunk(chunks: Iterator[np.ndarray]) -> np.ndarray | None:
    return next(chunks, None)


async def replay_audio(
    path: str | Path,
    clock: StreamClock,
    transcriber: StreamingTranscriber,
    inbox: Inbox,
    chunk_s: float = 1.0,
    until: float | None = None,
) -> float:
    """Feed the file's audio to the transcriber at stream speed; return seconds fed."""
    chunks = iter_audio_chunks(path, chunk_s=chunk_s)
    fed = 0.0
    try:
        while True:
            # Decoding runs in a thread too: a long video must not stall the loop.
            chunk = await asyncio.to_thread(_next_chunk, chunks)
            if chunk is None:
                break
            fed += chunk.size / SAMPLE_RATE
            await clock.sleep_until(fed)
            for utterance in await transcriber.apush(chunk):
                await inbox.put(utterance)
            if until is not None and fed >= until:
                break
        for utterance in await transcriber.aflush():
            await inbox.put(utterance)
    finally:
        chunks.close()  # type: ignore[attr-defined]
    log.info("audio replay finished: %.1f s of audio", fed)
    return fed
