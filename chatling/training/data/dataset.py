"""The pairs dataset on disk: one parquet file per source, a manifest and statistics.

Layout of a dataset directory (``chatling data ingest --out DIR``)::

    DIR/data/<source>.parquet   the pairs of one VOD or live stream (columns of
                                chatling.training.data.pairs.COLUMNS, a Hugging Face ``datasets``
                                parquet file)
    DIR/manifest.json           every source: its inputs, their content hash, the
                                AlignOptions and filters that made it
    DIR/stats.json              counts per source (pairs, filter drops, time spans)
                                and in total

Several VODs append into one dataset; writing a source that is already there
(same name, or the same VOD content under another name) replaces its file
instead of duplicating its pairs. Every file is written to a temp file and
renamed, and the manifest is written after the data, so a crash leaves the
previous dataset, never a half-written one.

``load_pairs(DIR)`` gives one ``datasets.Dataset``; ``split_pairs`` makes
train/test splits by time (the last ``test_fraction`` of each source's time) or
by whole sources, never by random rows (neighbouring messages share context,
so a random split leaks), and drops from train the exact copies of test
targets.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from chatling.core.errors import ChatlingError, InputFileError
from chatling.training.data.align import AlignOptions
from chatling.training.data.filters import FilterReport
from chatling.training.data.pairs import COLUMNS, Pair

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STATS = "stats.json"
DATA_DIR = "data"
FORMAT = "chatling-pairs"
VERSION = 1


class DatasetError(InputFileError):
    """A dataset directory is missing, damaged or not a chatling pairs dataset."""


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What made one source's pairs (recorded in the manifest)."""

    name: str
    kind: Literal["vod", "live"]
    sha256: str | None = None
    """Content hash of the VOD file (live streams: None)."""
    inputs: dict[str, str] = field(default_factory=dict)
    """The files it was made from (``vod``, ``chat``, ``transcript``, ``db``...)."""
    align: AlignOptions = field(default_factory=AlignOptions)
    filters: dict[str, Any] = field(default_factory=dict)
    report: FilterReport = field(default_factory=FilterReport)
    transcript_segments: int = 0


def features() -> Any:
    """The ``datasets.Features`` of a pairs file (the columns of ``chatling.training.data.pairs``)."""
    from datasets import Features, List, Value

    return Features(
        {
            "source": Value("string"),
            "offset": Value("float64"),
            "transcript": List(Value("string")),
            "chat": List(Value("string")),
            "target": Value("string"),
            "user": Value("string"),
        }
    )


_STRING = {"dtype": "string", "_type": "Value"}
_HF_FEATURES = {
    "source": _STRING,
    "offset": {"dtype": "float64", "_type": "Value"},
    "transcript": {"feature": _STRING, "_type": "List"},
    "chat": {"feature": _STRING, "_type": "List"},
    "target": _STRING,
    "user": _STRING,
}


def arrow_schema() -> Any:
    """``features().arrow_schema`` built with pyarrow alone: writing a source then needs no
    ``import datasets`` (two seconds of start-up). A test keeps the two equal."""
    import pyarrow as pa

    text = pa.string()
    return pa.schema(
        [
            ("source", text),
            ("offset", pa.float64()),
            ("transcript", pa.list_(text)),
            ("chat", pa.list_(text)),
            ("target", text),
            ("user", text),
        ],
        metadata={"huggingface": json.dumps({"info": {"features": _HF_FEATURES}})},
    )


