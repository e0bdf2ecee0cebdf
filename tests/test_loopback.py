"""Loopback capture end to end: a real PulseAudio daemon, soundcard and faster-whisper.

Each test plays real speech (``../shared/data/speech``) with ``paplay`` into
the null sink of a private PulseAudio daemon (``devtools.pulse.PulseServer``) and
checks what ``capture_loopback`` puts on the inbox: the words (word error rate
under 15%) and their stream times; that capture survives the daemon being
stopped and restarted and the sink going silent (suspended), warning once per
loss; that a missing device is retried. Skips with the reason when
``pulseaudio``, ``paplay`` or ``pactl`` is missing (``.ci/run`` installs them).
Nothing is mocked.

The latencies from the end of each played clip to its utterance on the inbox
are printed (``pytest -s``), never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import os
import statistics
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from chatling.core.clock import StreamClock
from chatling.core.events import Utterance
from chatling.sources.loopback import (
    CaptureOptions,
    CaptureStats,
    _Backlog,
    _Block,
    capture_loopback,
    device_lines,
    list_devices,
    reopen_delay,
)
from chatling.transcribe import StreamingTranscriber, TranscriberOptions
from devtools.pulse import PulseServer, play, pulse_missing
from tests.conftest import SPEECH, require_shared
from tests.test_transcribe import normalise, word_error_rate

HANG_GUARD_S = 240.0
"""Only against hangs: a loaded 2-core machine may transcribe slowly."""
LOGGER = "chatling.sources.loopback"
CLIP_A, CLIP_B = "ljspeech/LJ001-0004.wav", "ljspeech/LJ001-0003.wav"
"""Played before and after the daemon restart."""


def _references() -> dict[str, str]:
    speech = require_shared(SPEECH)
    refs = {}
    with open(speech / "references.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["file"] == "jfk.flac":
                refs["jfk.flac"] = row["reference_text"]
    with open(speech / "ljspeech" / "transcripts.psv", encoding="utf-8") as f:
        for line in f:
            name, _, text = line.rstrip("\n").partition("|")
            refs[f"ljspeech/{name}"] = text
    return refs


@pytest.fixture(scope="module")
def pulse() -> Iterator[PulseServer]:
    reason = pulse_missing()
    if reason:
        pytest.skip(reason)
    server = PulseServer()
    with server:
        yield server


@pytest.fixture
def running(pulse: PulseServer) -> Iterator[PulseServer]:
    """The daemon, started again after a test that stopped it."""
    pulse.start()
    yield pulse
    pulse.start()


def recorder_pids() -> list[int]:
    """Recorder processes that are children of this test process."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
            if ppid == os.getpid() and b"loopback_recorder" in cmdline:
                pids.append(int(stat.parent.name))
    return pids


@dataclass
class Capture:
    """A running ``capture_loopback`` and what reached its inbox, with arrival times."""

    clock: StreamClock
    stats: CaptureStats
    heard: list[tuple[float, Utterance]] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def guard(self, what: str) -> AsyncIterator[None]:
        """Fail with what was awaited if it takes past the hang guard."""
        try:
            async with asyncio.timeout(HANG_GUARD_S):
                yield
        except TimeoutError:
            heard = [u.text for _t, u in self.heard]
            pytest.fail(f"no {what} within {HANG_GUARD_S:.0f} s; {self.stats}; heard {heard}")

    async def until(self, predicate, what: str) -> None:
        """Wait until ``predicate()`` holds for capture's stats."""
        async with self.guard(what):
            while True:
                self.stats.changed.clear()
                if predicate():
                    return
                await self.stats.changed.wait()


