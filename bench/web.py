"""Does the control room slow the bot? Reply latency and event-loop lag with pages open.

One process runs the live bot (``chatling.live.run_live``, its own vLLM engine,
web enabled on 127.0.0.1, audio off) against the fake Twitch
(devtools/fakes/twitch_server.py, in its own thread), which floods chat at
``--rate`` messages a second for the whole run; the policy replies whenever
idle (no cooldown or quiet interval, limits far above the traffic), so the
engine is never idle. The run alternates phases of ``--phase-s`` seconds:

- ``no pages``: nobody looks;
- ``pages open``: two separate headless Chromium processes (Debian's
  ``/usr/bin/chromium``; no Playwright, so nothing of the browsers runs in
  this process) show the overlay and the dashboard; the phase starts once
  the server counts both pages' event streams.

Measured per condition, over all its phases (``--rounds`` of each, baseline in
the same run): reply latency (``Reply.latency_s`` of every reply attempt, as
the pipeline logs it: prompt -> engine -> filter -> post) and event-loop lag
(a probe on the bot's loop: how late ``asyncio.sleep(0.05)`` wakes). The
questions of issue 15: p50 latency within 5% of no pages, loop-lag p99 under
20 ms more.

Run: ``.venv/bin/python bench/web.py [--phase-s 45] [--rounds 2] [--rate 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import percentile, print_table, write_result
from bench.live_lag import flood
from chatling.core.errors import ChatlingError
from chatling.core.events import Reply
from chatling.core.settings import load_settings
from chatling.display import Display
from chatling.web import load_or_create_token, token_path
from devtools.fakes.twitch_server import FakeTwitch

log = logging.getLogger("bench.web")

CHROMIUM = "/usr/bin/chromium"
CONDITIONS = ("no pages", "pages open")
PROBE_S = 0.05


class BenchError(ChatlingError):
    """The benchmark could not run."""


class Recorder(Display):
    """The terminal display, silent, noting when each reply attempt ended and its latency."""

    def __init__(self) -> None:
        super().__init__(quiet=True, file=io.StringIO())
        self.replies: list[tuple[float, float, str]] = []

    def reply(self, reply: Reply) -> None:
        self.replies.append((time.monotonic(), reply.latency_s, reply.status))


async def probe_loop(samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    """How late the loop wakes a ``sleep(PROBE_S)``: the lag every other task sees."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(PROBE_S)
        samples.append((time.monotonic(), loop.time() - t - PROBE_S))


