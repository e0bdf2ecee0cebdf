"""Does the vLLM engine's memory grow under a long stream of replies, and what stops it?

A 10-minute ``bench/live_lag.py`` run saw the vLLM CPU worker's resident memory
climb 26-50 MiB a minute. Not the KV cache: touching all 2 GiB of it moved RSS
by 0 (it is resident from the start).

Each variant runs in its own child process (a fresh engine): real pipeline
prompts at 400 moments of the demo stream, built by the product's
``PromptBuilder``, each with a different chat tail (so the prefix cache cannot
answer them), 4 candidates of up to 32 tokens, back to back for ``--minutes``;
every fifth request is cancelled after 0.3 s, as the live pipeline drops a
reply that newer speech outdates. The RSS of the engine core and worker is
sampled every second; the slope is a least-squares line after the first minute.

Variants (one change each against ``glibc``, the product as shipped):

- allocators: ``glibc-arena2`` (``MALLOC_ARENA_MAX=2``), ``tcmalloc``,
  ``jemalloc`` (Debian ``libtcmalloc-minimal4``/``libjemalloc2``, if installed);
- ``glibc-no-grid``: the prompt-length grid off (``reply.prompt_length_grid=0``);
- diagnosis: ``glibc-onednn-cache-0`` (oneDNN's primitive cache off),
  ``glibc-unseeded`` (no per-request seed), ``glibc-fixed-length`` (every
  prompt cut to its last 480 tokens), ``glibc-bucket-32`` (cut to a multiple
  of 32 tokens at the start).

Run: ``.venv/bin/python bench/engine_memory.py [--minutes 4] [--variants glibc,glibc-no-grid]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import demo_prompts, percentile, print_table, write_result

log = logging.getLogger("bench.engine_memory")

ALLOCATORS = {
    "glibc": {},
    "glibc-arena2": {"MALLOC_ARENA_MAX": "2"},
    "tcmalloc": {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"},
    "jemalloc": {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
    # Diagnosis: oneDNN keeps a compiled primitive per matmul shape (1024 by default).
    "glibc-onednn-cache-0": {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0"},
    # Diagnosis: a seeded request gets its own torch.Generator in the worker.
    "glibc-unseeded": {"CHATLING_BENCH_UNSEEDED": "1"},
    # Diagnosis: every prompt cut to the same 480 tokens (its end), so every shape repeats.
    "glibc-fixed-length": {"CHATLING_BENCH_FIXED_LENGTH": "480"},
    # Diagnosis: prompts cut to a multiple of 32 tokens (at their start).
    "glibc-bucket-32": {"CHATLING_BENCH_BUCKET": "32"},
    # The product without its prompt-length grid (reply.prompt_length_grid = 0).
    "glibc-no-grid": {"CHATLING_BENCH_GRID": "0"},
}

CHAT_TAIL = [
    "LMAO", "KEKW", "doug what", "no way", "W", "L take", "Pog", "who is this guy",
    "cinema", "he's cooked", "chat is this real", "monkaS", "actual genius", "true",
]  # fmt: skip


def _engine_rss() -> dict[str, float]:
    """RSS in MiB of this process's children, keyed by role (engine core, worker)."""
    import psutil

    out: dict[str, float] = {}
    for child in psutil.Process().children(recursive=True):
        try:
            name = child.name()
            rss = child.memory_info().rss / 2**20
        except psutil.Error:
            continue
        role = "worker" if "Worker" in name else "engine_core" if "EngineCore" in name else "other"
        out[role] = out.get(role, 0.0) + rss
    return out


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares MiB per minute."""
    import numpy as np

    if len(points) < 3:
        return float("nan")
    t, y = np.array(points).T
    return float(np.polyfit(t / 60.0, y, 1)[0])


async def _run_variant(minutes: float) -> dict:
    from chatling.core.settings import ModelSettings, ReplySettings
    from chatling.engine import SamplingOptions, VllmEngine

    rng = random.Random(7)
    grid = int(os.environ.get("CHATLING_BENCH_GRID", str(ReplySettings().prompt_length_grid)))

    def extra_chat(i: int) -> list[str]:
        """A different chat tail at every request, as a busy chat gives (through the
        prompt builder, so the product's prompt-length grid applies)."""
        return [f"{rng.choice(CHAT_TAIL)} {i}" for _ in range(rng.randint(1, 6))]

    prompts = demo_prompts(400, ReplySettings(prompt_length_grid=grid), extra_chat)
    samples: list[tuple[float, dict[str, float]]] = []
    stop = threading.Event()
    started = time.perf_counter()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter() - started, _engine_rss()))
            stop.wait(1.0)

    latencies: list[float] = []
    aborted = 0
    unseeded = os.environ.get("CHATLING_BENCH_UNSEEDED") == "1"
    fixed_length = int(os.environ.get("CHATLING_BENCH_FIXED_LENGTH", "0"))
    bucket = int(os.environ.get("CHATLING_BENCH_BUCKET", "0"))

    def seed(i: int) -> int | None:
        return None if unseeded else i

    async with VllmEngine.start(ModelSettings(enforce_eager=True)) as engine:
        sampler = threading.Thread(target=sample, name="rss-sampler")
        sampler.start()
        started = time.perf_counter()
        try:
            i = 0
            while time.perf_counter() - started < minutes * 60:
                system, user = prompts[i % len(prompts)]
                ids = engine.render_chat(system, user)
                if fixed_length:
                    ids = ids[-fixed_length:]
                if bucket:
                    ids = ids[len(ids) % bucket :]
                t0 = time.perf_counter()
                reply = asyncio.ensure_future(
                    engine.generate(ids, SamplingOptions(n=4, max_tokens=32, seed=seed(i)))
                )
                if i % 5 == 4:  # the live pipeline drops a reply that newer speech outdates
                    await asyncio.sleep(0.3)
                    reply.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reply
                    aborted += 1
                else:
                    await reply
                    latencies.append(time.perf_counter() - t0)
                i += 1
        finally:
            stop.set()
            sampler.join()
    roles = sorted({r for _, s in samples for r in s})
    after_1min = [(t, s) for t, s in samples if t >= 60.0]
    per_role = {}
    for role in roles:
        series = [(t, s.get(role, 0.0)) for t, s in after_1min]
        per_role[role] = {
            "start_mib": round(series[0][1]) if series else None,
            "end_mib": round(series[-1][1]) if series else None,
            "slope_mib_per_min": round(_slope(series), 2),
        }
    total = [(t, sum(s.values())) for t, s in after_1min]
    return {
        "requests": len(latencies),
        "aborted": aborted,
        "latency_p50_s": round(percentile(latencies, 50), 3),
        "rss_start_mib": round(total[0][1]) if total else None,
        "rss_end_mib": round(total[-1][1]) if total else None,
        "rss_slope_mib_per_min": round(_slope(total), 2),
        "by_process": per_role,
    }


