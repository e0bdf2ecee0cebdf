"""The bot's own log as training pairs: one dataset source per logged stream.

Both ways of turning the log into pairs go through here, `chatling data from-db`
(a streamer's export, any streams since a date) and the nightly retrain
(``chatling.learn.export``: the streams since the serving adapter), so they
cut, filter and record a stream the same way: lines read through
``chatling.store.reader``, pairs made by ``filters.make_log_pairs`` with the
given alignment, and a source written with its filter report.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from chatling.core.errors import StoreError
from chatling.store.reader import LoggedStream, connect_read_only, stream_lines
from chatling.training.data.align import AlignOptions
from chatling.training.data.dataset import SourceInfo, write_source
from chatling.training.data.filters import FilterOptions, FilterReport, make_log_pairs


@dataclass(frozen=True, slots=True)
class ExportedStream:
    """One stream written as a source."""

    name: str
    stream: LoggedStream
    pairs: int
    speech: int
    """Utterances read for its transcript."""
    report: FilterReport


def export_log(
    db_path: Path,
    out: Path,
    select: Callable[[sqlite3.Connection], Iterable[LoggedStream]],
    source_name: Callable[[LoggedStream], str],
    align: AlignOptions,
    filters: FilterOptions,
) -> list[ExportedStream]:
    """Write a source into the dataset ``out`` for every stream ``select`` returns.

    The log is opened read-only (a running bot is not disturbed); a read error is a
    ``StoreError`` naming the file, and sources already written stay written."""
    db = connect_read_only(db_path)
    done: list[ExportedStream] = []
    try:
        for stream in select(db):
            lines = stream_lines(db, stream.id, filters.bots)
            name = source_name(stream)
            pairs, report = make_log_pairs(lines, name, align, filters)
            info = SourceInfo(
                name=name,
                kind="live",
                inputs={"db": str(db_path.resolve()), "stream": stream.name},
                align=align,
                filters=filters.to_dict(),
                report=report,
                transcript_segments=len(lines.speech),
            )
            write_source(out, pairs, info)
            done.append(ExportedStream(name, stream, len(pairs), len(lines.speech), report))
    except sqlite3.Error as exc:
        raise StoreError(f"{db_path}: cannot read the log ({exc})") from None
    finally:
        db.close()
    return done


__all__ = ["ExportedStream", "export_log"]
