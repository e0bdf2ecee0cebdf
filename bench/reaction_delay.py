"""How long after the streamer says a word does chat echo it? (Picks AlignOptions' window.)

For every chat message at ``t`` and every content word in it (lower case,
three letters or more, not a stop word, not an ``:emote:``), each transcript
occurrence of that word at ``s`` (a word dated by its end; segments without
word timings spread their words by characters) with ``|t - s| < max_lag``
adds the lag ``t - s`` to a histogram; negative lags are chat saying a word
before the streamer does (he reads chat aloud). Only words the streamer says
at most ``--rare`` times in the whole transcript count (the echo of a
sentence, not the topic of the hour; ``--rare 0`` counts every word).

Chance matches are measured in the same run by a baseline: the same histogram
with the chat's times shifted circularly by 30 offsets spread over the stream,
which keeps each side's own rhythm but breaks their alignment. The excess over
the baseline, less the topic floor (the median excess at lags of 60-90 s),
is chat echoing speech: the report gives its peak (5-s moving average), its
quantiles over lags 0-90 s, and the window that follows: ``delay_s`` below
which less than 5% of the echo lies, and ``window_s`` that holds 90% of it.

Datasets: the DougDoug corpus (real chat read off video frames, times
interpolated between frames; also with the raw frame times, which are late by
up to a frame interval) and, as a check of the method with a known answer, the
project's demo stream, whose chat was generated to echo lines 2-8 s (mode
3.5 s) after each line's end.

Run: ``.venv/bin/python bench/reaction_delay.py [--rare 5] [--bin 1]``
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, print_table, write_result
from chatling.chatlog import read_chat_log
from chatling.core.events import ChatMessage
from chatling.training.data.align import Segment, spread_words
from devtools.dougdoug_corpus import DEFAULT_DIR, load_corpus

STOP = frozenset(
    """the and for are but not you all any can had her was one our out day get has him his
    how man new now old see two way who boy did its let put say she too use that with have
    this will your from they know want been good much some time very when come here just like
    long make many more only over such take than them well were what there their would about
    which could other into then these also back after where yeah yes okay chat going gonna
    really right think thing things because doing being does dont don't i'm it's that's
    you're we're they're can't won't didn't isn't lol lmao omg""".split()
)
_TOKEN = re.compile(r":[\w-]+:|[a-z0-9']+")


def content_words(text: str) -> set[str]:
    """Lower-case words of three letters or more that are not stop words or emotes."""
    out = set()
    for tok in _TOKEN.findall(text.casefold()):
        if tok.startswith(":"):
            continue
        tok = re.sub(r"(.)\1{2,}", r"\1", tok.strip("'"))  # "DOUGGGG" -> "doug"
        if len(tok) >= 3 and tok not in STOP and not tok.isdigit():
            out.add(tok)
    return out


def word_times(segments: Sequence[Segment], rare: int) -> dict[str, list[float]]:
    """Content word -> sorted times the streamer said it (words said more than ``rare``
    times left out; ``rare`` 0 keeps all)."""
    times: dict[str, list[float]] = defaultdict(list)
    for seg in segments:
        for w in seg.words or spread_words(seg):
            for tok in content_words(w.text):
                times[tok].append(w.end)
    for v in times.values():
        v.sort()
    return {w: v for w, v in times.items() if not rare or len(v) <= rare}


def histogram(
    messages: Sequence[tuple[float, set[str]]],
    times: dict[str, list[float]],
    shift: float,
    period: float,
    max_lag: float,
    bin_s: float,
) -> list[int]:
    """Counts of lags ``t - s`` in bins over ``[-max_lag, max_lag)``."""
    bins = [0] * round(2 * max_lag / bin_s)
    for t0, words in messages:
        t = (t0 + shift) % period
        for w in words:
            occ = times.get(w)
            if not occ:
                continue
            for s in occ[
                bisect.bisect_right(occ, t - max_lag) : bisect.bisect_right(occ, t + max_lag)
            ]:
                b = int((t - s + max_lag) / bin_s)
                if 0 <= b < len(bins):
                    bins[b] += 1
    return bins


