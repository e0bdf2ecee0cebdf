"""Live mode under a chat flood: end of a spoken sentence -> the bot's reply reaching Twitch.

Everything real, on 127.0.0.1: ``chatling run`` as a subprocess (its own vLLM
engine and Whisper) against the fake Twitch (devtools/fakes/twitch_server.py),
with stream audio from real speech clips (jfk.flac and the LJSpeech clips of
/work/shared/data/speech, as 16 kHz WAV) played one after another, with gaps
of ``--gap`` seconds, into the null sink of a private PulseAudio daemon. The
policy replies whenever idle (no cooldown, no quiet interval, rate limits far
above the traffic, moderator), so every sentence gets a prompt.

The run has two halves with the same clips in the same order: the baseline
without chat, then the fake floods chat at ``--rate`` messages per second of
varied text. Per clip::

    lag = T_post - T_end

``T_end``: wall time ``paplay`` returned (the clips end with <= 0.12 s of
silence). ``T_post``: wall time the fake received the first
``POST /helix/chat/messages`` of a reply whose prompt contains the clip's last
utterance (its text as quoted in prompts) and whose generation began after
that utterance was committed (so an earlier play of the same clip never
counts; in a 10-minute run a clip comes back only after 5 minutes).
Utterances belong to the clip whose play interval (to the next clip's start)
holds their audio midpoint; posts are paired with the ``posted`` rows of
``bot_replies`` in order (text checked).
The lag splits into *commit* (``utterances.created_at`` - ``T_end``:
transcription), *wait* (generation start - commit: the reply in flight
finishing) and *gen+post* (``T_post`` - generation start). Generation start is
``streams.started_at + bot_replies.offset_s`` (within a few ms).

Also sampled every second: CPU% (100 = one core) and RSS of the chatling
process tree, in all and per process (main, vLLM engine core, vLLM worker,
loopback recorder; the sum counts pages shared with forked children twice),
CPU of this process (the fake and the flood), system CPU and load. RSS slope
is a least-squares line over the run after its first minute.

Run: ``.venv/bin/python bench/live_lag.py [--minutes 10] [--rate 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, percentile, print_table, write_result
from chatling.audio import load_audio
from chatling.core.errors import ChatlingError
from chatling.prompt import quote_as_data
from devtools.fakes.twitch_server import FakeTwitch
from devtools.pulse import PulseServer, play, pulse_missing, write_wav

log = logging.getLogger("bench.live_lag")

SPEECH = ROOT.parent / "shared" / "data" / "speech"
WORK = Path("/tmp/chatling-bench-live-lag")
PHASES = ("no flood", "flood")


class BenchError(ChatlingError):
    """The benchmark could not run (missing data, chatling exited early)."""


@dataclass(frozen=True, slots=True)
class Played:
    clip: str
    phase: str
    start: float
    end: float
    """Wall times (time.time()) paplay started and returned."""


class TimedTwitch(FakeTwitch):
    """The fake Twitch, also noting when each chat post arrived (wall time)."""

    def __init__(self) -> None:
        super().__init__()
        self.timed_posts: list[tuple[float, dict[str, Any]]] = []

    async def _chat_message(self, request: web.Request) -> web.Response:
        arrived = time.time()
        body = await request.json()  # aiohttp caches the body: the handler reads it again
        response = await super()._chat_message(request)
        if response.status == 200:
            self.timed_posts.append((arrived, body))
        return response


def role_of(proc: psutil.Process, root: int) -> str:
    """Which part of chatling a process of its tree is (for RSS per process)."""
    if proc.pid == root:
        return "main"
    title = proc.name() + " " + " ".join(proc.cmdline()[:4])
    marks = (("engine_core", "EngineCore"), ("worker", "Worker"), ("recorder", "loopback_rec"))
    for role, mark in marks:
        if mark in title:
            return role
    return "other"


class TreeSampler:
    """Samples the chatling process tree (and this process) every ``interval_s`` in a thread."""

    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        self.root = psutil.Process(pid)
        self.me = psutil.Process()
        self.interval_s = interval_s
        self.samples: list[dict[str, float]] = []
        self._procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler")

    def _sample(self) -> dict[str, float] | None:
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return None
        cpu = rss = 0.0
        roles: dict[str, float] = {}
        for p in tree:
            proc = self._procs.setdefault(p.pid, p)  # keep the object: cpu_percent needs history
            try:
                cpu += proc.cpu_percent(None)
                mib = proc.memory_info().rss / 2**20
                role = role_of(proc, self.root.pid)
            except psutil.Error:
                continue
            rss += mib
            roles[role] = roles.get(role, 0.0) + mib
        return {
            "t": time.time(),
            "cpu": cpu,
            "rss_mib": rss,
            **{f"rss_mib_{role}": mib for role, mib in roles.items()},
            "procs": len(tree),
            "bench_cpu": self.me.cpu_percent(None),
            "system_cpu": psutil.cpu_percent(None),
            "load1": os.getloadavg()[0],
        }

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            sample = self._sample()
            if sample is not None:
                self.samples.append(sample)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def prepare_clips(into: Path) -> list[tuple[str, Path, float]]:
    """(name, 16 kHz WAV, seconds) of jfk.flac and the LJSpeech clips, in a fixed order."""
    sources = [SPEECH / "jfk.flac", *sorted((SPEECH / "ljspeech").glob("LJ*.wav"))]
    if not sources[0].exists():
        raise BenchError(f"{SPEECH} is absent: the shared data set must lie beside the checkout")
    write_wav(load_audio(SPEECH / "stereo_diarization.wav"), into / "warmup.wav")
    clips = []
    for src in sources:
        audio = load_audio(src)
        clips.append((src.name, write_wav(audio, into / f"{src.stem}.wav"), len(audio) / 16_000))
    return clips


_WORDS = (
    "lol that was so good wait what happened chat is this real no way bro the boss fight "
    "again please do the thing that map looks huge who else is watching from work first time "
    "here hello from brazil the music slaps can we get a hype train clip it someone clipped "
    "that poggers gg ez run it back dont do it he is gonna do it what is the build today"
).split()
_EMOTES = ("PogChamp", "KEKW", "LUL", "Kappa", "OMEGALUL", "monkaS", "Pog", "catJAM", "<3")


def flood_text(rng: random.Random, i: int) -> str:
    words = rng.sample(_WORDS, rng.randint(2, 9))
    if rng.random() < 0.4:
        words.insert(rng.randrange(len(words) + 1), rng.choice(_EMOTES))
    if rng.random() < 0.15:
        words = [rng.choice(_EMOTES)] * rng.randint(1, 4)
    text = " ".join(words) + ("?" if rng.random() < 0.2 else "")
    return text if rng.random() < 0.7 else f"{text} {i}"


async def flood(fake: FakeTwitch, rate: float, stop: asyncio.Event, sent: dict[str, float]) -> None:
    """``rate`` chat messages a second, at steady times, until ``stop``."""
    rng, start, i = random.Random(7), time.monotonic(), 0
    while not stop.is_set():
        t = time.time()
        mid = await fake.send_chat(flood_text(rng, i), chatter=f"viewer{rng.randrange(300)}")
        sent[mid] = t
        i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, start + i / rate - time.monotonic()))


def env_file(path: Path, fake: FakeTwitch, access: str, refresh: str) -> Path:
    lines = {
        **fake.env_settings(access, refresh, str(path.parent / "tokens.json")),
        "CHATLING_TWITCH__IS_MODERATOR": "true",
        "CHATLING_STORAGE__DB_PATH": str(path.parent / "live.sqlite"),
        "CHATLING_MODEL__ENFORCE_EAGER": "true",
        "CHATLING_REPLY__GLOBAL_COOLDOWN_S": "0",
        "CHATLING_REPLY__QUIET_INTERVAL_S": "0",
        "CHATLING_REPLY__QUIET_JITTER_S": "0",
        "CHATLING_REPLY__RATE_MESSAGES": "1000",
        "CHATLING_REPLY__MODERATOR_RATE_MESSAGES": "1000",
        "CHATLING_LOG_LEVEL": "INFO",
    }
    path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    return path


async def wait_for(condition: Any, what: str, proc: subprocess.Popen, logfile: Path, s: float):
    deadline = time.monotonic() + s
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(
                f"chatling run {'exited' if proc.poll() is not None else 'timed out'} while "
                f"waiting for {what}; see {logfile}:\n{logfile.read_text()[-3000:]}"
            )
        await asyncio.sleep(0.5)


def start_chatling(fake: FakeTwitch, pulse_env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """``chatling run`` in its own session (process group); also the secrets to look for."""
    access, refresh = fake.issue_tokens()
    env = env_file(WORK / ".env", fake, access, refresh)
    with open(WORK / "chatling-run.log", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatling", "--env-file", str(env), "run", "--no-chat"],
            cwd=ROOT,
            env={**pulse_env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, access + "\n" + refresh


async def drive(args: argparse.Namespace, clips: list, fake: TimedTwitch, pulse_env: dict) -> dict:
    """Start chatling, play the two halves, stop it; what was played and sampled."""
    warmup = WORK / "warmup.wav"  # written by prepare_clips
    logfile = WORK / "chatling-run.log"
    proc, secrets = start_chatling(fake, pulse_env)
    played: list[Played] = []
    sent: dict[str, float] = {}
    bounds: dict[str, tuple[float, float]] = {}
    code: int | None = None
    try:
        with TreeSampler(proc.pid) as sampler:
            launched = time.time()
            await wait_for(lambda: fake._chat_target() is not None, "EventSub", proc, logfile, 900)
            ready = time.time()
            log.info("chatling subscribed after %.0f s; warming up", ready - launched)
            await asyncio.to_thread(play, warmup, env=pulse_env)
            await asyncio.sleep(args.warmup_s)
            t0 = time.time()
            half = args.minutes * 30.0
            for k, phase in enumerate(PHASES):
                rng = random.Random(1)  # the same gaps in both halves
                stop = asyncio.Event()
                flooding = asyncio.create_task(flood(fake, args.rate, stop, sent)) if k else None
                phase_end = t0 + (k + 1) * half
                bounds[phase] = (t0 + k * half, phase_end)
                for name, wav, seconds in clips * 3:
                    if time.time() + seconds + args.gap[0] > phase_end:
                        break
                    start = time.time()
                    await asyncio.to_thread(play, wav, env=pulse_env)
                    played.append(Played(name, phase, start, time.time()))
                    log.info("%s: played %s (%.1f s)", phase, name, seconds)
                    await asyncio.sleep(rng.uniform(*args.gap))
                await asyncio.sleep(max(0.0, phase_end - time.time()))
                stop.set()
                if flooding is not None:
                    await flooding
                if proc.poll() is not None:
                    raise BenchError(f"chatling run exited ({proc.returncode}); see {logfile}")
            t_end = time.time()
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = await asyncio.to_thread(proc.wait, 180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    text = logfile.read_text(errors="replace")
    return {
        "played": played,
        "sent": sent,
        "samples": sampler.samples,
        "startup_s": ready - launched,
        "t0": t0,
        "t_end": t_end,
        "bounds": bounds,
        "exit_code": code,
        "tracebacks": text.count("Traceback"),
        "status_lines": [ln for ln in text.splitlines() if "status:" in ln][-3:],
        "token_leaked": any(secret in text for secret in secrets.split()),
    }


def per_clip(db: sqlite3.Connection, run: dict, posts: list) -> list[dict]:
    """Lag and its parts for each clip played (see the module docstring)."""
    started = db.execute("SELECT started_at FROM streams").fetchone()[0]
    utts = db.execute("SELECT start_s, end_s, text, created_at FROM utterances").fetchall()
    replies = db.execute(
        "SELECT offset_s, prompt, status, chosen FROM bot_replies ORDER BY id"
    ).fetchall()
    posted = [r for r in replies if r[2] == "posted"]
    # Posted rows and posts come in the same order: pair each row with the next post of its text.
    paired, j = [], 0
    for r in posted:
        k = next((k for k in range(j, len(posts)) if posts[k][1]["message"] == r[3]), None)
        if k is not None:
            paired.append((posts[k][0], r))
            j = k + 1
    run["pairing"] = {"posts": len(posts), "posted_rows": len(posted), "paired": len(paired)}
    played: list[Played] = run["played"]
    rows = []
    for i, p in enumerate(played):
        until = played[i + 1].start if i + 1 < len(played) else run["t_end"] + 60
        mine = [u for u in utts if p.start - 1 <= started + (u[0] + u[1]) / 2 < until - 1]
        row: dict[str, Any] = {**asdict(p), "utterances": [u[2] for u in mine]}
        rows.append(row)
        if not mine:
            continue
        last = max(mine, key=lambda u: u[1])
        quoted = quote_as_data(last[2], limit=1000)
        # The prompt holds it, and generation began after its commit (not an earlier play).
        hit = next(
            ((t, r) for t, r in paired if quoted in r[1] and started + r[0] >= last[3] - 0.05),
            None,
        )
        row["commit_s"] = last[3] - p.end
        row["audio_end_skew_s"] = started + last[1] - p.end
        if hit is None:
            continue
        t_post, reply = hit
        gen_start = started + reply[0]
        row.update(
            lag_s=t_post - p.end,
            wait_s=gen_start - last[3],
            gen_post_s=t_post - gen_start,
            reply=reply[3],
        )
    return rows


def summarise(phase: str, clips: list[dict], run: dict, posts: list, db: sqlite3.Connection):
    """One row of the table for the clips and samples of ``phase`` (None: whole run)."""
    lo, hi = run["bounds"][phase] if phase else (run["t0"], run["t_end"])
    mine = [c for c in clips if phase is None or c["phase"] == phase]
    lags = [c["lag_s"] for c in mine if "lag_s" in c]

    def p(key: str, q: float) -> float:
        return round(percentile([c[key] for c in mine if key in c], q), 2)

    samples = [s for s in run["samples"] if lo <= s["t"] < hi]
    fit = [s for s in samples if s["t"] >= run["t0"] + 60]

    def slope(key: str) -> float:
        points = [(s["t"] / 60.0, s[key]) for s in fit if key in s]
        if len(points) <= 10:
            return float("nan")
        return round(float(np.polyfit(*zip(*points, strict=True), 1)[0]), 2)

    rss = [s["rss_mib"] for s in samples]
    roles = sorted({k for s in samples for k in s if k.startswith("rss_mib_")})
    ingest = []
    if phase != "no flood":
        got = dict(db.execute("SELECT message_id, received_at FROM chat_messages").fetchall())
        ingest = [got[m] - t for m, t in run["sent"].items() if m in got and lo <= t < hi]
    n_posts = sum(1 for t, _ in posts if lo <= t < hi)
    return {
        "phase": phase or "whole run",
        "clips": len(mine),
        "transcribed": sum(1 for c in mine if "commit_s" in c),
        "answered": len(lags),
        "lag_p50_s": p("lag_s", 50),
        "lag_p95_s": p("lag_s", 95),
        "lag_max_s": round(max(lags), 2) if lags else float("nan"),
        "commit_p50_s": p("commit_s", 50),
        "wait_p50_s": p("wait_s", 50),
        "gen_post_p50_s": p("gen_post_s", 50),
        "replies_posted": n_posts,
        "replies_per_min": round(n_posts / ((hi - lo) / 60), 1),
        "chat_sent": sum(1 for t in run["sent"].values() if lo <= t < hi),
        "chat_lost": sum(1 for t in run["sent"].values() if lo <= t < hi) - len(ingest),
        "chat_ingest_p50_s": round(percentile(ingest, 50), 3),
        "chat_ingest_p95_s": round(percentile(ingest, 95), 3),
        "cpu_mean_pct": round(float(np.mean([s["cpu"] for s in samples])), 0),
        "bench_cpu_mean_pct": round(float(np.mean([s["bench_cpu"] for s in samples])), 0),
        "system_cpu_mean_pct": round(float(np.mean([s["system_cpu"] for s in samples])), 0),
        "load1_mean": round(float(np.mean([s["load1"] for s in samples])), 2),
        "rss_start_mib": round(float(np.median(rss[:10])), 0),
        "rss_end_mib": round(float(np.median(rss[-10:])), 0),
        "rss_slope_mib_per_min": slope("rss_mib"),
        "rss_by_process": {
            r.removeprefix("rss_mib_"): {
                "start_mib": round(float(np.median([s[r] for s in samples[:10] if r in s])), 0),
                "end_mib": round(float(np.median([s[r] for s in samples[-10:] if r in s])), 0),
                "slope_mib_per_min": slope(r),
            }
            for r in roles
        },
    }


async def main(args: argparse.Namespace) -> None:
    reason = pulse_missing()
    if reason:
        raise BenchError(reason)
    WORK.mkdir(exist_ok=True)
    for stale in ("live.sqlite", "live.sqlite-wal", "live.sqlite-shm", "tokens.json"):
        (WORK / stale).unlink(missing_ok=True)
    clips = prepare_clips(WORK)
    load_before = os.getloadavg()
    with TimedTwitch() as fake, PulseServer() as pulse_env:
        run = await drive(args, clips, fake, pulse_env)
        posts = list(fake.timed_posts)
    db = sqlite3.connect(WORK / "live.sqlite")
    try:
        rows = per_clip(db, run, posts)
        table = [summarise(ph, rows, run, posts, db) for ph in (*PHASES, None)]
    finally:
        db.close()
    cols = {
        "phase": "phase", "clips": "clips", "answered": "answered",
        "lag p50 s": "lag_p50_s", "lag p95 s": "lag_p95_s", "lag max s": "lag_max_s",
        "commit p50": "commit_p50_s", "wait p50": "wait_p50_s", "gen+post p50": "gen_post_p50_s",
        "replies/min": "replies_per_min", "chat ingest p50 s": "chat_ingest_p50_s",
        "p95": "chat_ingest_p95_s", "CPU %": "cpu_mean_pct", "RSS start MiB": "rss_start_mib",
        "RSS end MiB": "rss_end_mib", "RSS MiB/min": "rss_slope_mib_per_min",
    }  # fmt: skip
    out = [[r[k] for k in cols.values()] for r in table]
    print_table(
        f"chatling run, {args.minutes:g} min: speech end -> reply at Twitch "
        f"(flood {args.rate:g} msg/s in the second half); load avg before {load_before[0]:.2f}",
        list(cols),
        out,
    )
    samples = run.pop("samples")
    path = write_result(
        "live_lag",
        {
            "args": vars(args),
            "what": "lag = fake Twitch received the first post whose prompt holds the clip's last "
            "utterance - paplay returned; commit/wait/gen+post split it (see bench/live_lag.py)",
            "load_avg_before": load_before,
            "load_avg_after": os.getloadavg(),
            "summary": table,
            "clips": rows,
            "run": {k: v for k, v in run.items() if k not in ("played", "sent")},
            "samples_every_5s": [{k: round(v, 2) for k, v in s.items()} for s in samples[::5]],
        },
    )
    print(f"\nwrote {path}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="both halves together")
    ap.add_argument("--rate", type=float, default=5.0, help="flood: chat messages per second")
    ap.add_argument("--gap", type=float, nargs=2, default=(8.0, 12.0), help="silence between clips")
    ap.add_argument("--warmup-s", type=float, default=20.0, help="after the warm-up clip")
    return ap.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(main(parse_args()))
