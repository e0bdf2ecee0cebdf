"""Live stream audio: record what the machine plays (loopback) and transcribe it.

``capture_loopback`` records the loopback of an output device (by default the
default speaker's) at 16 kHz mono in blocks of ``block_s``, gathers the blocks
into chunks of ``chunk_s`` for the streaming transcriber and puts the
utterances it commits on the inbox, with stream times.

Two tasks share a bounded backlog. The recorder task runs the device in a
child process (``chatling.sources.loopback_recorder``, the device side, says why a
process and not a thread) and reads its blocks as they come; the transcribe
task feeds them to the transcriber, whose model runs in a worker thread. When
transcription falls more than ``max_backlog_s`` behind, the oldest blocks are
dropped (counted and logged), never the newest. ``list_devices`` and
``device_lines`` (``chatling audio devices``) are re-exported from there.

A device that disappears, fails or stops delivering (no block for
``stall_s``) is reopened with capped exponential backoff while the bot keeps
chatting from chat alone: one WARNING when the audio is lost, one INFO when it
is back, retries at DEBUG. Block times are counted in samples from the first
block of each opening, so utterance times stay honest across a gap: the
transcriber commits what it heard before the gap and restarts where the audio
resumes. Cancelling the task kills the recorder at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from chatling.audio import SAMPLE_RATE
from chatling.core.clock import StreamClock
from chatling.core.events import ChatMessage, Utterance
from chatling.sources.loopback_recorder import (
    AudioDevice,
    AudioDeviceError,
    device_lines,
    list_devices,
    recorder_command,
    recorder_env,
)

if TYPE_CHECKING:
    from chatling.transcribe import StreamingTranscriber

log = logging.getLogger(__name__)

Inbox = asyncio.Queue[ChatMessage | Utterance]

__all__ = [
    "AudioDevice",
    "AudioDeviceError",
    "CaptureOptions",
    "CaptureStats",
    "capture_loopback",
    "device_lines",
    "list_devices",
    "reopen_delay",
]

_GAP_TOLERANCE_S = 0.25
"""A block starting this far from where the previous one ended follows a gap."""


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """How loopback capture waits, retries and sheds load."""

    stall_s: float = 5.0
    """No block for this long while audio flowed: the device is lost."""
    open_timeout_s: float = 20.0
    """Longest wait for an opening's first block (PulseAudio's null sink takes 2 s)."""
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    max_backlog_s: float = 30.0
    """Drop the oldest audio when transcription is this far behind."""


@dataclass(slots=True)
class CaptureStats:
    """What capture has done so far, for status lines and tests."""

    device: str | None = None
    """Name of the device last opened."""
    live: bool = False
    """Audio is flowing now."""
    attempts: int = 0
    """Recorder processes started, successful or not."""
    openings: int = 0
    """Openings that delivered audio."""
    losses: int = 0
    """Times the audio stopped after it had flowed."""
    blocks: int = 0
    dropped_blocks: int = 0
    utterances: int = 0
    transcribed_to: float = 0.0
    """Stream time up to which audio has been transcribed (its lag: ``clock.now()`` minus it)."""
    changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)
    """Set on every change but ``blocks`` (for status displays and tests to wait on)."""


def reopen_delay(failures: int, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Seconds to wait before the next opening after ``failures`` failed ones in a row."""
    return min(cap_s, base_s * 2 ** min(failures, 30))


@dataclass(frozen=True, slots=True)
class _Block:
    start: float
    """Stream time (s) of the first sample."""
    samples: np.ndarray


_GAP = "gap"
"""Backlog marker: the audio stopped here (the device was lost)."""


class _Backlog:
    """Recorded blocks waiting for the transcriber; drops the oldest blocks when full."""

    def __init__(self, max_blocks: int, stats: CaptureStats) -> None:
        self._items: collections.deque[_Block | str] = collections.deque()
        self._blocks = 0
        self._max_blocks = max(2, max_blocks)
        self._ready = asyncio.Event()
        self._closed = False
        self._stats = stats
        self._dropping = 0

    def put(self, item: _Block | str) -> None:
        if isinstance(item, _Block):
            self._stats.blocks += 1
            if self._blocks >= self._max_blocks:
                self._drop_oldest(item.samples.size)
            self._blocks += 1
        self._items.append(item)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self) -> _Block | str | None:
        """The oldest item; ``None`` once closed and empty."""
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, _Block):
            self._blocks -= 1
            if self._dropping and self._blocks <= self._max_blocks // 2:
                log.info("transcription caught up; %d blocks of audio dropped", self._dropping)
                self._dropping = 0
        return item

    def _drop_oldest(self, block_frames: int) -> None:
        for i, old in enumerate(self._items):
            if isinstance(old, _Block):
                del self._items[i]
                break
        self._blocks -= 1
        self._stats.dropped_blocks += 1
        if not self._dropping:
            log.warning(
                "transcription is %.0f s behind the stream audio: dropping the oldest audio",
                self._blocks * block_frames / SAMPLE_RATE,
            )
        self._dropping += 1