def _child(variant: str, minutes: float) -> dict:
    env = {**os.environ, **ALLOCATORS[variant]}
    cmd = [sys.executable, __file__, "--child", "--minutes", str(minutes)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"variant {variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="per variant (default 4)")
    parser.add_argument(
        "--variants",
        default=",".join(ALLOCATORS),
        help=f"comma-separated, of {', '.join(ALLOCATORS)} (default all installed)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(asyncio.run(_run_variant(args.minutes))))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results = {}
    for variant in args.variants.split(","):
        preload = ALLOCATORS[variant].get("LD_PRELOAD")
        if preload and not Path(preload).exists():
            log.info("skipping %s: %s is not installed", variant, preload)
            continue
        log.info("variant %s: %.1f minutes", variant, args.minutes)
        results[variant] = _child(variant, args.minutes)
        log.info("%s: %s", variant, results[variant])
    rows = [
        [
            name,
            r["requests"],
            r["latency_p50_s"],
            r["rss_start_mib"],
            r["rss_end_mib"],
            r["rss_slope_mib_per_min"],
            r["by_process"].get("worker", {}).get("slope_mib_per_min"),
        ]
        for name, r in results.items()
    ]
    header = ["allocator", "requests", "p50 s", "RSS@1min MiB", "RSS end", "MiB/min", "worker"]
    print_table("engine memory under back-to-back replies (n=4, 32 tokens)", header, rows)
    path = write_result(
        "engine_memory",
        {
            "args": vars(args),
            "what": "RSS of the vLLM engine core + worker, slope after the first minute",
            "load_avg_after": os.getloadavg(),
            "variants": results,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
