"""Train and test pairs of a dataset: the one split every command and job reads.

``chatling eval``, ``chatling generate``, the nightly job's gate and the
writing scripts all hold out the same moments, so this lives in the library
and not in one command's module.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from chatling.core.errors import ConfigError, InputFileError
from chatling.training.data.pairs import Pair, pairs_from_rows

log = logging.getLogger(__name__)

TRAIN_PREFIXES = ("train",)
TEST_PREFIXES = ("test", "eval", "val", "dev")


def read_pairs(path: Path) -> list[Pair]:
    """Pairs of one ``.parquet`` (needs pyarrow) or ``.jsonl`` file of ``Pair`` rows."""
    if path.suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as exc:
                        raise InputFileError(path, f"line {number}", f"not JSON ({exc})") from None
    else:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(
                "reading parquet pair files needs pyarrow: pip install pyarrow"
            ) from None
        try:
            rows = pq.read_table(path).to_pylist()
        except (OSError, ValueError) as exc:
            raise InputFileError(path, None, f"not a readable parquet file ({exc})") from None
    try:
        return [Pair.from_row(r) for r in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputFileError(path, None, f"rows are not pairs (missing {exc})") from None


def load_split(
    data: Path, by: str = "time", test_fraction: float = 0.1
) -> tuple[list[Pair], list[Pair]]:
    """(train, test) pairs of ``data``.

    A pairs dataset (``manifest.json``, written by ``chatling data ingest``) is
    split with ``chatling.training.data.dataset.split_pairs`` (by time or by whole source;
    train loses copies of test targets). A directory of already split files is
    read by file-name prefix: ``train*`` and ``test*``/``eval*``/``val*``/``dev*``.
    """
    if not data.is_dir():
        raise InputFileError(data, None, "no such directory: pass --data DIR with the pair files")
    if (data / "manifest.json").exists():
        from chatling.training.data.dataset import load_pairs, split_pairs

        split = split_pairs(load_pairs(data), by=by, test_fraction=test_fraction)  # type: ignore
        train, test = pairs_from_rows(list(split["train"])), pairs_from_rows(list(split["test"]))
    else:
        files = sorted(p for p in data.rglob("*") if p.suffix in (".parquet", ".jsonl"))
        train_files = [p for p in files if p.name.startswith(TRAIN_PREFIXES)]
        test_files = [p for p in files if p.name.startswith(TEST_PREFIXES)]
        if not train_files or not test_files:
            raise InputFileError(
                data, None,
                "is neither a pairs dataset (manifest.json) nor holds train*/test* pair files "
                f"(found {len(train_files)} train, {len(test_files)} held-out)",
            )  # fmt: skip
        train = [p for f in train_files for p in read_pairs(f)]
        test = [p for f in test_files for p in read_pairs(f)]
    if not train or not test:
        left = f"the split left {len(train)} train and {len(test)} test pairs"
        raise InputFileError(data, None, f"{left}: pass more data or another --test-fraction")
    log.info("loaded %d train and %d test pairs from %s", len(train), len(test), data)
    return train, test


__all__ = ["TEST_PREFIXES", "TRAIN_PREFIXES", "load_split", "read_pairs"]