def slug(name: str) -> str:
    """A file name for a source name (letters, digits, ``.-_``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    return cleaned[:80] or "source"


def _atomic_write(path: Path, write: Any) -> None:
    """``write(tmp)`` then rename over ``path``: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest, or an empty one for a new directory."""
    out_dir = Path(out_dir)
    path = out_dir / MANIFEST
    if not path.exists():
        if out_dir.exists() and not out_dir.is_dir():
            raise DatasetError(out_dir, None, "is a file, not a dataset directory")
        return {"format": FORMAT, "version": VERSION, "columns": list(COLUMNS), "sources": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(path, None, f"cannot read the manifest ({exc}); re-ingest") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DatasetError(path, None, "not a chatling pairs manifest; choose another --out")
    if data.get("version") != VERSION:
        raise DatasetError(path, None, f"dataset version {data.get('version')} is not {VERSION}")
    return data


def source_name(out_dir: str | Path, wanted: str, sha256: str | None) -> str:
    """``wanted`` unless another content already holds that name: then ``wanted-<hash>``.

    The same content (sha256) always gets the name it already has, so
    re-ingesting a VOD replaces its pairs even when its file was renamed.
    """
    sources = read_manifest(out_dir)["sources"]
    if sha256 is not None:
        for name, entry in sources.items():
            if entry.get("sha256") == sha256:
                return name
    entry = sources.get(wanted)
    if entry is None or entry.get("sha256") == sha256 or sha256 is None:
        return wanted
    return f"{wanted}-{sha256[:8]}"


def _span(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"first_s": None, "last_s": None, "span_s": 0.0}
    return {"first_s": min(values), "last_s": max(values), "span_s": max(values) - min(values)}


def source_stats(pairs: Sequence[Pair], info: SourceInfo) -> dict[str, Any]:
    offsets = [p.offset for p in pairs]
    return {
        "pairs": len(pairs),
        "users": len({p.user for p in pairs}),
        **_span(offsets),
        "with_transcript": sum(1 for p in pairs if p.transcript),
        "transcript_segments": info.transcript_segments,
        "filters": info.report.to_dict(),
    }


def write_source(out_dir: str | Path, pairs: Sequence[Pair], info: SourceInfo) -> Path | None:
    """Write (or replace) one source's pairs; update the manifest and stats.

    Returns the parquet file, or None when the source has no pairs (it is still
    listed, with its filter counts, but has no file: empty parquet files trip
    ``datasets.load_dataset``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    sources: dict[str, Any] = manifest["sources"]
    replaced = [
        name
        for name, entry in sources.items()
        if name == info.name or (info.sha256 is not None and entry.get("sha256") == info.sha256)
    ]
    wrong = [p.source for p in pairs if p.source != info.name][:1]
    if wrong:
        raise ValueError(f"pair of source {wrong[0]!r} written as source {info.name!r}")
    taken = {e["file"] for n, e in sources.items() if n not in replaced}
    file: str | None = f"{DATA_DIR}/{slug(info.name)}.parquet"
    n = 1
    while file in taken:
        n += 1
        file = f"{DATA_DIR}/{slug(info.name)}-{n}.parquet"
    if pairs:
        # Straight to Arrow (``Dataset.from_list`` encodes row by row: 10x slower). The
        # schema carries the features as metadata, so load_dataset("parquet") reads the
        # same types back.
        columns = {c: [getattr(p, c) for p in pairs] for c in COLUMNS}
        table = pa.Table.from_pydict(columns, schema=arrow_schema())
        _atomic_write(out_dir / file, lambda tmp: pq.write_table(table, tmp))
    else:
        file = None
    old_files = {sources[n]["file"] for n in replaced} - {file, None}
    for name in replaced:
        del sources[name]
    sources[info.name] = {
        "file": file,
        "kind": info.kind,
        "sha256": info.sha256,
        "inputs": info.inputs,
        "align_options": info.align.to_dict(),
        "filters": info.filters,
        "stats": source_stats(pairs, info),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_json(out_dir / MANIFEST, manifest)
    _write_json(out_dir / STATS, stats_of(manifest))
    for old in old_files:
        (out_dir / old).unlink(missing_ok=True)
    log.info("%s: wrote %d pairs of %s to %s", out_dir, len(pairs), info.name, file)
    return out_dir / file if file else None


def _empty() -> Any:
    from datasets import Dataset

    return Dataset.from_dict({c: [] for c in COLUMNS}, features=features())


def stats_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """stats.json: each source's counts and the totals over all sources."""
    per_source = {name: entry["stats"] for name, entry in manifest["sources"].items()}
    report = FilterReport()
    for s in per_source.values():
        report = report + FilterReport.from_dict(s["filters"])
    return {
        "sources": per_source,
        "total": {
            "sources": len(per_source),
            "pairs": sum(s["pairs"] for s in per_source.values()),
            "span_s": sum(s["span_s"] for s in per_source.values()),
            "filters": report.to_dict(),
        },
    }


def load_pairs(out_dir: str | Path, sources: Iterable[str] | None = None) -> Any:
    """All pairs (or those of ``sources``) as one ``datasets.Dataset``, source by source."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    out_dir = Path(out_dir)
    if not (out_dir / MANIFEST).exists():
        raise DatasetError(out_dir, None, "no manifest.json: not a pairs dataset (run ingest)")
    entries = read_manifest(out_dir)["sources"]
    names = list(entries) if sources is None else list(sources)
    missing = [n for n in names if n not in entries]
    if missing:
        raise DatasetError(out_dir, None, f"no source {missing[0]!r}; have: {', '.join(entries)}")
    schema = features().arrow_schema
    tables = []
    for name in names:
        if not entries[name]["file"]:
            continue  # a source without pairs
        path = out_dir / entries[name]["file"]
        try:
            tables.append(pq.read_table(path, schema=schema))
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(path, None, f"cannot read ({exc}); re-ingest {name}") from None
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return Dataset(table.cast(schema)) if tables else _empty()


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def split_pairs(
    dataset: Any,
    *,
    by: Literal["time", "source"] = "time",
    test_fraction: float = 0.1,
    test_sources: Sequence[str] | None = None,
) -> Any:
    """A ``DatasetDict(train=..., test=...)`` split by time or by whole sources.

    ``by="time"``: in each source, pairs at or after ``first + (1 - test_fraction)
    * span`` go to test. ``by="source"``: ``test_sources``, or else the last
    ``ceil(test_fraction * n)`` sources in dataset order. Either way train loses
    pairs whose target (case and spacing aside) is a test target.
    """
    from datasets import DatasetDict

    if not 0 < test_fraction < 1:
        raise ChatlingError(f"test_fraction must be between 0 and 1, not {test_fraction}")
    column_source = list(dataset["source"])
    offsets = list(dataset["offset"])
    targets = list(dataset["target"])
    sources = list(dict.fromkeys(column_source))
    if by == "time":
        bounds: dict[str, tuple[float, float]] = {}
        for s, t in zip(column_source, offsets, strict=True):
            lo, hi = bounds.get(s, (t, t))
            bounds[s] = (min(lo, t), max(hi, t))
        cut = {s: lo + (1 - test_fraction) * (hi - lo) for s, (lo, hi) in bounds.items()}
        is_test = [t >= cut[s] for s, t in zip(column_source, offsets, strict=True)]
    elif by == "source":
        chosen = set(test_sources or sources[-max(1, math.ceil(test_fraction * len(sources))) :])
        unknown = chosen - set(sources)
        if unknown:
            raise ChatlingError(f"no source {sorted(unknown)[0]!r} in the dataset")
        if len(chosen) >= len(sources):
            raise ChatlingError("a split by source needs at least one source left for training")
        is_test = [s in chosen for s in column_source]
    else:
        raise ChatlingError(f"split by 'time' or 'source', not {by!r}")
    test_idx = [i for i, x in enumerate(is_test) if x]
    test_targets = {_norm(targets[i]) for i in test_idx}
    train_idx = [
        i for i, x in enumerate(is_test) if not x and _norm(targets[i]) not in test_targets
    ]
    dropped = sum(1 for x in is_test if not x) - len(train_idx)
    log.info(
        "split by %s: %d train, %d test, %d train pairs dropped as copies of test targets",
        by,
        len(train_idx),
        len(test_idx),
        dropped,
    )
    return DatasetDict(train=dataset.select(train_idx), test=dataset.select(test_idx))
