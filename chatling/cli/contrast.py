"""``chatling contrast``: DPO of an SFT adapter on contrast pairs from its own training data.

    chatling contrast --adapter SFT_DIR --data DIR --out DIR [--negatives 3] [--gap 60]
                      [--beta 0.1] [--lr X] [--epochs 1] [--preset NAME]

The pairs are drawn by ``chatling.training.dpo.contrast`` (why: see there); the training is
``chatling.training.dpo.dpo.train_dpo`` with the SFT adapter as the reference. ``--data``
and ``--split`` mean what they mean for ``chatling train``: give the same
values, so the contrast step sees exactly the pairs SFT saw and never the
test part.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def run_contrast(args: argparse.Namespace) -> int:
    """The ``contrast`` subcommand: draw the pairs, run DPO, print where the adapter went."""
    from transformers import AutoTokenizer

    from chatling.cli.common import setup_logging
    from chatling.core.errors import ModelError
    from chatling.engine import resolve_model
    from chatling.training.data.pairs import pairs_from_rows
    from chatling.training.dpo.contrast import ContrastConfig, contrast_pairs
    from chatling.training.dpo.dpo import adapter_base, train_dpo
    from chatling.training.sft.collate import find_pair_files, load_train_pairs, prompt_builder
    from chatling.training.sft.presets import get_preset, with_overrides

    setup_logging(args.verbose)
    adapter = Path(args.adapter)
    preset = with_overrides(
        get_preset(args.preset),
        batch_size=args.batch_size,
        max_length=args.max_length,
        grad_accum=args.grad_accum,
        seed=args.seed,
    )
    config = ContrastConfig(negatives=args.negatives, gap_s=args.gap, seed=args.seed or 0)
    config.check()
    base = adapter_base(adapter, preset, args.base)
    files = find_pair_files(Path(args.data))
    rows = load_train_pairs(files, split=args.split, test_fraction=args.test_fraction)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(base))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer of {base}: {exc}") from exc
    pairs = contrast_pairs(pairs_from_rows(list(rows)), prompt_builder(tokenizer), config)
    out = train_dpo(
        adapter,
        pairs,
        Path(args.out),
        preset,
        base=base,
        steps=args.steps,
        epochs=args.epochs,
        beta=args.beta,
        lr=args.lr,
        extra_metadata={
            "contrast": {
                **asdict(config),
                "data": str(Path(args.data).resolve()),
                "split": args.split,
                "test_fraction": args.test_fraction,
            }
        },
    )
    print(f"adapter: {out}  ({len(pairs)} contrast pairs)")
    return 0


def add_contrast_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``contrast`` to the ``chatling`` command's subparsers; returns its parser."""
    from chatling.cli.common import positive_int
    from chatling.training.dpo.contrast import ContrastConfig
    from chatling.training.dpo.dpo import DEFAULT_BETA
    from chatling.training.sft.presets import PRESETS

    defaults = ContrastConfig()
    cp = subparsers.add_parser(
        "contrast",
        help="teach an SFT adapter which message fits which moment (DPO on its own data)",
        description="After `chatling train`: a DPO step where, on each pair's live prompt, "
        "the message really posted beats messages posted elsewhere in the training data "
        "(one of the most frequent, one of the most similar, a random one, in turn). "
        "The SFT adapter is the reference; the result is an adapter directory like "
        "train's, with a `dpo` section in chatling_adapter.json.",
    )
    cp.add_argument("--adapter", required=True, help="the SFT adapter (chatling train --out)")
    cp.add_argument("--data", required=True, help="the pairs the adapter was trained on")
    cp.add_argument("--out", required=True, help="output adapter directory (must not exist)")
    cp.add_argument(
        "--split",
        choices=("time", "source", "none"),
        default="time",
        help="hold out the test part as chatling train/eval do (give train's value)",
    )
    cp.add_argument("--test-fraction", type=float, default=0.1, help="as chatling train")
    cp.add_argument(
        "--negatives",
        type=positive_int,
        default=defaults.negatives,
        help="rejected messages per real message (default %(default)s)",
    )
    cp.add_argument(
        "--gap",
        type=float,
        default=defaults.gap_s,
        help="seconds: rejected messages come from at least this far away (default %(default)s)",
    )
    cp.add_argument(
        "--beta", type=float, default=DEFAULT_BETA, help="DPO beta (default %(default)s)"
    )
    cp.add_argument("--lr", type=float, default=None, help="learning rate (preset's x 0.1)")
    cp.add_argument("--epochs", type=float, default=1.0, help="epochs (default %(default)s)")
    cp.add_argument("--steps", type=positive_int, default=None, help="optimizer steps instead")
    cp.add_argument("--preset", default="cpu-tiny", choices=sorted(PRESETS), help="recipe")
    cp.add_argument("--base", default=None, help="base model (the adapter's by default)")
    cp.add_argument("--batch-size", type=positive_int, default=None, help="pairs per step")
    cp.add_argument("--max-length", type=positive_int, default=None, help="longest pair kept")
    cp.add_argument("--grad-accum", type=positive_int, default=None, help="accumulation steps")
    cp.add_argument("--seed", type=int, default=None, help="seed of the draw and the training")
    cp.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    cp.set_defaults(func=run_contrast)
    return cp