class _Feeder:
    """Gathers blocks into chunks for the transcriber; restarts it after a gap."""

    def __init__(
        self, transcriber: StreamingTranscriber, inbox: Inbox, chunk_s: float, stats: CaptureStats
    ) -> None:
        self._transcriber = transcriber
        self._inbox = inbox
        self._chunk = max(1, int(chunk_s * SAMPLE_RATE))
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._stats = stats

    async def add(self, block: _Block) -> None:
        expected = self._transcriber.stream_time + self._pending_len / SAMPLE_RATE
        if abs(block.start - expected) > _GAP_TOLERANCE_S:
            log.debug(
                "transcriber restarts at %.2f s (audio before it ended at %.2f s)",
                block.start,
                expected,
            )
            await self.end_of_audio()
            _restart(self._transcriber, block.start)
        self._pending.append(block.samples)
        self._pending_len += block.samples.size
        if self._pending_len >= self._chunk:
            await self._push()

    async def end_of_audio(self) -> None:
        """The audio stopped: commit the speech heard before the gap."""
        await self._push()
        await self._post(await self._transcriber.aflush())

    async def _push(self) -> None:
        if not self._pending:
            return
        chunk = np.concatenate(self._pending)
        self._pending, self._pending_len = [], 0
        await self._post(await self._transcriber.apush(chunk))

    async def _post(self, utterances: list[Utterance]) -> None:
        for utterance in utterances:
            self._stats.utterances += 1
            await self._inbox.put(utterance)
        self._stats.transcribed_to = self._transcriber.stream_time
        self._stats.changed.set()


def _restart(transcriber: StreamingTranscriber, start: float) -> None:
    """Empty the transcriber and make its next sample's stream time ``start``."""
    restart = getattr(transcriber, "restart", None)
    if restart is not None:
        restart(start)
        return
    # The same, until StreamingTranscriber.restart(start_offset) exists (asked of the lead).
    transcriber._buffer = np.zeros(0, dtype=np.float32)
    transcriber._buffer_start = start


