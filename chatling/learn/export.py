"""The retrain's dataset: pairs from the streams logged since the serving adapter, plus
the dataset that adapter learnt from.

A run trains on everything the serving adapter knew and what the bot has logged
since, so nothing learnt is forgotten and nothing is learnt twice:
``export_pairs`` writes one source per stream active since the run that
promoted the serving adapter (a stream still live then is exported again and
replaces its older copy) through ``chatling.training.data.export``, as
``chatling data from-db`` does;
``copy_base_data`` adds every source of the older dataset that the export did
not replace.
"""

from __future__ import annotations

from pathlib import Path

from chatling.core.settings import Settings
from chatling.store.reader import LoggedStream, streams


def stream_is_new(stream: LoggedStream, since: float | None) -> bool:
    """Whether ``stream`` has logs after ``since`` (None: everything is new)."""
    if since is None:
        return True
    ended = stream.ended_at
    return stream.started_at >= since or ended is None or ended >= since


def export_pairs(
    db_path: Path, since: float | None, settings: Settings, out: Path
) -> tuple[int, list[str]]:
    """Write the pairs of streams active since ``since`` into the dataset ``out``."""
    from chatling.training.data.align import AlignOptions
    from chatling.training.data.export import export_log
    from chatling.training.data.filters import FilterOptions

    done = export_log(
        db_path,
        out,
        lambda db: [s for s in streams(db) if stream_is_new(s, since)],
        lambda stream: f"live-stream-{stream.id}",
        AlignOptions(),
        FilterOptions.from_settings(settings),
    )
    return sum(d.pairs for d in done), [d.name for d in done]


def copy_base_data(base: Path, out: Path, skip: set[str]) -> int:
    """Copy every source of the dataset ``base`` into ``out`` (except ``skip``)."""
    from chatling.training.data.dataset import SourceInfo, load_pairs, read_manifest, write_source
    from chatling.training.data.pairs import Pair

    manifest = read_manifest(base)
    rows = load_pairs(base)
    by_source: dict[str, list[Pair]] = {}
    for row in rows:
        pair = Pair.from_row(row)
        by_source.setdefault(pair.source, []).append(pair)
    total = 0
    for name, pairs in by_source.items():
        if name in skip:
            continue
        entry = manifest["sources"].get(name, {})
        kind = entry.get("kind", "vod")
        info = SourceInfo(
            name=name,
            kind="live" if kind == "live" else "vod",
            sha256=entry.get("sha256"),
            inputs={**entry.get("inputs", {}), "copied_from": str(base)},
        )
        write_source(out, pairs, info)
        total += len(pairs)
    return total


__all__ = ["copy_base_data", "export_pairs", "stream_is_new"]
