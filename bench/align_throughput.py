"""Can 100k chat messages on a four-hour transcript be aligned and written in under 10 s?

Real messages (the DougDoug corpus, the Northernlion chat log, the demo chat)
are laid end to end, copy after copy, over a four-hour stream until there are
100,000; the transcript is the DougDoug ASR transcript repeated over the same
four hours (segment times only, as that export has no word timings, so the
index spreads words over segments). Stages timed: filters (bots, commands,
links, the safety block list, copypasta), alignment (``chatling.training.data.align.align``),
writing the parquet source with stats and manifest (``chatling.training.data.dataset``), and
the total. The text rules run once per distinct text and the repeated logs
hold few distinct texts, so the filters' cost without that memo is measured
too, on 5,000 messages, and extrapolated to 100k all-distinct texts.
Baseline in the same run: ``align_naive`` (a linear scan per message) on the
first 1,000 messages, extrapolated linearly to 100k; its pairs are checked
equal to the fast ones.

Run: ``.venv/bin/python bench/align_throughput.py [--messages 100000] [--hours 4]``
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, PeakMemory, now, print_table, write_result
from chatling.chatlog import read_chat_log
from chatling.core.events import ChatMessage
from chatling.core.settings import Settings
from chatling.training.data.align import AlignOptions, Segment, align, align_naive
from chatling.training.data.dataset import SourceInfo, write_source
from chatling.training.data.filters import FilterOptions, Removed, reason, select
from devtools.dougdoug_corpus import DEFAULT_DIR, load_corpus

NORTHERNLION = ROOT.parent / "shared" / "data" / "chat" / "northernlion-1087079172.json"


def corpus_messages() -> list[list[ChatMessage]]:
    """Each real chat log as offset-sorted messages starting near 0."""
    logs = [read_chat_log(ROOT / "data" / "demo" / "chat.json")]
    if NORTHERNLION.exists():
        logs.append(read_chat_log(NORTHERNLION))
    if DEFAULT_DIR.exists():
        logs.append(load_corpus(DEFAULT_DIR).messages)
    return logs


def stream(total: int, hours: float) -> tuple[list[ChatMessage], list[Segment]]:
    """``total`` messages over ``hours``: the logs back to back, repeated, times rescaled."""
    logs = corpus_messages()
    pool: list[ChatMessage] = []
    base = 0.0
    while len(pool) < total:
        for log in logs:
            for m in log:
                pool.append(dataclasses.replace(m, offset=base + m.offset, message_id=None))
            base += log[-1].offset + 1.0
    pool = pool[:total]
    scale = hours * 3600.0 / (pool[-1].offset + 1.0)
    messages = [dataclasses.replace(m, offset=m.offset * scale) for m in pool]
    if DEFAULT_DIR.exists():
        unit = load_corpus(DEFAULT_DIR).segments
        period = unit[-1].end + 5.0
    else:  # the demo script, if the corpus is absent
        import json

        script = json.loads((ROOT / "data" / "demo" / "script.json").read_text())
        unit = [Segment(x["start"], x["start"] + 3.0, x["text"]) for x in script]
        period = 180.0
    segments = []
    k = 0
    while k * period < hours * 3600.0:
        segments += [Segment(s.start + k * period, s.end + k * period, s.text) for s in unit]
        k += 1
    return messages, segments


def main() -> None:
    parser = argparse.ArgumentParser(description="alignment throughput")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--naive", type=int, default=1000, help="messages for the baseline")
    args = parser.parse_args()

    messages, segments = stream(args.messages, args.hours)
    options = AlignOptions()
    filters = FilterOptions.from_settings(Settings())
    out = Path(tempfile.mkdtemp(prefix="chatling-align-bench-"))
    try:
        with PeakMemory() as memory:
            t0 = now()
            selection = select(messages, filters)
            t1 = now()
            pairs = align(selection.targets, selection.context, segments, "bench", options)
            t2 = now()
            info = SourceInfo(
                "bench", "vod", None, report=selection.report, align=options,
                transcript_segments=len(segments),
            )  # fmt: skip
            write_source(out, pairs, info)
            t3 = now()
        size = sum(f.stat().st_size for f in out.rglob("*.parquet"))
    finally:
        shutil.rmtree(out)

    sample = messages[:: max(1, len(messages) // 5000)][:5000]
    removed = Removed()
    t_s = now()
    for m in sample:
        reason(m, filters, removed)  # no memo: every text checked
    per_text = (now() - t_s) / len(sample)

    sub_targets = selection.targets[: args.naive]
    t4 = now()
    naive = align_naive(sub_targets, selection.context, segments, "bench", options)
    t5 = now()
    same = naive == pairs[: len(naive)]
    naive_per_msg = (t5 - t4) / max(len(sub_targets), 1)
    fast_per_msg = (t2 - t1) / max(len(pairs), 1)

    words = sum(len(s.text.split()) for s in segments)
    unique = len({m.text.strip() for m in messages})
    rows = [
        ("filters (select)", len(messages), f"{t1 - t0:.2f}"),
        ("filters, all distinct, extrapolated", len(messages), f"{per_text * len(messages):.1f}"),
        ("align (bisect index)", len(pairs), f"{t2 - t1:.2f}"),
        ("write parquet + stats", len(pairs), f"{t3 - t2:.2f}"),
        ("total", len(messages), f"{t3 - t0:.2f}"),
        (f"naive align, {len(sub_targets)} msgs", len(sub_targets), f"{t5 - t4:.2f}"),
        ("naive align, extrapolated", len(pairs), f"{naive_per_msg * len(pairs):.0f}"),
    ]
    print_table(
        f"{len(messages)} messages, {args.hours:g} h transcript ({len(segments)} segments, "
        f"{words} words); window [t-{options.window_s:g}, t-{options.delay_s:g}] s, "
        f"{options.chat_messages} chat lines",
        ["stage", "items", "seconds"],
        rows,
    )
    print(
        f"\nalign speed-up over the naive scan: {naive_per_msg / fast_per_msg:.0f}x; "
        f"same pairs on the first {len(naive)}: {same}; peak RSS {memory.peak_bytes >> 20} MiB; "
        f"parquet {size >> 10} KiB; {unique} distinct texts (the text rules run once each)"
    )
    path = write_result(
        "align_throughput",
        {
            "messages": len(messages),
            "hours": args.hours,
            "segments": len(segments),
            "words": words,
            "align_options": options.to_dict(),
            "filters": selection.report.to_dict(),
            "pairs": len(pairs),
            "distinct_texts": unique,
            "filters_all_distinct_extrapolated_s": round(per_text * len(messages), 1),
            "seconds": {
                "filters": round(t1 - t0, 3),
                "align": round(t2 - t1, 3),
                "write": round(t3 - t2, 3),
                "total": round(t3 - t0, 3),
            },
            "naive": {
                "messages": len(sub_targets),
                "seconds": round(t5 - t4, 3),
                "extrapolated_s": round(naive_per_msg * len(pairs), 1),
                "same_pairs": same,
            },
            "speedup_align": round(naive_per_msg / fast_per_msg, 1),
            "peak_rss_mib": memory.peak_bytes >> 20,
            "parquet_bytes": size,
        },
    )
    print(f"wrote {path.relative_to(ROOT)}")
    if not same:
        sys.exit("fast and naive alignment disagree")


if __name__ == "__main__":
    main()
