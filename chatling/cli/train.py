"""``chatling train``: the command line of LoRA fine-tuning (``chatling.training.sft.train``).

    chatling train --data DIR --out DIR [--preset cpu-tiny|gpu-24gb|gpu-12gb] [--base MODEL]
                   [--steps N | --epochs N] [--lr X] [--batch-size N] [--resume]

``chatling/cli/main.py`` adds it with ``add_train_command(subparsers)``; it also runs on
its own (``python -m chatling.cli.train ...``) and under ``accelerate launch``
for several GPUs (see ``chatling/training/accelerate/``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chatling.cli.common import positive_int, setup_logging
from chatling.core.errors import ChatlingError

log = logging.getLogger(__name__)


def run_train(args: argparse.Namespace) -> int:
    """The ``train`` subcommand: build the request from ``args``, train, print where it went."""
    from chatling.training.sft.presets import get_preset, with_overrides
    from chatling.training.sft.train import TrainRequest, train

    setup_logging(args.verbose)
    preset = with_overrides(
        get_preset(args.preset),
        steps=args.steps,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        lora_r=args.rank,
        grad_accum=args.grad_accum,
        save_steps=args.save_steps,
        seed=args.seed,
        packing=False if args.no_packing else None,
        liger=args.liger,
        context_free_share=args.context_free_share,
    )
    saved_args: dict[str, Any] = {k: v for k, v in vars(args).items() if not callable(v)}
    request = TrainRequest(
        data=Path(args.data),
        out=Path(args.out),
        preset=preset,
        base=args.base,
        resume=args.resume,
        attn_implementation=args.attn,
        split=args.split,
        test_fraction=args.test_fraction,
        args=saved_args,
    )
    result = train(request)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under accelerate launch: one summary line, from the main process
    if result.loss_curve:
        first, last = result.loss_curve[0][1], result.loss_curve[-1][1]
        loss = f"loss {first:.3f} -> {last:.3f}"
    else:
        loss = "no loss logged"
    print(
        f"adapter: {result.adapter_dir}  ({result.global_step} steps, {loss}, "
        f"{result.tokens_seen} tokens in {result.train_seconds:.0f} s)"
    )
    return 0


def add_train_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``train`` to the ``chatling`` command's subparsers; returns its parser."""
    from chatling.training.sft.presets import PRESETS

    presets = "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values())
    tp = subparsers.add_parser(
        "train",
        help="fine-tune a LoRA adapter on (context -> chat message) pairs",
        description="Trains a LoRA adapter on the pair parquet files in --data, with the "
        "live bot's exact prompt and the loss on the chat message only. Writes the adapter "
        "and chatling_adapter.json (settings, data hash, loss curve) to --out; checkpoints go "
        f"to OUT/checkpoints. Presets: {presets}.",
    )
    tp.add_argument(
        "--data",
        required=True,
        help="pairs dataset (chatling data ingest --out DIR), or a directory/file of pair parquet",
    )
    tp.add_argument("--out", required=True, help="output adapter directory")
    tp.add_argument(
        "--split",
        choices=("time", "source", "none"),
        default="time",
        help="hold out the test part of a pairs dataset as `chatling eval` does "
        "(none: train on every pair)",
    )
    tp.add_argument(
        "--test-fraction", type=float, default=0.1, help="share held out (as chatling eval)"
    )
    tp.add_argument("--preset", default="cpu-tiny", choices=sorted(PRESETS), help="recipe")
    tp.add_argument("--base", default=None, help="base model directory or HF id (preset's)")
    tp.add_argument("--steps", type=positive_int, default=None, help="optimizer steps")
    tp.add_argument("--epochs", type=float, default=None, help="epochs (when no --steps)")
    tp.add_argument("--lr", type=float, default=None, help="learning rate")
    tp.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="rows per device per step (a packed row holds several short examples)",
    )
    tp.add_argument(
        "--max-length", type=positive_int, default=None, help="tokens per row and per example"
    )
    tp.add_argument(
        "--context-free-share",
        type=float,
        default=None,
        help="share of pairs also trained with no context (for PMI ranking; default 0)",
    )
    tp.add_argument("--rank", type=positive_int, default=None, help="LoRA rank (at most 16)")
    tp.add_argument("--grad-accum", type=positive_int, default=None, help="accumulation steps")
    tp.add_argument("--save-steps", type=positive_int, default=None, help="checkpoint interval")
    tp.add_argument("--seed", type=int, default=None, help="seed (data order, LoRA init)")
    tp.add_argument(
        "--no-packing", action="store_true", help="pad length-grouped batches instead of packing"
    )
    tp.add_argument(
        "--attn",
        default="auto",
        help="attention implementation: auto (flex_attention for packed rows on a CUDA GPU, "
        "else sdpa), sdpa, eager, flex_attention, flash_attention_2",
    )
    tp.add_argument(
        "--liger",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Liger's fused Triton kernels (CUDA; gpu presets: on; needs liger-kernel)",
    )
    tp.add_argument("--resume", action="store_true", help="continue from OUT's last checkpoint")
    tp.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    tp.set_defaults(func=run_train)
    return tp


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone: ``python -m chatling.cli.train --data ... --out ...``."""
    parser = argparse.ArgumentParser(prog="chatling")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_command(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args))
    except ChatlingError as exc:
        print(f"chatling: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
