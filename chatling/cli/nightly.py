"""``chatling retrain --now`` and ``chatling adapters list|promote|rollback|runs``.

The adapter commands only read or move the pointer file (``chatling.learn.registry``); a
running ``chatling run`` notices the change within seconds and swaps the adapter
live (``chatling.learn.watcher``), with no restart.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from chatling.cli.common import setup_logging

log = logging.getLogger(__name__)


def _settings(args: argparse.Namespace) -> Any:
    from chatling.core.settings import load_settings

    settings = load_settings(args.env_file)
    if getattr(args, "db", None):
        settings.storage.db_path = args.db
    if getattr(args, "adapters_dir", None):
        settings.schedule.adapters_dir = args.adapters_dir
    return settings


def _cmd_retrain(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from chatling.learn.nightly import STEPS, NightlyConfig, run_nightly

    if not args.now:
        print(
            "chatling retrain runs on the schedule inside `chatling run` "
            "(CHATLING_SCHEDULE__ENABLED=true); pass --now to run it once here.",
            file=sys.stderr,
        )
        return 2
    setup_logging(args.verbose)
    settings = _settings(args)
    if args.steps:
        settings.schedule.max_steps = args.steps
    if args.min_new_pairs is not None:
        settings.schedule.min_new_pairs = args.min_new_pairs
    config = NightlyConfig.from_settings(settings, "manual", args.env_file)
    console = Console(stderr=True)
    started = time.perf_counter()

    def on_step(step: str, state: str) -> None:
        n = STEPS.index(step) + 1 if step in STEPS else 0
        elapsed = time.perf_counter() - started
        console.print(f"[bold]step {n}/{len(STEPS)} {step}[/bold]: {state}  [dim]({elapsed:.0f} s)")

    with console.status("retraining (the trainer's log: RUN/train.log)"):
        outcome = run_nightly(config, settings, on_step=on_step)
    table = Table(title=f"retrain run {outcome.run_id}: {outcome.status}")
    for column in ("step", "seconds", "peak MiB", "detail"):
        table.add_column(column)
    for s in outcome.steps:
        table.add_row(s.name, f"{s.seconds:.1f}", f"{s.peak_rss_mib:.0f}", s.detail)
    console.print(table)
    console.print(f"{outcome.status}: {outcome.reason}")
    if outcome.run_dir:
        console.print(f"run directory: {outcome.run_dir}")
    return 1 if outcome.status == "failed" else 0


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _cmd_list(args: argparse.Namespace) -> int:
    from chatling.core.paths import resolve_path
    from chatling.learn.registry import AdapterRegistry

    registry = AdapterRegistry(resolve_path(_settings(args).schedule.adapters_dir))
    versions = registry.versions()
    if not versions:
        print(f"no adapters in {registry.root}; the base model serves")
        return 0
    for v in versions:
        mark = "*" if v.active else " "
        print(f"{mark} {v.name}  {_when(v.created_at)}  {v.summary}")
    if registry.active() is None:
        print("(none active: the base model serves)")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from chatling.core.paths import resolve_path
    from chatling.learn.registry import AdapterRegistry

    registry = AdapterRegistry(resolve_path(_settings(args).schedule.adapters_dir))
    pointer = registry.promote(args.version)
    print(f"active adapter: {pointer.version} (a running bot switches within seconds)")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from chatling.core.paths import resolve_path
    from chatling.learn.registry import AdapterRegistry

    registry = AdapterRegistry(resolve_path(_settings(args).schedule.adapters_dir))
    pointer = registry.rollback()
    print(f"active adapter: {pointer.version or 'none (base model)'}")
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from chatling.core.paths import resolve_path
    from chatling.store.runlog import RunLog

    runs = RunLog(Path(resolve_path(_settings(args).storage.db_path)))
    try:
        rows = runs.rows(args.limit)
    finally:
        runs.close()
    if not rows:
        print("no retrain runs yet")
    for r in reversed(rows):
        print(
            f"run {r['id']:>4}  {_when(r['started_at'])}  {r['trigger']:<8} {r['status']:<9}"
            f" new {r['new_pairs'] if r['new_pairs'] is not None else '-':>5}"
            f"  {r['candidate_version'] or '':<6} {r['reason'] or ''}"
        )
    return 0


def add_nightly_commands(subparsers: Any) -> None:
    """Register ``retrain`` and ``adapters`` on the CLI's subparsers."""
    rt = subparsers.add_parser(
        "retrain",
        help="run the nightly retrain once: export logs, train, evaluate, gate, promote",
        description="Runs the nightly job once in the foreground: exports the pairs logged "
        "since the serving adapter was made (plus the dataset it was trained on), trains a "
        "LoRA adapter at low priority, adds a DPO step when enough moderator marks exist, "
        "scores the new and the serving adapter on the same held-out points, and promotes "
        "the new one only if it passes the gate. Every run is a row in training_runs.",
    )
    rt.add_argument("--now", action="store_true", help="run now (required)")
    rt.add_argument("--db", default=None, help="the SQLite log (default: storage.db_path)")
    rt.add_argument("--adapters-dir", default=None, help="versions + active.json")
    rt.add_argument("--steps", type=int, default=None, help="cap training steps")
    rt.add_argument(
        "--min-new-pairs", type=int, default=None, help="skip below this many new pairs"
    )
    rt.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    rt.set_defaults(func=_cmd_retrain)

    ad = subparsers.add_parser(
        "adapters",
        help="list, promote or roll back the LoRA adapters (a running bot follows live)",
    )
    ad.add_argument("--adapters-dir", default=None, help="versions + active.json")
    ad.add_argument("--db", default=None, help="the SQLite log (for `runs`)")
    ad_sub = ad.add_subparsers(dest="adapters_command", required=True)
    ad_sub.add_parser("list", help="stored versions; * marks the active one").set_defaults(
        func=_cmd_list
    )
    pr = ad_sub.add_parser("promote", help="make VERSION the active adapter")
    pr.add_argument("version", help="a version from `chatling adapters list` (e.g. v0003)")
    pr.set_defaults(func=_cmd_promote)
    ad_sub.add_parser(
        "rollback", help="go back to the adapter active before this one"
    ).set_defaults(func=_cmd_rollback)
    runs = ad_sub.add_parser("runs", help="the last retrain runs and their decisions")
    runs.add_argument("--limit", type=int, default=20)
    runs.set_defaults(func=_cmd_runs)


__all__ = ["add_nightly_commands"]