@contextlib.asynccontextmanager
async def capturing(
    whisper_model, device: str | None, options: CaptureOptions | None = None
) -> AsyncIterator[Capture]:
    clock = StreamClock()
    capture = Capture(clock=clock, stats=CaptureStats())
    inbox: asyncio.Queue = asyncio.Queue()
    transcriber = StreamingTranscriber(
        whisper_model, TranscriberOptions(), start_offset=clock.now()
    )

    async def collect() -> None:
        while True:
            utterance = await inbox.get()
            capture.heard.append((clock.now(), utterance))

    task = asyncio.create_task(
        capture_loopback(
            device, transcriber, inbox, stream_clock=clock, options=options, stats=capture.stats
        )
    )
    collector = asyncio.create_task(collect())
    try:
        yield capture
    finally:
        task.cancel()
        async with asyncio.timeout(10):  # cancelling must not wait for the device
            await asyncio.gather(task, return_exceptions=True)
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        while not inbox.empty():
            capture.heard.append((clock.now(), inbox.get_nowait()))
        assert task.cancelled(), f"capture ended on its own: {task.exception()!r}"
        assert recorder_pids() == [], "a recorder process outlived its capture"


async def play_clip(capture: Capture, name: str) -> tuple[float, float]:
    """Play one clip into the null sink; return its (start, end) in stream time."""
    start = capture.clock.now()
    await asyncio.to_thread(play, SPEECH / name)
    return start, capture.clock.now()


