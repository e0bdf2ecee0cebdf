"""What does a nightly retrain cost, and does the live bot stay fast while it runs?

Part 1, the run: one complete ``chatling.learn.nightly.run_nightly`` (export ->
train -> dpo -> evaluate -> gate) with the DougDoug development pairs as the
base dataset (``--base-data``, made by scripts/dougdoug_dataset.py; not in the
repository) and the demo stream, logged through ``Store``, as the new live
logs. Wall time and peak RSS (this process and its children) of each step.

Part 2, the live engine beside it: reply latency (4 candidates, up to 32
tokens, the same demo-stream prompts) of the in-process vLLM engine, first
alone (the baseline), then while a ``cpu-tiny`` trainer runs beside it as the
nightly job starts it (``nice`` 15, 1 thread). Goal: p50 within 1.5x.

Run: ``.venv/bin/python bench/nightly.py [--base-data DIR] [--steps 20] [--prompts 30]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import demo_prompts, percentile, print_table, write_result
from chatling.core.paths import PROJECT_ROOT
from chatling.core.settings import load_settings
from devtools.demo_log import write_demo_log

DOUGDOUG = PROJECT_ROOT / "data" / "runs" / "dougdoug-pairs"


def run_once(
    base_data: Path | None,
    steps: int,
    eval_points: int,
    work: Path,
    preset: str = "cpu-tiny",
    base_model: str | None = None,
) -> dict:
    from chatling.learn.gate import GateOptions
    from chatling.learn.nightly import NightlyConfig, run_nightly

    settings = load_settings(None)
    db = work / "log.sqlite"
    asyncio.run(write_demo_log(db))
    config = NightlyConfig(
        db_path=db,
        adapters_dir=work / "adapters",
        runs_dir=work / "runs",
        base_data=base_data,
        preset=preset,
        base_model=base_model,
        max_steps=steps,
        min_new_pairs=0,
        eval_points=eval_points,
        gate_generations=32,
        gate=GateOptions(),
        threads=1,
        env_file=None,
    )
    outcome = run_nightly(config, settings)
    return {
        "status": outcome.status,
        "reason": outcome.reason,
        "steps": [
            {
                "step": s.name,
                "seconds": s.seconds,
                "peak_rss_mib": s.peak_rss_mib,
                "detail": s.detail,
            }
            for s in outcome.steps
        ],
        "metrics": {k: v for k, v in outcome.metrics.items() if k != "gate"},
    }


async def latencies(prompts: list[tuple[str, str]], trainer_cmd: list[str] | None) -> dict:
    from chatling.core.settings import ModelSettings
    from chatling.engine import SamplingOptions, VllmEngine

    rows = {}
    async with VllmEngine.start(ModelSettings(enforce_eager=True)) as engine:
        ids = [engine.render_chat(s, u) for s, u in prompts]
        await engine.generate(ids[0], SamplingOptions(n=1, max_tokens=4))
        for name, cmd in (("engine alone (baseline)", None), ("engine + trainer", trainer_cmd)):
            child = None
            if cmd is not None:
                env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
                child = subprocess.Popen(  # noqa: ASYNC220 - started once, never awaited
                    cmd,
                    cwd=PROJECT_ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=lambda: os.nice(15),
                )
                await asyncio.sleep(25)  # past model loading, into the steps
            await engine.reset_prefix_cache()
            totals = []
            try:
                for i, prompt in enumerate(ids):
                    start = time.perf_counter()
                    await engine.generate(prompt, SamplingOptions(n=4, max_tokens=32, seed=i))
                    totals.append(time.perf_counter() - start)
            finally:
                alive = child is not None and child.poll() is None
                if child is not None:
                    child.kill()
                    child.wait()
            rows[name] = {
                "p50_s": round(percentile(totals, 50), 3),
                "p95_s": round(percentile(totals, 95), 3),
                "prompts": len(totals),
                "trainer_alive_throughout": alive if cmd else None,
            }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-data", type=Path, default=DOUGDOUG if DOUGDOUG.exists() else None)
    parser.add_argument("--steps", type=int, default=20, help="training steps of the run")
    parser.add_argument("--eval-points", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--preset", default="cpu-tiny", help="training preset of the run")
    parser.add_argument("--base-model", default=None, help="base model (default: the preset's)")
    parser.add_argument(
        "--no-latency", action="store_true", help="part 1 only (no vLLM here, e.g. a bare GPU box)"
    )
    parser.add_argument("--name", default="nightly", help="results file name")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    with tempfile.TemporaryDirectory(prefix="chatling-bench-nightly-") as tmp:
        work = Path(tmp)
        run = run_once(
            args.base_data, args.steps, args.eval_points, work, args.preset, args.base_model
        )
        print_table(
            f"nightly run ({run['status']}), base data {args.base_data or 'none'}",
            ["step", "seconds", "peak MiB", "detail"],
            [[s["step"], s["seconds"], s["peak_rss_mib"], s["detail"]] for s in run["steps"]],
        )
        if args.no_latency:
            payload = {"run": run, "base_data": str(args.base_data), "preset": args.preset}
            print(f"written {write_result(args.name, payload)}")
            return
        trainer = [
            sys.executable, "-m", "chatling.cli.train", "--data",
            str(args.base_data or work / "runs" / "run-0001" / "data"),
            "--out", str(work / "beside"), "--preset", "cpu-tiny", "--steps", "10000",
        ]  # fmt: skip
        lat = asyncio.run(latencies(demo_prompts(args.prompts), trainer))
    base = lat["engine alone (baseline)"]["p50_s"]
    with_training = lat["engine + trainer"]["p50_s"]
    ratio = round(with_training / base, 2) if base else None
    print_table(
        "reply latency (4 candidates, <= 32 tokens) with and without training beside it",
        ["engine", "p50", "p95", "prompts"],
        [[k, f"{v['p50_s']} s", f"{v['p95_s']} s", v["prompts"]] for k, v in lat.items()],
    )
    print(f"\np50 ratio with training: {ratio}x (goal <= 1.5x)")
    path = write_result(
        args.name,
        {"run": run, "latency": lat, "p50_ratio": ratio, "base_data": str(args.base_data)},
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
