"""``chatling data ...``: build the training pairs dataset from VODs and the live log.

    chatling data ingest --vod FILE --chat FILE [--transcript FILE] [--format auto]
                         [--stream-start ISO|UNIX] --out DIR
    chatling data from-db --db FILE --out DIR [--since DATE]
    chatling data inspect FILE

(also ``python -m chatling.cli.data data ingest ...``, the same without the rest
of the CLI).
``ingest`` checks its inputs first (chat log, VOD), then transcribes the VOD
(cached: a second run reads the transcript back), aligns and filters the chat
into pairs and writes them into ``DIR`` as one source (re-ingesting the same
VOD replaces it). ``from-db`` does the same for each stream of the bot's own
SQLite log: viewers' messages are the targets; the bot's replies and bot
accounts' messages never are, except a bot post a moderator marked good (and
nobody bad): it becomes a target like a viewer's message. Messages moderators
deleted or marked bad are left out altogether (logs of schema version 2 on;
older logs have no marks). Both end with a summary on stdout; progress and
logs go to stderr. ``chatling/cli/main.py`` calls ``add_data_commands(subparsers)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chatling.cli.common import setup_logging
from chatling.core.errors import AudioError, ChatlingError
from chatling.training.data.align import AlignOptions
from chatling.training.data.filters import (
    FilterOptions,
    FilterReport,
    Removed,
    make_pairs,
)

log = logging.getLogger(__name__)


def parse_time(text: str, what: str) -> float:
    """UNIX seconds from ``1700000000`` or an ISO date/time (no zone: UTC)."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return value
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ChatlingError(
            f"{what} {text!r} is neither UNIX seconds nor an ISO date "
            "(2024-05-18 or 2024-05-18T19:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _align_options(args: argparse.Namespace) -> AlignOptions:
    defaults = AlignOptions()
    return AlignOptions(
        window_s=args.window if args.window is not None else defaults.window_s,
        delay_s=args.delay if args.delay is not None else defaults.delay_s,
        chat_messages=args.chat_messages
        if args.chat_messages is not None
        else defaults.chat_messages,
    )


def _summary(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(title)
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")


def _drops(report: FilterReport) -> str:
    counts = report.to_dict()
    parts = [f"{k} {v}" for k, v in counts.items() if k not in ("total", "kept") and v]
    return ", ".join(parts) or "none"


# --------------------------------------------------------------------------- ingest


def _cmd_ingest(args: argparse.Namespace) -> int:
    from chatling.chatlog import read_chat_log_full
    from chatling.core.settings import load_settings
    from chatling.training.data.dataset import SourceInfo, read_manifest, source_name, write_source
    from chatling.training.data.vod import (
        VodOptions,
        file_sha256,
        read_transcript_file,
        transcribe_vod,
    )

    settings = load_settings(args.env_file)
    setup_logging(args.verbose)
    if args.vod is None and args.transcript is None:
        raise ChatlingError("give the VOD (--vod FILE), or its transcript (--transcript FILE)")
    out = Path(args.out)
    read_manifest(out)  # a bad --out fails now, not after transcribing
    align_options = _align_options(args)
    stream_start = parse_time(args.stream_start, "--stream-start") if args.stream_start else None
    chat_log = read_chat_log_full(
        Path(args.chat), args.format, stream_start, timezone=args.timezone
    )
    messages = chat_log.messages
    removed = Removed.from_moderation(messages, chat_log.moderation)
    vod = Path(args.vod) if args.vod else None
    if vod is not None and not vod.is_file():
        raise AudioError(vod, None, "no such audio or video file; check the path")
    filters = FilterOptions.from_settings(settings)

    cached_note = "read from --transcript"
    if args.transcript:
        segments = read_transcript_file(args.transcript)
        sha = file_sha256(vod) if vod else None
    else:
        assert vod is not None
        options = VodOptions.from_settings(settings.audio, batch_size=args.batch_size)
        transcript = transcribe_vod(
            vod, options, cache_dir=Path(args.cache_dir), progress=not args.no_progress
        )
        segments, sha = transcript.segments, transcript.sha256
        cached_note = "from cache" if transcript.cached else "transcribed now"
    name = args.source or source_name(out, (vod or Path(args.transcript)).stem, sha)
    pairs, report = make_pairs(messages, segments, name, align_options, filters, removed)
    inputs = {"chat": str(Path(args.chat).resolve())}
    if vod:
        inputs["vod"] = str(vod.resolve())
    if args.transcript:
        inputs["transcript"] = str(Path(args.transcript).resolve())
    info = SourceInfo(
        name=name,
        kind="vod",
        sha256=sha,
        inputs=inputs,
        align=align_options,
        filters=filters.to_dict(),
        report=report,
        transcript_segments=len(segments),
    )
    path = write_source(out, pairs, info)
    total = json.loads((out / "stats.json").read_text())["total"]
    offsets = [p.offset for p in pairs]
    span = f"{min(offsets):.0f}-{max(offsets):.0f} s" if offsets else "-"
    _summary(
        f"ingested {name}",
        [
            ("transcript", f"{len(segments)} segments ({cached_note})"),
            ("chat messages", str(report.total)),
            ("pairs kept", f"{report.kept} ({span})"),
            ("dropped", _drops(report)),
            (
                "context",
                f"speech [t-{align_options.window_s:g}s, t-{align_options.delay_s:g}s], "
                f"{align_options.chat_messages} chat lines",
            ),
            ("written", str(path)),
            ("dataset", f"{out} ({total['sources']} sources, {total['pairs']} pairs)"),
        ],
    )
    return 0


# --------------------------------------------------------------------------- from-db


def _cmd_from_db(args: argparse.Namespace) -> int:
    from chatling.core.settings import load_settings
    from chatling.store.reader import streams
    from chatling.training.data.dataset import read_manifest, slug
    from chatling.training.data.export import export_log

    settings = load_settings(args.env_file)
    setup_logging(args.verbose)
    db_path = Path(args.db)
    out = Path(args.out)
    read_manifest(out)
    since = parse_time(args.since, "--since") if args.since else None
    done = export_log(
        db_path,
        out,
        lambda db: streams(db, since),
        lambda stream: f"{slug(db_path.stem)}-stream-{stream.id}",
        _align_options(args),
        FilterOptions.from_settings(settings),
    )
    rows = [(d.name, f"{d.report.kept} pairs ({d.stream.name}; {d.speech} utt.)") for d in done]
    total_report = FilterReport()
    for d in done:
        total_report = total_report + d.report
    if not rows:
        when = f" since {args.since}" if args.since else ""
        raise ChatlingError(f"{db_path}: no streams{when} in this log; nothing written")
    rows += [
        ("chat messages", str(total_report.total)),
        ("pairs kept", str(total_report.kept)),
        ("dropped", _drops(total_report)),
        ("dataset", str(out)),
    ]
    _summary(f"pairs from {db_path} ({len(done)} streams)", rows)
    return 0


# --------------------------------------------------------------------------- inspect


def _cmd_inspect(args: argparse.Namespace) -> int:
    from chatling.chatlog import inspect_chat_log
    from chatling.cli.inspect import info_lines

    stream_start = parse_time(args.stream_start, "--stream-start") if args.stream_start else None
    # A ChatLogError goes up to main: one line on stderr, exit 2; stdout holds only the summary.
    info = inspect_chat_log(Path(args.file), args.format, stream_start, timezone=args.timezone)
    for line in info_lines(info):
        print(line)
    return 0


# --------------------------------------------------------------------------- parser


def _add_align_args(parser: argparse.ArgumentParser) -> None:
    d = AlignOptions()
    parser.add_argument(
        "--window",
        type=float,
        default=None,
        metavar="S",
        help=f"oldest speech in a context: t - S (default {d.window_s:g})",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=None,
        metavar="S",
        help=f"newest speech in a context: t - S (default {d.delay_s:g})",
    )
    parser.add_argument(
        "--chat-messages",
        type=int,
        default=None,
        metavar="K",
        help=f"chat lines in a context (default {d.chat_messages})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_data_commands(subparsers: Any) -> None:
    """Add ``data ingest``, ``data from-db`` and ``data inspect`` to the ``chatling`` parser."""
    from chatling.chatlog import FORMATS
    from chatling.training.data.vod import DEFAULT_CACHE_DIR

    data = subparsers.add_parser("data", help="build training pairs from VODs and the live log")
    sub = data.add_subparsers(dest="data_command", required=True)

    ingest = sub.add_parser(
        "ingest",
        help="VOD + chat log -> pairs in a dataset directory",
        description="Transcribes the VOD (cached by content), aligns the chat log to it and "
        "writes (context -> chat message) pairs into --out as one source; re-ingesting the "
        "same VOD replaces its pairs.",
    )
    ingest.add_argument("--vod", default=None, help="audio or video file (any FFmpeg format)")
    ingest.add_argument("--chat", required=True, help="chat log of the VOD")
    ingest.add_argument(
        "--transcript",
        default=None,
        help="use this transcript (JSON/JSONL segments) instead of Whisper",
    )
    ingest.add_argument(
        "--format",
        default="auto",
        choices=("auto", *FORMATS),
        help="chat log format (default: detect)",
    )
    ingest.add_argument(
        "--stream-start",
        default=None,
        metavar="ISO|UNIX",
        help="stream start, for chat logs with wall-clock times",
    )
    ingest.add_argument(
        "--timezone", default=None, help="time zone of local-time logs (Chatterino)"
    )
    ingest.add_argument("--out", required=True, help="dataset directory (created if new)")
    ingest.add_argument("--source", default=None, help="source name (default: the VOD's name)")
    ingest.add_argument(
        "--batch-size", type=int, default=0, help="Whisper batch size (0: sequential)"
    )
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest.add_argument(
        "--cache-dir",
        default=str(DEFAULT_CACHE_DIR),
        help="transcript cache (default: data/cache/transcripts)",
    )
    _add_align_args(ingest)
    ingest.set_defaults(func=_cmd_ingest)

    from_db = sub.add_parser(
        "from-db",
        help="the bot's SQLite log -> pairs (one source per stream)",
        description="Builds pairs from the live log: viewers' chat messages against the "
        "speech logged before them. The bot's own replies and bot accounts are never targets.",
    )
    from_db.add_argument("--db", required=True, help="chatling SQLite log")
    from_db.add_argument("--out", required=True, help="dataset directory (created if new)")
    from_db.add_argument(
        "--since",
        default=None,
        metavar="DATE",
        help="only streams started at or after (ISO date or UNIX)",
    )
    _add_align_args(from_db)
    from_db.set_defaults(func=_cmd_from_db)

    inspect = sub.add_parser("inspect", help="summarise a chat log (format, counts, times)")
    inspect.add_argument("file", help="chat log file")
    inspect.add_argument("--format", default="auto", choices=("auto", *FORMATS))
    inspect.add_argument("--stream-start", default=None, metavar="ISO|UNIX")
    inspect.add_argument("--timezone", default=None, help="time zone of local-time logs")
    inspect.set_defaults(func=_cmd_inspect)


def main(argv: list[str] | None = None) -> int:
    """``python -m chatling.cli.data ...``: these commands without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="chatling")
    parser.add_argument("--env-file", default=".env", help="settings file (default: .env)")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ChatlingError as exc:
        print(f"chatling: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