def test_reopen_delay_doubles_up_to_the_cap() -> None:
    assert [reopen_delay(n, 0.5, 4.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert reopen_delay(10_000, 0.5, 30.0) == 30.0


async def test_backlog_drops_the_oldest_blocks_and_says_so(caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    stats = CaptureStats()
    backlog = _Backlog(max_blocks=4, stats=stats)
    for i in range(10):
        backlog.put(_Block(start=float(i), samples=np.zeros(16, dtype=np.float32)))
    backlog.close()
    starts = []
    while (item := await backlog.get()) is not None:
        starts.append(item.start)
    assert starts == [6.0, 7.0, 8.0, 9.0]
    assert stats.dropped_blocks == 6
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dropping the oldest audio" in warnings[0].message
    assert any("caught up; 6 blocks" in r.message for r in caplog.records)


def test_list_devices_shows_the_null_sink_monitor(running: PulseServer) -> None:
    devices = {d.id: d for d in list_devices()}
    monitor = devices.get(f"{running.sink}.monitor")
    assert monitor is not None, f"no monitor of {running.sink} in {sorted(devices)}"
    assert monitor.is_loopback and monitor.is_default
    assert any(f"{running.sink}.monitor" in line for line in device_lines(list(devices.values())))


async def test_played_speech_comes_back_as_utterances_with_stream_times(
    running: PulseServer, whisper_model
) -> None:
    refs = _references()
    clips = [
        "jfk.flac",
        "ljspeech/LJ001-0001.wav",
        "ljspeech/LJ001-0002.wav",
        "ljspeech/LJ001-0004.wav",
    ]
    windows = []
    async with capturing(whisper_model, device=None) as capture:  # the default loopback
        await capture.until(lambda: capture.stats.live, "audio flowing")
        for clip in clips:
            windows.append(await play_clip(capture, clip))
            await asyncio.sleep(1.0)  # a pause between sentences, as a streamer makes
        after_last = windows[-1][1] + 1.5
        await capture.until(lambda: capture.stats.transcribed_to >= after_last, "transcript")
    assert capture.stats.device == "Monitor of Null Output"
    assert capture.stats.losses == 0 and capture.stats.dropped_blocks == 0

    report, errors, words = [], 0.0, 0
    for clip, (start, end) in zip(clips, windows, strict=True):
        mine = [(t, u) for t, u in capture.heard if start - 0.6 <= u.start and u.end <= end + 0.6]
        assert mine, f"nothing heard of {clip} (played {start:.1f}-{end:.1f} s)"
        hypothesis = " ".join(u.text for _t, u in mine)
        n = len(normalise(refs[clip]))
        errors += word_error_rate(refs[clip], hypothesis) * n
        words += n
        arrival, last = mine[-1]
        report.append((clip, arrival - end, arrival - last.end, hypothesis))
    heard = [r[3] for r in report]
    assert errors / words < 0.15, f"WER {errors / words:.0%} over the clips; heard {heard}"
    stray = [
        u
        for _t, u in capture.heard
        if not any(s - 0.6 <= u.start and u.end <= e + 0.6 for s, e in windows)
    ]
    assert stray == [], f"utterances outside the played clips' stream times: {stray}"
    for clip, after_play, after_speech, _text in report:
        print(f"latency {clip}: {after_play:.2f} s after paplay returned, {after_speech:.2f} s")
    print(
        "latency p50 over clips: end of play -> inbox "
        f"{statistics.median(r[1] for r in report):.2f} s; end of speech -> inbox "
        f"{statistics.median(r[2] for r in report):.2f} s"
    )


async def test_capture_survives_a_daemon_restart(
    running: PulseServer, whisper_model, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    refs = _references()
    quick = CaptureOptions(backoff_base_s=0.2, backoff_cap_s=1.0)
    async with capturing(whisper_model, f"{running.sink}.monitor", quick) as capture:
        stats = capture.stats
        await capture.until(lambda: stats.live, "audio flowing")
        start_a, end_a = await play_clip(capture, CLIP_A)
        await asyncio.sleep(1.0)
        stopped_at = capture.clock.now()
        await asyncio.to_thread(running.stop)
        await capture.until(lambda: stats.losses == 1, "the loss noticed")
        attempts = stats.attempts
        await capture.until(lambda: stats.attempts >= attempts + 2, "two more failed tries")
        await asyncio.to_thread(running.start)
        await capture.until(lambda: stats.live, "audio back")
        back_at = capture.clock.now()
        start_b, end_b = await play_clip(capture, CLIP_B)
        await capture.until(lambda: stats.transcribed_to >= end_b + 1.5, "transcript of B")

    before = [u for _t, u in capture.heard if u.end <= stopped_at]
    after = [u for _t, u in capture.heard if u.start >= back_at - 0.6]
    assert len(before) + len(after) == len(capture.heard), "an utterance spans the outage"
    assert before and after, f"before the outage {before}, after it {after}"
    assert start_a - 0.6 <= before[0].start and before[-1].end <= end_a + 0.6
    assert start_b - 0.6 <= after[0].start and after[-1].end <= end_b + 0.6
    reference = f"{refs[CLIP_A]} {refs[CLIP_B]}"
    heard = " ".join(u.text for u in before + after)
    assert word_error_rate(reference, heard) < 0.15, heard

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and " lost (" in warnings[0], warnings
    ours = [r for r in caplog.records if r.name == LOGGER]
    backs = [r.getMessage() for r in ours if r.levelno == logging.INFO and "is back" in r.message]
    assert len(backs) == 1, backs
    assert stats.openings == 2 and stats.losses == 1


async def test_a_device_that_stops_delivering_is_reopened(
    running: PulseServer, whisper_model, caplog
) -> None:
    """A suspended sink's monitor delivers nothing: capture notices, retries, recovers."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    quick = CaptureOptions(stall_s=1.0, open_timeout_s=3.0, backoff_base_s=0.2, backoff_cap_s=1.0)
    async with capturing(whisper_model, None, quick) as capture:
        stats = capture.stats
        await capture.until(lambda: stats.live, "audio flowing")
        await asyncio.to_thread(running.suspend_sink, True)
        try:
            await capture.until(lambda: stats.losses == 1, "the stall noticed")
            attempts = stats.attempts
            # A reopened recorder hears nothing either; it is given up on (and killed).
            await capture.until(lambda: stats.attempts >= attempts + 2, "two more tries")
        finally:
            await asyncio.to_thread(running.suspend_sink, False)
        await capture.until(lambda: stats.live, "audio back")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "lost (no audio for 1 s)" in warnings[0], warnings
    assert any("is back" in r.getMessage() for r in caplog.records)


async def test_a_missing_device_warns_once_and_keeps_trying(
    running: PulseServer, whisper_model, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    quick = CaptureOptions(backoff_base_s=0.1, backoff_cap_s=0.2)
    async with capturing(whisper_model, "no_such_device", quick) as capture:
        await capture.until(lambda: capture.stats.attempts >= 3, "three tries")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "cannot start" in warnings[0] and "no audio device 'no_such_device'" in warnings[0]
    assert capture.stats.openings == 0 and capture.heard == []
