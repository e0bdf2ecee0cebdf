"""How fast is the safety filter, and what does each of its steps buy? (issue 13)

Times ``SafetyFilter.check`` per candidate on 10,000 lines, real chat (the
demo chat, the Northernlion log and the DougDoug corpus in ``../shared/data``,
read in place) and hostile lines (``tests/data/safety_corpus.txt`` and the
payloads of ``tests/hardening/data/hostile_chat.jsonl``), each with 20 lines
of recent chat, for the filter before issue 13 (``bench/_safety_baseline.py``,
a copy of the old ``chatling/safety/filter.py``) and after, interleaved in one run.

Then the rates: on the corpus' validation and test parts, the share of
must-block lines that pass and of must-pass lines blocked; on real chat
treated as bot text, the share the content rules block (every reason but
``empty``, ``blank``, ``too_long``, ``command``, ``mention`` and
``duplicate_of_chat``, which needs recent chat and is not exercised); and an
ablation: the same numbers with one step turned off at a time ("unicode data"
puts the old hand-made ``fold`` back).

Run: ``nice -n 10 .venv/bin/python bench/safety.py [--lines 10000]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import chatling.safety.filter as safety  # noqa: E402
import chatling.safety.terms as safety_terms  # noqa: E402
from bench import _safety_baseline as baseline  # noqa: E402
from bench._common import percentile, print_table, write_result  # noqa: E402
from chatling.chatlog import read_chat_log  # noqa: E402
from chatling.core.events import ChatMessage  # noqa: E402
from chatling.safety import ALL_STEPS, SafetyFilter, load_blocked_terms  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CORPUS = ROOT / "tests" / "data" / "safety_corpus.txt"
HELDOUT = ROOT / "tests" / "data" / "safety_heldout.txt"
OLD_CORPUS = ROOT / "tests" / "hardening" / "data" / "hostile_chat.jsonl"
FORM_REASONS = {"empty", "blank", "too_long", "command", "mention", "duplicate_of_chat"}


def load_corpus(path: Path = CORPUS) -> list[tuple[str, str, str, str]]:
    """(category, expect, text, part) of every corpus line; parts alternate val/test."""
    rows = []
    for line in path.read_text("utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        category, expect, text = line.split("\t")
        text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
        rows.append((category, expect, text, "val" if len(rows) % 2 == 0 else "test"))
    return rows


def real_chat() -> dict[str, list[str]]:
    logs = {"demo": [m.text for m in read_chat_log(ROOT / "data" / "demo" / "chat.json")]}
    nl = SHARED / "chat" / "northernlion-1087079172.json"
    if nl.exists():
        logs["northernlion"] = [m.text for m in read_chat_log(nl)]
    doug = SHARED / "dougdoug-takeover-europe" / "chat_frames.jsonl"
    if doug.exists():
        from devtools.dougdoug_corpus import read_chat

        logs["dougdoug"] = [m.text for m in read_chat(doug)[0]]
    return logs


def hostile_lines() -> list[str]:
    lines = [text for _c, _e, text, _p in load_corpus()]
    for raw in OLD_CORPUS.read_text("utf-8").splitlines():
        lines.append(json.loads(raw)["payload"])
    return lines


@contextlib.contextmanager
def old_fold() -> Iterator[None]:
    """The new filter with the old hand-made folding (the "unicode data" ablation)."""
    saved = safety.fold, safety_terms.fold
    safety.fold = safety_terms.fold = baseline.fold
    try:
        yield
    finally:
        safety.fold, safety_terms.fold = saved


def rates(check, corpus, logs) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in ("val", "test"):
        rows = [r for r in corpus if r[3] == part]
        bad = [r for r in rows if r[1] == "block"]
        good = [r for r in rows if r[1] == "pass"]
        out[f"{part}_unsafe_pass"] = sum(check(r[2]) == "ok" for r in bad) / len(bad)
        out[f"{part}_harmless_blocked"] = sum(check(r[2]) != "ok" for r in good) / len(good)
    total = blocked = 0
    for texts in logs.values():
        for text in texts:
            total += 1
            blocked += check(text).split(":")[0] not in FORM_REASONS | {"ok"}
    out["real_chat_content_blocked"] = blocked / max(total, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    args = parser.parse_args()
    terms = load_blocked_terms(ROOT / "prompts" / "blocked_terms.txt")
    old = baseline.SafetyFilter([t for t in terms if not t.startswith("!")], bot_name="chatling")
    new = SafetyFilter(terms, bot_name="chatling")
    logs = real_chat()
    real = [t for texts in logs.values() for t in texts]
    hostile = hostile_lines()
    rng = random.Random(13)
    n_hostile = min(args.lines // 5, len(hostile) * 10)
    lines = rng.sample(real, min(len(real), args.lines - n_hostile))
    lines += [rng.choice(hostile) for _ in range(args.lines - len(lines))]
    rng.shuffle(lines)
    recent = [ChatMessage(offset=0.0, user=f"v{i}", text=t) for i, t in enumerate(real[:20])]

    def timed(flt, text: str) -> tuple[float, float]:
        cpu, start = time.thread_time(), time.perf_counter()
        flt.check(text, now=0.0, reply_to_user="viewer", recent_chat=recent)
        return (time.perf_counter() - start) * 1000, (time.thread_time() - cpu) * 1000

    for text in lines[:200]:  # warm caches and the classifier
        old.check(text, now=0.0, reply_to_user="viewer", recent_chat=recent)
        new.check(text, now=0.0, reply_to_user="viewer", recent_chat=recent)
    times: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    load_before = os.getloadavg()[0]
    for text in lines:
        times["before"].append(timed(old, text))
        times["after"].append(timed(new, text))
    timing = {}
    for k, v in times.items():
        wall, cpu = [w for w, _ in v], [c for _, c in v]
        timing[k] = {
            "wall_p50_ms": round(percentile(wall, 50), 3),
            "wall_p99_ms": round(percentile(wall, 99), 3),
            "cpu_p50_ms": round(percentile(cpu, 50), 3),
            "cpu_p99_ms": round(percentile(cpu, 99), 3),
            "wall_max_ms": round(max(wall), 2),
        }
    load = (load_before, os.getloadavg()[0])
    print_table(
        f"safety filter, time per candidate ({len(lines)} lines: {len(lines) - n_hostile} "
        f"real, {n_hostile} hostile; 20 lines of recent chat; load average {load[0]:.1f} "
        f"-> {load[1]:.1f} on {os.cpu_count()} cores; cpu = this thread's CPU time)",
        ["filter", "wall p50 ms", "wall p99 ms", "cpu p50 ms", "cpu p99 ms", "wall max ms"],
        [[k, *v.values()] for k, v in timing.items()],
    )

    corpus = load_corpus()

    def reason_of(flt):
        return lambda t: flt.check(t, now=0.0, reply_to_user=None, recent_chat=[]).reason

    variants: dict[str, dict[str, float]] = {
        "before (old filter)": rates(reason_of(old), corpus, logs)
    }
    variants["after (all steps)"] = rates(reason_of(new), corpus, logs)
    with old_fold():
        variants["after, old folding (no unicode data)"] = rates(reason_of(new), corpus, logs)
    for step in sorted(ALL_STEPS):
        flt = SafetyFilter(terms, bot_name="chatling", steps=ALL_STEPS - {step})
        variants[f"after, without {step}"] = rates(reason_of(flt), corpus, logs)
    print_table(
        f"rates on tests/data/safety_corpus.txt ({len(corpus)} lines) and real chat "
        f"({sum(len(v) for v in logs.values())} messages: {', '.join(logs)})",
        ["variant", "val unsafe pass", "val harmless blocked", "test unsafe pass",
         "test harmless blocked", "real chat content blocked"],
        [[k, *(f"{v[c]:.1%}" for c in ("val_unsafe_pass", "val_harmless_blocked",
          "test_unsafe_pass", "test_harmless_blocked", "real_chat_content_blocked"))]
         for k, v in variants.items()],
    )  # fmt: skip
    held = load_corpus(HELDOUT)
    heldout = {}
    for name, flt in (("before", old), ("after", new)):
        check = reason_of(flt)
        unsafe = [r[2] for r in held if r[1] == "block"]
        harmless = [r[2] for r in held if r[1] == "pass"]
        heldout[name] = {
            "unsafe_pass": f"{sum(check(t) == 'ok' for t in unsafe)}/{len(unsafe)}",
            "harmless_blocked": f"{sum(check(t) != 'ok' for t in harmless)}/{len(harmless)}",
        }
    print_table(
        "held-out lines (tests/data/safety_heldout.txt, written after tuning)",
        ["filter", "unsafe pass", "harmless blocked"],
        [[k, v["unsafe_pass"], v["harmless_blocked"]] for k, v in heldout.items()],
    )
    path = write_result(
        "safety",
        {
            "lines": len(lines),
            "hostile_lines": n_hostile,
            "timing": timing,
            "load_average": load,
            "heldout": heldout,
            "rates": {k: {c: round(x, 4) for c, x in v.items()} for k, v in variants.items()},
            "real_chat_messages": {k: len(v) for k, v in logs.items()},
            "corpus_lines": Counter(r[3] for r in corpus),
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
