"""A private PulseAudio daemon with one null sink: a sound card for headless machines.

Tests, benchmarks and ``.ci/run`` need real stream audio without speakers or a
desktop session. ``PulseServer`` starts ``pulseaudio`` in the foreground in a
temporary runtime directory, with anonymous access on its own socket and a null
sink (``stream_sink``) whose monitor source records whatever is played into it;
``play`` plays a file into that sink with ``paplay``. The daemon is stopped by
its PID, never by name, so a user's own PulseAudio is never touched::

    with PulseServer() as env:          # PULSE_SERVER now points at the daemon
        play("speech.flac")             # what loopback capture of stream_sink hears

``stop()`` and ``start()`` on a running ``PulseServer`` restart it on the same
socket, and ``suspend_sink()`` silences the sink's monitor (tests of audio loss
and recovery). Needs Debian's ``pulseaudio`` and ``pulseaudio-utils``
(``paplay``, ``pactl``).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import wave
from pathlib import Path
from types import TracebackType

import numpy as np

from chatling.audio import SAMPLE_RATE, load_audio
from chatling.core.errors import ChatlingError

log = logging.getLogger(__name__)

DEFAULT_SINK = "stream_sink"


class PulseServerError(ChatlingError):
    """The private PulseAudio daemon could not be started, or a file could not be played."""


def pulse_missing() -> str | None:
    """Why a private daemon cannot run here (for ``pytest.skip``), or ``None`` if it can."""
    missing = [tool for tool in ("pulseaudio", "paplay", "pactl") if shutil.which(tool) is None]
    if missing:
        return (
            f"{', '.join(missing)} not installed: "
            "apt-get install pulseaudio pulseaudio-utils libpulse0"
        )
    return None


class PulseServer:
    """A foreground ``pulseaudio`` with a null sink, for as long as the ``with`` block runs.

    Entering sets ``PULSE_SERVER`` in this process (so children, and the loopback
    recorder, use the private daemon) and returns a copy of the environment for
    children; leaving stops the daemon and restores ``PULSE_SERVER``.
    """

    def __init__(
        self, sink: str = DEFAULT_SINK, start_timeout_s: float = 10.0, export: bool = True
    ) -> None:
        self.sink = sink
        self.start_timeout_s = start_timeout_s
        self.export = export
        self.runtime_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._saved_env: str | None = None

    @property
    def socket_path(self) -> Path:
        if self.runtime_dir is None:
            raise PulseServerError("PulseServer: not started (use `with PulseServer() as env:`)")
        return self.runtime_dir / "native"

    @property
    def address(self) -> str:
        """The value of ``PULSE_SERVER`` that reaches this daemon."""
        return f"unix:{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.poll() is None else None

    def env(self) -> dict[str, str]:
        """The environment for a child process that should use this daemon."""
        return {**os.environ, "PULSE_SERVER": self.address}

    def __enter__(self) -> dict[str, str]:
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="chatling-pulse-"))
        try:
            self.start()
        except BaseException:
            self._remove_runtime_dir()
            raise
        if self.export:
            self._saved_env = os.environ.get("PULSE_SERVER")
            os.environ["PULSE_SERVER"] = self.address
        return self.env()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            if self.export:
                if self._saved_env is None:
                    os.environ.pop("PULSE_SERVER", None)
                else:
                    os.environ["PULSE_SERVER"] = self._saved_env
            self._remove_runtime_dir()

    def start(self) -> None:
        """Start the daemon (again, on the same socket) and wait until it accepts clients."""
        if self.pid is not None:
            return
        reason = pulse_missing()
        if reason:
            raise PulseServerError(f"cannot start a private PulseAudio daemon: {reason}")
        rt = self.socket_path.parent
        self.socket_path.unlink(missing_ok=True)
        command = [
            "pulseaudio",
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disable-shm=yes",
            f"--load=module-native-protocol-unix auth-anonymous=1 socket={self.socket_path}",
            f"--load=module-null-sink sink_name={self.sink}",
            "--load=module-always-sink",
        ]
        daemon_env = {**os.environ, "XDG_RUNTIME_DIR": str(rt), "HOME": str(rt)}
        daemon_env.pop("PULSE_SERVER", None)
        with open(rt / "pa.log", "ab") as log_file:
            self._process = subprocess.Popen(
                command,
                env=daemon_env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while not self._accepts_clients():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise PulseServerError(
                    f"private PulseAudio daemon in {rt} did not start; its log ends: "
                    f"{self.log_tail()!r}"
                )
            time.sleep(0.05)
        log.info("private PulseAudio daemon pid %d at %s", self._process.pid, self.address)

    def stop(self) -> None:
        """Stop the daemon by its PID (TERM, then KILL after 5 s); keep the runtime directory."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.info("private PulseAudio daemon pid %d stopped", process.pid)

    def suspend_sink(self, suspended: bool = True) -> None:
        """Suspend the null sink (its monitor then delivers nothing) or wake it again."""
        result = subprocess.run(
            ["pactl", "suspend-sink", self.sink, "1" if suspended else "0"],
            env=self.env(),
            capture_output=True,
            timeout=10,
            check=False,
        )
        if result.returncode != 0:
            raise PulseServerError(
                f"pactl could not suspend {self.sink}: {result.stderr.decode(errors='replace')}"
            )

    def log_tail(self, chars: int = 400) -> str:
        if self.runtime_dir is None or not (self.runtime_dir / "pa.log").exists():
            return ""
        return (self.runtime_dir / "pa.log").read_text(errors="replace")[-chars:]

    def _accepts_clients(self) -> bool:
        if not self.socket_path.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.socket_path))
            except OSError:
                return False
        return True

    def _remove_runtime_dir(self) -> None:
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            self.runtime_dir = None


def write_wav(samples: np.ndarray, path: str | Path, rate: int = SAMPLE_RATE) -> Path:
    """Write float mono samples in [-1, 1] as a 16-bit PCM WAV file."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    return Path(path)


def play(
    path: str | Path,
    sink: str = DEFAULT_SINK,
    env: dict[str, str] | None = None,
    timeout_s: float = 300.0,
) -> None:
    """Play an audio file into ``sink`` and return when it has been played (blocks).

    ``paplay`` plays WAV files in real time but not FLAC (it returned after 2 s
    of an 11 s FLAC here), so anything else is decoded to a temporary WAV first.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="chatling-play-") as tmp:
        if path.suffix.lower() != ".wav":
            path = write_wav(load_audio(path), Path(tmp) / (path.stem + ".wav"))
        result = subprocess.run(
            ["paplay", f"--device={sink}", str(path)],
            env=env,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    if result.returncode != 0:
        raise PulseServerError(
            f"paplay could not play {path} into {sink}: "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
