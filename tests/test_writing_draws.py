"""The mean over draws (``chatling.training.eval.writing.draw_aucs``) on hand-made cases."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from chatling.training.eval.writing import draw_aucs, posted_draw, read_moments

_CHAT = ["GERMANY", "poland", "LUL", "W", "Norway!!", "we want malta", "KEKW", "o7", "FRANCE"]


def _write(path: Path, candidates_of: Callable[[int], list[str]], moments: int = 60) -> Path:
    lines = []
    for i in range(moments):
        real = [_CHAT[(i + j) % len(_CHAT)] for j in range(4)]
        candidates = [
            {"text": text, "allowed": True, "reason": "ok", "score": 0.0}
            for text in candidates_of(i)
        ]
        lines.append(
            json.dumps(
                {
                    "time": float(i),
                    "prompt": "",
                    "candidates": candidates,
                    "chosen": candidates[0]["text"],
                    "real": real,
                    "recent_chat": [],
                }
            )
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_posts_drawn_from_the_chat_itself_cannot_be_told_apart(tmp_path):
    same = _write(
        tmp_path / "same.jsonl", lambda i: [_CHAT[(i + 5 + k) % len(_CHAT)] for k in range(3)]
    )
    aucs = draw_aucs([read_moments(same)], repeats=2)
    assert len(aucs) == 3  # one per candidate slot
    assert sum(aucs) / len(aucs) < 0.65


def test_posts_in_another_style_are_told_apart_in_every_draw(tmp_path):
    prose = _write(
        tmp_path / "prose.jsonl",
        lambda i: [
            f"I would like to discuss item number {i + k} in some detail." for k in range(3)
        ],
    )
    aucs = draw_aucs([read_moments(prose)], repeats=2)
    assert min(aucs) > 0.95


def test_a_moment_with_nothing_allowed_posts_nothing(tmp_path):
    path = _write(tmp_path / "blocked.jsonl", lambda i: ["GERMANY"])
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows[0]["candidates"][0]["allowed"] = False
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")

    moments = posted_draw(read_moments(path), 0)
    assert moments[0].chosen is None and moments[1].chosen == "GERMANY"
    assert draw_aucs([read_moments(path)], repeats=1)  # still scores the rest
