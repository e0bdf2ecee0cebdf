"""Shared helpers of the benchmarks: prompts from the demo stream, stats, memory, results.

Not a test: each bench script answers one question, runs its baseline in the
same process run, prints a table and writes JSON under ``bench/results/``.
"""

from __future__ import annotations

import json
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


class PeakMemory:
    """Samples the resident memory of this process and its children (vLLM's engine core)."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory")

    def _tree_rss(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._tree_rss())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def demo_prompts(
    count: int,
    settings: Any = None,
    extra_chat: Callable[[int], list[str]] | None = None,
) -> list[tuple[str, str]]:
    """``count`` real (system, user) prompts of the pipeline at moments of the demo stream.

    ``settings``: the ``ReplySettings`` to build with (default: the defaults);
    ``extra_chat(i)``: chat lines posted just before moment ``i`` (to vary prompts)."""
    import json as _json

    from transformers import AutoTokenizer

    from chatling.chatlog import read_chat_log
    from chatling.context import RollingContext
    from chatling.core.events import ChatMessage, Utterance
    from chatling.core.paths import DEFAULT_MODEL_DIR
    from chatling.core.settings import ReplySettings
    from chatling.prompt import PromptBuilder

    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    settings = settings or ReplySettings()
    builder = PromptBuilder(settings, lambda t: len(tokenizer.encode(t, add_special_tokens=False)))
    script = _json.loads((ROOT / "data" / "demo" / "script.json").read_text())
    lines = script["lines"] if isinstance(script, dict) else script
    utterances = [
        # The script gives start times; espeak speaks about 3 words a second.
        Utterance(
            float(line["start"]),
            float(line["start"]) + 0.33 * len(line["text"].split()),
            line["text"],
        )
        for line in lines
    ]
    chat = read_chat_log(ROOT / "data" / "demo" / "chat.json")
    end = max(m.offset for m in chat)
    prompts = []
    for i in range(count):
        now = 20.0 + (end - 20.0) * i / max(count - 1, 1)
        context = RollingContext(settings.transcript_window_s, settings.max_chat_messages)
        for u in utterances:
            if u.end <= now:
                context.add_utterance(u)
        for m in chat:
            if m.offset <= now:
                context.add_chat(m)
        for j, text in enumerate(extra_chat(i) if extra_chat else ()):
            context.add_chat(ChatMessage(now - 0.01 * (j + 1), f"viewer{j}", text))
        parts = builder.build(context.snapshot(now), None)
        prompts.append((parts.system, parts.user))
    return prompts


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "bench": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": psutil.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "processor": platform.processor() or platform.machine(),
        },
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(f"\n{title}\n{line}\n{'-' * len(line)}")
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


def now() -> float:
    return time.perf_counter()
