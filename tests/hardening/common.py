"""Shared parts of the hardening suites: fast/full mode, varied chat, probes, results.

``CHATLING_HARDENING_FULL=1`` (``make test-hardening``) runs the full versions
and merges their measurements into ``tests/hardening/results/<name>.json``; the
default test run uses the fast sizes and writes nothing into the repository.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from chatling.engine import Generation, SamplingOptions

FULL = os.environ.get("CHATLING_HARDENING_FULL") == "1"
RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[2]


def pick(fast: Any, full: Any) -> Any:
    """The fast size in the default suite, the full one under ``CHATLING_HARDENING_FULL=1``."""
    return full if FULL else fast


def write_results(name: str, sections: dict[str, Any]) -> Path | None:
    """Full runs: merge ``sections`` into ``results/<name>.json``; fast runs write nothing.

    Each section is stamped with when it was measured and the machine's load
    then (other jobs on the 2 cores change timings); sections from earlier runs
    that this run did not measure are kept.
    """
    if not FULL:
        return None
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    record["mode"] = "full"
    record["machine"] = {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
    }
    load1, load5, _ = os.getloadavg()
    stamp = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1_5_min": [round(load1, 2), round(load5, 2)],
    }
    for key, value in sections.items():
        record[key] = {**value, **stamp} if isinstance(value, dict) else value
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# -- chat ---------------------------------------------------------------------------------

_WORDS = (
    "lol that jump was insane what game is this again pog the boss has two phases "
    "i think you missed the chest behind the waterfall no way he actually did it first "
    "try chat is wild today hello from brazil good morning from finland when is the next "
    "stream can you play the music louder the volume is fine for me this song slaps"
).split()
_EMOTES = ("LUL", "Kappa", "PogChamp", "KEKW", "monkaS", "<3", "OMEGALUL", "Sadge")
_UNICODE = (
    "ñandú 🦆",
    "日本から見てます",
    "здравствуйте чат",
    "مرحبا",
    "👀👀👀",
    "é è ê ë",
    "ü\u200bber",
)


def varied_text(rng: random.Random, i: int, bot_name: str = "chatling") -> str:
    """One chat line of a mix a busy channel sees: short, long, emotes, unicode, links,
    commands, mentions of the bot, copypasta."""
    kind = rng.random()
    words = rng.sample(_WORDS, rng.randint(2, 12))
    if kind < 0.25:
        return " ".join(rng.choices(_EMOTES, k=rng.randint(1, 6)))
    if kind < 0.35:
        return f"{bot_name} {' '.join(words)}?"
    if kind < 0.40:
        return f"@{bot_name} what do you think about {words[0]}"
    if kind < 0.48:
        return f"{rng.choice(_UNICODE)} {' '.join(words[:4])}"
    if kind < 0.52:
        return f"check this out https://example.com/{i} {words[0]}"
    if kind < 0.56:
        return rng.choice(("!uptime", "!discord", "!so streamer", "!chatling status"))
    if kind < 0.60:  # a long message near Twitch's 500-character limit
        return (" ".join(rng.choices(_WORDS, k=120)))[:480]
    if kind < 0.66:
        return "THIS IS THE COPYPASTA OF THE DAY " * rng.randint(1, 4)
    return f"{' '.join(words)} {rng.choice(_EMOTES)}" if kind < 0.8 else " ".join(words)


def chat_log_json(path: Path, count: int, rate_per_s: float, seed: int = 0) -> list[str]:
    """Write a TwitchDownloader chat log of ``count`` messages at ``rate_per_s``; their ids."""
    rng = random.Random(seed)
    comments, ids = [], []
    for i in range(count):
        offset = round((i + 0.5) / rate_per_s, 3)
        user = f"viewer{rng.randint(1, 400)}"
        mid = f"msg-{seed}-{i:07d}"
        ids.append(mid)
        text = varied_text(rng, i)
        comments.append(
            {
                "_id": mid,
                "created_at": "2024-05-18T19:00:00.000Z",
                "channel_id": "731904526",
                "content_type": "video",
                "content_id": "1",
                "content_offset_seconds": offset,
                "commenter": {"display_name": user.capitalize(), "_id": str(i), "name": user},
                "message": {
                    "body": text,
                    "bits_spent": 0,
                    "fragments": [{"text": text, "emoticon": None}],
                    "user_badges": [],
                    "user_color": None,
                    "emoticons": [],
                },
            }
        )
    document = {
        "FileInfo": {"Version": {"Major": 1, "Minor": 4, "Patch": 0}},
        "streamer": {"name": "streamer", "id": 731904526},
        "video": {"title": "hardening", "id": "1", "start": 0, "end": count / rate_per_s + 1},
        "comments": comments,
    }
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return ids


# -- a small stand-in engine for child processes --------------------------------------------


class StubEngine:
    """Deterministic candidates after a short delay (child processes cannot share the
    session's vLLM engine, and starting one per SIGKILL would take minutes)."""

    model_name = "stub"
    adapter = None

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s = delay_s
        self.calls = 0

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def render_chat(self, system: str, user: str) -> list[int]:
        return [len(w) for w in (system + " " + user).split()][:512]

    def render(self, parts: Any) -> list[int]:
        return self.render_chat(parts.system, parts.user)

    async def generate(self, prompt_ids: list[int], options: SamplingOptions) -> Generation:
        self.calls += 1
        started = time.perf_counter()
        await asyncio.sleep(self.delay_s)
        texts = [f"honestly reply {self.calls} take {k} is a good one" for k in range(options.n)]
        return Generation(texts, 0.01, time.perf_counter() - started, 8 * options.n, None)


# -- probes ---------------------------------------------------------------------------------


@dataclass
class LoopLag:
    """Event-loop lag: a task sleeps ``interval_s`` and records how late it wakes."""

    interval_s: float = 0.010
    lags_s: list[float] = field(default_factory=list)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval_s)
            self.lags_s.append(max(0.0, loop.time() - before - self.interval_s))

    def summary(self) -> dict[str, float]:
        lags = sorted(self.lags_s)
        return {
            "samples": len(lags),
            "p50_ms": round(percentile(lags, 50) * 1000, 2),
            "p99_ms": round(percentile(lags, 99) * 1000, 2),
            "max_ms": round(lags[-1] * 1000, 2) if lags else 0.0,
        }