class _Recorder:
    """Opens the device in a recorder process, reads its blocks, reopens it when lost."""

    def __init__(
        self,
        device: str | None,
        backlog: _Backlog,
        clock: StreamClock,
        block_frames: int,
        options: CaptureOptions,
        stats: CaptureStats,
    ) -> None:
        self._device = device
        self._backlog = backlog
        self._clock = clock
        self._block_frames = block_frames
        self._options = options
        self._stats = stats
        self._lost_since: float | None = None

    async def run(self) -> None:
        """Open, read, and reopen with backoff, until cancelled."""
        failures = 0
        wanted = self._device or "the default speaker's loopback"
        while True:
            reason = await self._session()
            if self._stats.live:
                failures = 0
                self._stats.live = False
                self._stats.losses += 1
                self._stats.changed.set()
                self._backlog.put(_GAP)
            if self._lost_since is None:
                self._lost_since = time.monotonic()
                log.warning(
                    "audio capture from %s %s (%s); retrying, the bot chats from chat alone",
                    wanted,
                    "lost" if self._stats.openings else "cannot start",
                    reason,
                )
            opts = self._options
            delay = reopen_delay(failures, opts.backoff_base_s, opts.backoff_cap_s)
            log.debug("audio capture: %s; next try in %.1f s", reason, delay)
            failures += 1
            await asyncio.sleep(delay)

    async def _session(self) -> str:
        """One recorder process, until it fails or stalls; returns why it ended."""
        args = ["record", "--block", str(self._block_frames)]
        args += ["--device", self._device] if self._device else []
        self._stats.attempts += 1
        self._stats.changed.set()
        proc = await asyncio.create_subprocess_exec(
            *recorder_command(*args),
            env=recorder_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stderr_tail: collections.deque[str] = collections.deque(maxlen=3)
        drain = asyncio.create_task(_drain_stderr(proc, stderr_tail))
        try:
            return await self._read(proc)
        except TimeoutError:
            waited = self._options.stall_s if self._stats.live else self._options.open_timeout_s
            return f"no audio for {waited:.0f} s"
        except EOFError:
            # It is exiting on its own: let asyncio reap it (killing it now races the
            # reaper, and asyncio logs "Unknown child process" when it loses).
            await asyncio.wait({drain, asyncio.create_task(proc.wait())}, timeout=2.0)
            return stderr_tail[-1] if stderr_tail else f"the recorder exited ({proc.returncode})"
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
            await proc.wait()

    async def _read(self, proc: asyncio.subprocess.Process) -> str:
        assert proc.stdout is not None
        stdout = proc.stdout
        opts = self._options
        header = await asyncio.wait_for(stdout.readline(), opts.open_timeout_s)
        if not header:
            raise EOFError
        try:
            self._stats.device = str(json.loads(header)["name"])
        except (ValueError, KeyError, TypeError):
            return f"the recorder wrote {header[:80]!r} instead of its header"
        block_bytes = self._block_frames * 4
        anchor = 0.0
        frames = 0
        while True:
            timeout = opts.stall_s if self._stats.live else opts.open_timeout_s
            try:
                data = await asyncio.wait_for(stdout.readexactly(block_bytes), timeout)
            except asyncio.IncompleteReadError:
                raise EOFError from None
            if not self._stats.live:
                # This first block has just been recorded: its first sample is one block old.
                anchor = self._clock.now() - self._block_frames / SAMPLE_RATE
                self._went_live()
            samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
            self._backlog.put(_Block(start=anchor + frames / SAMPLE_RATE, samples=samples))
            frames += self._block_frames

    def _went_live(self) -> None:
        stats = self._stats
        stats.live = True
        stats.openings += 1
        stats.changed.set()
        if self._lost_since is not None:
            log.info(
                "audio capture is back: recording %s (%.1f s without audio)",
                stats.device,
                time.monotonic() - self._lost_since,
            )
            self._lost_since = None
        elif stats.openings == 1:
            log.info("audio capture started: recording %s", stats.device)


async def _drain_stderr(proc: asyncio.subprocess.Process, tail: collections.deque[str]) -> None:
    """Keep the recorder's last stderr lines (and never let its pipe fill up)."""
    assert proc.stderr is not None
    async for raw in proc.stderr:
        line = raw.decode(errors="replace").rstrip()
        if line:
            log.debug("recorder: %s", line)
            tail.append(line)


async def capture_loopback(
    device: str | None,
    transcriber: StreamingTranscriber,
    inbox: Inbox,
    *,
    stream_clock: StreamClock,
    block_s: float = 0.064,
    chunk_s: float = 1.0,
    options: CaptureOptions | None = None,
    stats: CaptureStats | None = None,
) -> None:
    """Record ``device`` (``None``: the default speaker's loopback) until cancelled.

    ``transcriber`` should start at ``stream_clock.now()``; it is restarted where
    the audio resumes after any gap, so utterance times are always stream times.
    Never returns on its own: a lost device is reopened with backoff for as
    long as the bot runs. Pass ``chunk_s=settings.audio.chunk_s``.
    """
    options = options or CaptureOptions()
    stats = stats if stats is not None else CaptureStats()
    block_frames = max(64, int(block_s * SAMPLE_RATE))
    backlog = _Backlog(int(options.max_backlog_s * SAMPLE_RATE / block_frames), stats)
    feeder = _Feeder(transcriber, inbox, chunk_s, stats)
    recorder = asyncio.create_task(
        _Recorder(device, backlog, stream_clock, block_frames, options, stats).run()
    )
    recorder.add_done_callback(lambda _task: backlog.close())
    try:
        while (item := await backlog.get()) is not None:
            if isinstance(item, _Block):
                await feeder.add(item)
            else:
                await feeder.end_of_audio()
        recorder.result()  # the recorder only ends by raising: re-raise its error here
    finally:
        recorder.cancel()
        await asyncio.gather(recorder, return_exceptions=True)
        stats.live = False
