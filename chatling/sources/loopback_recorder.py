"""The device side of loopback capture: list devices, and record one in a child process.

``chatling.sources.loopback`` starts ``recorder_command("record", ...)`` once per
opening of the device rather than calling soundcard in the bot's own process.
soundcard 0.4.6 opens one PulseAudio connection at import time and never
reopens it; after the server restarts, asking that dead connection for devices
aborts the whole process inside libpulse (seen here: ``Assertion 'o' failed at
pulse/operation.c``). A fresh process per opening gets a fresh connection, a
crash ends only the recorder, and the bot can always stop it at once by killing
it, even while a dead device blocks ``record()``. ``list_devices`` asks a child
too, so the bot's process never loads libpulse.

Protocol: ``record`` writes one JSON line (``{"id": ..., "name": ...}``) once
the device is open, then raw little-endian float32 mono samples at 16 kHz in
blocks of ``--block`` frames, until killed. ``list`` writes one JSON line per
recordable device. Errors end the process with one line on stderr.

Run by hand::

    python -m chatling.sources.loopback_recorder list
    python -m chatling.sources.loopback_recorder record --device stream_sink.monitor > raw.f32
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chatling.audio import SAMPLE_RATE
from chatling.core.errors import AudioDeviceError

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class AudioDevice:
    """One device loopback capture can record (``chatling audio devices``)."""

    id: str
    """What ``CHATLING_AUDIO__DEVICE`` takes."""
    name: str
    is_loopback: bool
    """Records what a speaker plays (a monitor source), not a microphone."""
    is_default: bool = False
    """Recorded when ``CHATLING_AUDIO__DEVICE`` is unset (the default speaker's loopback)."""


def recorder_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "chatling.sources.loopback_recorder", *args]


def recorder_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    root = str(_PACKAGE_ROOT)
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root}


def list_devices(timeout_s: float = 20.0) -> list[AudioDevice]:
    """Every device loopback capture can record, loopbacks first (blocks; for the CLI)."""
    try:
        result = subprocess.run(
            recorder_command("list"),
            env=recorder_env(),
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AudioDeviceError(
            f"listing audio devices took over {timeout_s:.0f} s: the audio server does not answer"
        ) from None
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        raise AudioDeviceError(
            f"cannot list audio devices: {lines[-1] if lines else 'the recorder failed'}; "
            "start PulseAudio (or PipeWire's pulse server), or point PULSE_SERVER at one"
        )
    devices = [AudioDevice(**json.loads(line)) for line in result.stdout.splitlines() if line]
    return sorted(devices, key=lambda d: (not d.is_loopback, d.id))


def device_lines(devices: list[AudioDevice]) -> list[str]:
    """Printable lines for ``chatling audio devices``: default mark, id, kind, name."""
    if not devices:
        return ["no audio devices found"]
    width = max(len(d.id) for d in devices)
    return [
        f"{'*' if d.is_default else ' '} {d.id:<{width}}  "
        f"{'loopback  ' if d.is_loopback else 'microphone'}  {d.name}"
        for d in devices
    ] + ["* recorded when CHATLING_AUDIO__DEVICE is unset"]


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the bot dies, so a recorder never outlives it."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _soundcard() -> Any:
    try:
        import soundcard
    except (AssertionError, RuntimeError, OSError):
        # soundcard connects at import; without a server it fails with a bare assertion.
        raise AudioDeviceError("soundcard cannot connect to an audio server") from None
    return soundcard


def _default_loopback(sc: Any) -> Any:
    """The loopback of the default speaker (PulseAudio names it ``<sink>.monitor``)."""
    speaker = sc.default_speaker()
    ids = {mic.id for mic in sc.all_microphones(include_loopback=True)}
    monitor = f"{speaker.id}.monitor"
    return sc.get_microphone(id=monitor if monitor in ids else speaker.name, include_loopback=True)


def list_command() -> int:
    sc = _soundcard()
    default = _default_loopback(sc).id
    for mic in sc.all_microphones(include_loopback=True):
        device = AudioDevice(str(mic.id), mic.name, bool(mic.isloopback), mic.id == default)
        print(json.dumps(asdict(device)), flush=True)
    return 0


def record_command(device: str | None, block_frames: int) -> int:
    sc = _soundcard()
    try:
        mic = sc.get_microphone(id=device, include_loopback=True) if device else None
    except IndexError:
        raise AudioDeviceError(
            f"no audio device {device!r}; `chatling audio devices` lists them"
        ) from None
    mic = mic or _default_loopback(sc)
    out = sys.stdout.buffer
    with mic.recorder(samplerate=SAMPLE_RATE, channels=1, blocksize=block_frames) as rec:
        out.write((json.dumps({"id": str(mic.id), "name": mic.name}) + "\n").encode())
        out.flush()
        while True:
            data = rec.record(numframes=block_frames)
            out.write(np.ascontiguousarray(data[:, 0], dtype="<f4").tobytes())
            out.flush()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatling.sources.loopback_recorder")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the recordable devices as JSON lines")
    record = sub.add_parser("record", help="write 16 kHz float32 mono blocks to stdout")
    record.add_argument("--device", default=None, help="device id or name (default: loopback)")
    record.add_argument("--block", type=int, default=1024, help="frames per block")
    args = parser.parse_args(argv)
    _die_with_parent()
    try:
        return list_command() if args.command == "list" else record_command(args.device, args.block)
    except BrokenPipeError:
        return 0
    except AudioDeviceError as exc:
        print(f"loopback recorder: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # soundcard raises many types; the bot gets one line
        print(f"loopback recorder: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