class ControlLag:
    """The same 10 ms sleeper in a separate, otherwise idle process: how late the machine
    itself wakes a thread (other jobs on the cores), to tell from lag the bot adds."""

    def __enter__(self) -> ControlLag:
        script = Path(__file__).with_name("lag_control.py")
        self._proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, text=True
        )
        self.summary: dict[str, float] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=30)
        self.summary = json.loads(out) if out.strip() else {}


class GcPauses:
    """Durations of the collector's full (generation 2) passes while installed."""

    def __init__(self) -> None:
        self.pauses_s: list[float] = []
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses_s.append(time.perf_counter() - self._started)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, float]:
        return {
            "count": len(self.pauses_s),
            "max_ms": round(max(self.pauses_s, default=0.0) * 1000, 1),
            "total_s": round(sum(self.pauses_s), 2),
        }


@dataclass
class RssSampler:
    """RSS of this process (and, separately, of its children) every ``interval_s``."""

    interval_s: float = 2.0
    samples: list[tuple[float, float, float]] = field(default_factory=list)
    """(monotonic seconds, own RSS MiB, children's RSS MiB)."""

    async def run(self) -> None:
        me = psutil.Process()
        while True:
            own = me.memory_info().rss / 2**20
            kids = 0.0
            for child in me.children(recursive=True):
                try:
                    kids += child.memory_info().rss / 2**20
                except psutil.NoSuchProcess:
                    continue
            self.samples.append((time.monotonic(), own, kids))
            await asyncio.sleep(self.interval_s)

    def slope_mib_per_min(self, warmup_fraction: float = 0.25, column: int = 1) -> float:
        """Least-squares slope of RSS over wall time after the warm-up share of the samples."""
        kept = self.samples[int(len(self.samples) * warmup_fraction) :]
        if len(kept) < 3:
            return 0.0
        xs = [s[0] / 60.0 for s in kept]
        ys = [s[column] for s in kept]
        return least_squares_slope(xs, ys)


def least_squares_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def max_in_window(times: Sequence[float], window_s: float) -> int:
    """The most events in any half-open window ``[t, t + window_s)``."""
    ordered = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(ordered):
        while ordered[j] <= t - window_s:
            j += 1
        best = max(best, i - j + 1)
    return best
