"""The retrain's child processes: the trainer at low priority, and the memory a step takes.

Training runs in its own process (``python -m chatling.cli.train``) so an
out-of-memory kill or a crash takes only the trainer down, never the nightly
job that records the outcome (nor the bot, when the scheduler started the job).
``run_child`` gives it ``nice``, a thread cap and a log file, and stops it when
the job is stopped; ``PeakSampler`` measures what a step cost in memory, this
process and its children together, for the run's summary.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from chatling.core.errors import ModelError
from chatling.core.paths import PROJECT_ROOT

if TYPE_CHECKING:
    from chatling.learn.config import NightlyConfig

log = logging.getLogger(__name__)


class PeakSampler:
    """Peak RSS of this process plus its children, sampled every ``interval_s``."""

    def __init__(self, interval_s: float = 0.2) -> None:
        import psutil

        self._me = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak_bytes = 0
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def _sample(self) -> None:
        import psutil

        total = 0
        try:
            procs = [self._me, *self._me.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        self.peak_bytes = max(self.peak_bytes, total)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> PeakSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def run_child(cmd: list[str], log_path: Path, nice: int, threads: int) -> None:
    """Run ``cmd`` at low priority, output to ``log_path``; stop it if we are stopped."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))

    def lower_priority() -> None:
        os.nice(max(0, nice))

    log.info("running: %s (log: %s)", " ".join(cmd), log_path)
    with log_path.open("ab") as out:
        child = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=PROJECT_ROOT,
            preexec_fn=lower_priority,  # before exec: only os.nice runs in the child
        )
        try:
            code = child.wait()
        except BaseException:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        raise ModelError(f"training failed ({how}); last lines of {log_path}: " + " | ".join(tail))


def train_candidate(config: NightlyConfig, data: Path, out: Path, log_path: Path) -> None:
    """Train the run's SFT adapter on ``data`` into ``out`` (``chatling.cli.train``, a child)."""
    cmd = [
        sys.executable, "-m", "chatling.cli.train",
        "--data", str(data), "--out", str(out),
        "--preset", config.preset, "--split", "time", "--test-fraction", str(config.test_fraction),
        "--seed", str(config.seed),
    ]  # fmt: skip
    if config.base_model:
        cmd += ["--base", config.base_model]
    if config.max_steps:
        cmd += ["--steps", str(config.max_steps)]
    run_child(cmd, log_path, config.nice, config.threads)


__all__ = ["PeakSampler", "run_child", "train_candidate"]