def open_browsers(urls: list[str], into: Path) -> list[subprocess.Popen]:
    procs = []
    for i, url in enumerate(urls):
        procs.append(
            subprocess.Popen(
                [
                    CHROMIUM,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--remote-debugging-port=0",  # keeps headless Chromium on the page
                    f"--user-data-dir={into / f'browser{i}'}",
                    url,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    return procs


def browser_cpu_s(procs: list[subprocess.Popen]) -> float:
    """CPU seconds used so far by the browsers and every process they started."""
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(proc.pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
    return total


def close_browsers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def pages_open(http: aiohttp.ClientSession, base: str, token: str) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {token}"}
    with contextlib.suppress(aiohttp.ClientError):
        async with http.get(base + "/api/status", headers=headers) as r:
            if r.status == 200:
                return (await r.json())["pages"]
    return {}


async def drive(
    args: argparse.Namespace,
    fake: FakeTwitch,
    base: str,
    token: str,
    work: Path,
    browser_cpu: list[float],
) -> list[tuple[str, float, float]]:
    """Flood, alternate the phases, stop the bot; returns (condition, start, end) of each.

    ``browser_cpu`` gets the browsers' CPU seconds of each "pages open" phase.
    """
    phases: list[tuple[str, float, float]] = []
    stop_flood = asyncio.Event()
    deadline = time.monotonic() + 900
    while fake._chat_target() is None:
        if time.monotonic() > deadline:
            raise BenchError("the bot did not subscribe to chat within 15 minutes")
        await asyncio.sleep(0.5)
    flooding = asyncio.create_task(flood(fake, args.rate, stop_flood, {}))
    urls = [f"{base}/overlay?token={token}", f"{base}/dashboard?token={token}"]
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(args.warmup_s)
            for _ in range(args.rounds):
                for condition in CONDITIONS:
                    browsers: list[subprocess.Popen] = []
                    if condition == "pages open":
                        browsers = open_browsers(urls, work)
                        until = time.monotonic() + 60
                        while (await pages_open(http, base, token)) != {
                            "overlay": 1,
                            "dashboard": 1,
                        }:
                            if time.monotonic() > until:
                                raise BenchError("the browsers did not open both pages in 60 s")
                            await asyncio.sleep(0.2)
                        await asyncio.sleep(2.0)  # page load and first fetches done
                    start = time.monotonic()
                    cpu_before = browser_cpu_s(browsers)
                    log.info("%s for %.0f s", condition, args.phase_s)
                    await asyncio.sleep(args.phase_s)
                    phases.append((condition, start, time.monotonic()))
                    if browsers:
                        browser_cpu.append(browser_cpu_s(browsers) - cpu_before)
                    close_browsers(browsers)
                    if condition == "pages open":
                        await asyncio.sleep(2.0)  # the streams closed
    finally:
        stop_flood.set()
        await flooding
        os.kill(os.getpid(), signal.SIGINT)  # stops run_live as Ctrl-C does
    return phases


def phase_latencies(
    phases: list[tuple[str, float, float]], replies: list[tuple[float, float, str]]
) -> list[tuple[str, list[float]]]:
    """Each phase's reply latencies (failed attempts left out), in run order."""
    return [
        (c, [lat for t, lat, status in replies if a <= t < b and status != "failed"])
        for c, a, b in phases
    ]


def p50_ratio_interval(base: list[float], pages: list[float], seed: int = 0) -> list[float]:
    """95% bootstrap interval of median(pages) / median(no pages) (scipy, BCa)."""
    from scipy.stats import bootstrap

    def ratio(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(b, axis=axis) / np.median(a, axis=axis)

    res = bootstrap(
        (np.asarray(base), np.asarray(pages)),
        ratio,
        n_resamples=5000,
        vectorized=True,
        random_state=np.random.default_rng(seed),
    )
    return [
        round(float(res.confidence_interval.low), 3),
        round(float(res.confidence_interval.high), 3),
    ]


def summarise(
    condition: str,
    phases: list[tuple[str, float, float]],
    replies: list[tuple[float, float, str]],
    lags: list[tuple[float, float]],
) -> dict[str, Any]:
    spans = [(a, b) for c, a, b in phases if c == condition]

    def inside(t: float) -> bool:
        return any(a <= t < b for a, b in spans)

    latencies = [lat for t, lat, status in replies if inside(t) and status != "failed"]
    lag_ms = [lag * 1000 for t, lag in lags if inside(t)]
    return {
        "condition": condition,
        "seconds": round(sum(b - a for a, b in spans)),
        "replies": len(latencies),
        "latency_p50_s": round(percentile(latencies, 50), 3),
        "latency_p95_s": round(percentile(latencies, 95), 3),
        "loop_lag_p50_ms": round(percentile(lag_ms, 50), 2),
        "loop_lag_p99_ms": round(percentile(lag_ms, 99), 2),
        "loop_lag_max_ms": round(max(lag_ms), 2) if lag_ms else float("nan"),
        "probes": len(lag_ms),
    }


async def main(args: argparse.Namespace) -> None:
    from chatling.live import run_live

    if not Path(CHROMIUM).exists():
        raise BenchError(f"{CHROMIUM} is missing: apt-get install chromium (make test does)")
    work = Path(tempfile.mkdtemp(prefix="chatling-bench-web-"))
    recorder = Recorder()
    lags: list[tuple[float, float]] = []
    try:
        with FakeTwitch() as fake:
            access, refresh = fake.issue_tokens()
            lines = {
                **fake.env_settings(access, refresh, str(work / "tokens.json")),
                "CHATLING_TWITCH__IS_MODERATOR": "true",
                "CHATLING_AUDIO__ENABLED": "false",
                "CHATLING_STORAGE__DB_PATH": str(work / "live.sqlite"),
                "CHATLING_MODEL__ENFORCE_EAGER": "true",
                "CHATLING_REPLY__GLOBAL_COOLDOWN_S": "0",
                "CHATLING_REPLY__QUIET_INTERVAL_S": "0",
                "CHATLING_REPLY__QUIET_JITTER_S": "0",
                "CHATLING_REPLY__RATE_MESSAGES": "1000",
                "CHATLING_REPLY__MODERATOR_RATE_MESSAGES": "1000",
                "CHATLING_WEB__ENABLED": "true",
                "CHATLING_WEB__PORT": str(args.port),
                "CHATLING_WEB__TOKEN_FILE": str(work / "web-token"),
            }
            env = work / ".env"
            env.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
            settings = load_settings(env)
            token = load_or_create_token(token_path(settings.web)).get_secret_value()
            base = f"http://127.0.0.1:{args.port}"
            stop_probe = asyncio.Event()
            probing = asyncio.create_task(probe_loop(lags, stop_probe))
            browser_cpu: list[float] = []
            driving = asyncio.create_task(drive(args, fake, base, token, work, browser_cpu))
            try:
                result = await run_live(
                    settings, display=recorder, env_file=str(env), status_interval_s=30.0
                )
            finally:
                stop_probe.set()
                await probing
                if not driving.done():
                    driving.cancel()
                phases = await driving
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = [summarise(c, phases, recorder.replies, lags) for c in CONDITIONS]
    base_row, pages_row = table
    verdict = {
        "latency_p50_ratio": round(pages_row["latency_p50_s"] / base_row["latency_p50_s"], 3),
        "loop_lag_p99_extra_ms": round(
            pages_row["loop_lag_p99_ms"] - base_row["loop_lag_p99_ms"], 2
        ),
    }
    by_phase = phase_latencies(phases, recorder.replies)
    base_lat = [x for c, lats in by_phase if c == CONDITIONS[0] for x in lats]
    pages_lat = [x for c, lats in by_phase if c == CONDITIONS[1] for x in lats]
    verdict["latency_p50_ratio_95ci"] = p50_ratio_interval(base_lat, pages_lat)
    verdict["latency_within_5pct"] = abs(verdict["latency_p50_ratio"] - 1) <= 0.05
    verdict["lag_under_20ms_extra"] = verdict["loop_lag_p99_extra_ms"] < 20.0
    cols = [
        "condition", "seconds", "replies", "latency_p50_s", "latency_p95_s",
        "loop_lag_p50_ms", "loop_lag_p99_ms", "loop_lag_max_ms",
    ]  # fmt: skip
    print_table(
        f"chatling run under a {args.rate:g} msg/s chat flood: reply latency and event-loop lag, "
        f"no pages vs overlay + dashboard open in two Chromium processes "
        f"({args.rounds} x {args.phase_s:g} s each, alternating)",
        cols,
        [[row[c] for c in cols] for row in table],
    )
    print(
        "\nper phase (run order): "
        + ", ".join(f"{c}: p50 {percentile(lats, 50):.3f} s ({len(lats)})" for c, lats in by_phase)
    )
    cores = os.cpu_count() or 1
    share = [cpu / args.phase_s / cores for cpu in browser_cpu]
    print(
        "browsers' CPU while open: "
        + ", ".join(f"{x:.0%}" for x in share)
        + f" of the machine's {cores} cores"
    )
    print(f"\n{verdict}")
    path = write_result(
        "web",
        {
            "args": vars(args),
            "what": "reply latency = Reply.latency_s of each attempt; loop lag = lateness of "
            f"asyncio.sleep({PROBE_S}) on the bot's loop (see bench/web.py)",
            "summary": table,
            "verdict": verdict,
            "per_phase": [
                {
                    "condition": c,
                    "replies": len(lats),
                    "latency_p50_s": round(percentile(lats, 50), 3),
                }
                for c, lats in by_phase
            ],
            "browser_cpu_share_of_machine": [round(x, 3) for x in share],
            "chat_in": result.stats.chat_in,
            "posted": result.stats.posted,
            "load_avg_after": os.getloadavg(),
        },
    )
    print(f"\nwrote {path}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phase-s", type=float, default=45.0, help="seconds of each phase")
    ap.add_argument("--rounds", type=int, default=2, help="phases of each condition")
    ap.add_argument("--rate", type=float, default=5.0, help="chat flood, messages a second")
    ap.add_argument("--warmup-s", type=float, default=15.0, help="flood before measuring")
    ap.add_argument("--port", type=int, default=18787, help="web port of the bot")
    return ap.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    asyncio.run(main(parse_args()))
