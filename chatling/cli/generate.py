"""``chatling generate``: what the live bot would post at each held-out moment.

    chatling generate --data PAIRS --out FILE.jsonl [--adapter DIR] [--split time|source]
                      [--test-fraction F] [--points N] [--seed S] [--concurrency K]

The work is ``chatling.training.eval.generate``; this is its command line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

from chatling.cli.common import setup_logging
from chatling.training.eval import generate
from chatling.training.eval.generate import GenerateRequest, generate_replies

log = logging.getLogger(__name__)


def run_generate(args: argparse.Namespace) -> int:
    from chatling.core.settings import load_settings

    settings = load_settings(getattr(args, "env_file", ".env"))
    if args.adapter:
        settings.model.adapter = args.adapter
    if args.base:
        settings.model.name = args.base
    setup_logging(args.verbose)
    request = GenerateRequest(
        data=Path(args.data),
        out=Path(args.out),
        split=args.split,
        test_fraction=args.test_fraction,
        points=args.points,
        seed=args.seed,
        spacing_s=args.spacing,
        concurrency=args.concurrency,
    )
    n = asyncio.run(generate_replies(settings, request))
    log.info("done: %d moments; score them with `chatling eval --generated %s`", n, args.out)
    return 0


def add_generate_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``chatling generate`` on the CLI's subparsers."""
    gp = subparsers.add_parser(
        "generate",
        help="what the live bot would post at each held-out moment (JSONL, for chatling eval)",
        description=generate.__doc__.split("\n\n", 1)[1] if generate.__doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gp.add_argument("--data", required=True, help="pairs dataset, or train*/test* pair files")
    gp.add_argument("--out", required=True, help="JSONL file to write (must not exist)")
    gp.add_argument("--adapter", default=None, help="LoRA adapter directory (default: settings)")
    gp.add_argument("--base", default=None, help="model directory or HF id (default: settings)")
    gp.add_argument("--split", choices=("time", "source"), default="time", help="how to hold out")
    gp.add_argument("--test-fraction", type=float, default=0.1, help="held-out share (0.1)")
    gp.add_argument("--points", type=int, default=200, help="moments (default 200)")
    gp.add_argument("--seed", type=int, default=0, help="seed of moments and sampling")
    gp.add_argument(
        "--spacing", type=float, default=1.0, help="seconds between moments, at least (1.0)"
    )
    gp.add_argument(
        "--concurrency", type=int, default=1, help="moments in flight at once (default 1, as live)"
    )
    gp.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    gp.set_defaults(func=run_generate)
    return gp


__all__ = ["add_generate_command", "run_generate"]