def measure(
    name: str,
    segments: Sequence[Segment],
    chat: Sequence[ChatMessage],
    *,
    rare: int,
    max_lag: float = 90.0,
    bin_s: float = 1.0,
    shifts: int = 30,
) -> dict:
    times = word_times(segments, rare)
    messages = [(m.offset, content_words(m.text)) for m in chat]
    messages = [(t, w) for t, w in messages if w]
    period = max(max(m.offset for m in chat), max(s.end for s in segments)) + 1.0
    real = histogram(messages, times, 0.0, period, max_lag, bin_s)
    # Shifts of at least 2 * max_lag, spread evenly over the rest of the stream.
    lo, hi = 2 * max_lag, period - 2 * max_lag
    offsets = [lo + (hi - lo) * i / (shifts - 1) for i in range(shifts)]
    base = [histogram(messages, times, d, period, max_lag, bin_s) for d in offsets]
    mean = [statistics.fmean(col) for col in zip(*base, strict=True)]
    sd = [statistics.pstdev(col) for col in zip(*base, strict=True)]
    lags = [-max_lag + (i + 0.5) * bin_s for i in range(len(real))]
    excess = [r - m for r, m in zip(real, mean, strict=True)]
    far = [e for lag, e in zip(lags, excess, strict=True) if abs(lag) >= 60.0]
    floor = statistics.median(far) if far else 0.0
    echo = [max(e - floor, 0.0) if lag > 0 else 0.0 for lag, e in zip(lags, excess, strict=True)]
    k = max(1, round(5.0 / bin_s))  # 5-second moving average for the peak
    smooth = [statistics.fmean(echo[max(0, i - k // 2) : i + k // 2 + 1]) for i in range(len(echo))]
    peak = max(range(len(smooth)), key=smooth.__getitem__)
    total = sum(echo)

    def quantile(q: float) -> float:
        acc = 0.0
        for lag, v in zip(lags, echo, strict=True):
            acc += v
            if total and acc >= q * total:
                return round(lag + bin_s / 2, 2)
        return max_lag

    return {
        "dataset": name,
        "rare": rare,
        "messages": len(chat),
        "messages_with_words": len(messages),
        "transcript_segments": len(segments),
        "matches": sum(real),
        "baseline_matches": round(sum(mean), 1),
        "topic_floor_per_bin": round(floor, 2),
        "peak_lag_s": round(lags[peak], 2),
        "echo_q05_s": quantile(0.05),
        "echo_q10_s": quantile(0.10),
        "echo_q50_s": quantile(0.50),
        "echo_q90_s": quantile(0.90),
        "histogram": [
            {
                "lag_s": round(lags[i], 2),
                "real": real[i],
                "baseline": round(mean[i], 2),
                "baseline_sd": round(sd[i], 2),
                "excess": round(excess[i], 2),
            }
            for i in range(len(real))
        ],
    }


def coarse(result: dict, width_s: float = 5.0) -> list[tuple[float, int, float, float]]:
    """The histogram in ``width_s`` bins: (lag from, real, baseline, z of the excess)."""
    out: dict[float, list[float]] = {}
    for h in result["histogram"]:
        key = width_s * (h["lag_s"] // width_s)
        acc = out.setdefault(key, [0, 0.0, 0.0])
        acc[0] += h["real"]
        acc[1] += h["baseline"]
        acc[2] += h["baseline_sd"] ** 2
    return [
        (lag, int(r), round(b, 1), round((r - b) / max(v**0.5, 1.0), 1))
        for lag, (r, b, v) in sorted(out.items())
    ]


def recommend(result: dict) -> dict[str, float]:
    """delay_s: whole seconds below the echo's 5% quantile (at least 1);
    window_s: its 90% quantile rounded up to 15 s."""
    delay = max(1.0, float(int(result["echo_q05_s"])))
    window = 15.0 * -(-result["echo_q90_s"] // 15.0)
    return {"delay_s": delay, "window_s": window}


def demo_dataset() -> tuple[list[Segment], list[ChatMessage]]:
    """The demo stream's script (espeak speaks ~3 words a second) and its chat."""
    script = json.loads((ROOT / "data" / "demo" / "script.json").read_text())
    segments = [
        Segment(float(x["start"]), float(x["start"]) + 0.33 * len(x["text"].split()), x["text"])
        for x in script
    ]
    chat = [m for m in read_chat_log(ROOT / "data" / "demo" / "chat.json") if not m.is_bot]
    return segments, chat


def main() -> None:
    parser = argparse.ArgumentParser(description="chat's echo delay after the streamer's words")
    parser.add_argument("--rare", type=int, default=5, help="max times a word is said (0: all)")
    parser.add_argument("--bin", type=float, default=1.0, help="histogram bin (s)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()

    runs = []
    if args.corpus.exists():
        for timing, rare in (("interpolate", args.rare), ("frame", args.rare), ("interpolate", 0)):
            corpus = load_corpus(args.corpus, timing=timing)
            name = f"dougdoug, {timing} times, " + (
                f"words said <= {rare}x" if rare else "all words"
            )
            runs.append(measure(name, corpus.segments, corpus.messages, rare=rare, bin_s=args.bin))
    else:
        print(f"{args.corpus} is absent: measuring the demo stream only", file=sys.stderr)
    segments, chat = demo_dataset()
    runs.append(
        measure(
            "demo stream (known: 2-8 s after a line, all words)",
            segments,
            chat,
            rare=0,
            max_lag=30.0,
            bin_s=args.bin,
        )
    )
    rows = [
        (
            r["dataset"],
            r["messages_with_words"],
            r["matches"],
            r["baseline_matches"],
            r["peak_lag_s"],
            r["echo_q05_s"],
            r["echo_q10_s"],
            r["echo_q50_s"],
            r["echo_q90_s"],
        )
        for r in runs
    ]
    print_table(
        "Chat echoes the streamer's words: lag word -> chat (excess over time-shifted chat)",
        ["dataset", "msgs", "matches", "baseline", "peak s", "q05 s", "q10 s", "q50 s", "q90 s"],
        rows,
    )
    main_run = runs[0]
    print(f"\n{main_run['dataset']} in 5-s bins: lag from, real, baseline, z")
    for lag, real, base, z in coarse(main_run):
        print(f"  {lag:6.0f}  {real:5d}  {base:7.1f}  {z:5.1f}  {'#' * max(0, round(z))}")
    advice = recommend(main_run)
    print(
        f"\nrecommended AlignOptions: delay_s={advice['delay_s']:g} window_s={advice['window_s']:g}"
    )
    path = write_result(
        "reaction_delay",
        {"bin_s": args.bin, "shifts": 30, "recommended": advice, "results": runs},
    )
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
