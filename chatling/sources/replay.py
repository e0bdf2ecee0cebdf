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
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    """Feed the file's audio to the transcriber at stream speed; return seconds fed.

    Decoding runs on one thread of its own (a long video must not stall the loop), and
    the decoder is closed on that thread too: a stop (Ctrl-C) cancels the wait for a chunk,
    not the decoding of it, and a generator cannot be closed while it runs ("generator
    already executing" ended a replay's stop with that error instead of its result).
    """
    chunks = iter_audio_chunks(path, chunk_s=chunk_s)
    decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatling-decode")
    loop = asyncio.get_running_loop()
    fed = 0.0
    try:
        while True:
            chunk = await loop.run_in_executor(decoder, _next_chunk, chunks)
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
        await _close_on(decoder, chunks)
    log.info("audio replay finished: %.1f s of audio", fed)
    return fed


async def _close_on(decoder: ThreadPoolExecutor, chunks: Generator[np.ndarray, None, None]) -> None:
    """Close ``chunks`` on the decoder's thread, after any chunk it is still decoding.

    Queued behind that chunk, so never while the generator runs. A second cancellation
    only stops the waiting: the close still runs on the thread (``shutdown(wait=False)``
    keeps queued work)."""
    closing = asyncio.get_running_loop().run_in_executor(decoder, chunks.close)
    decoder.shutdown(wait=False)
    await closing
