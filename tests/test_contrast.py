"""Contrast pairs (``training.dpo.contrast``) and ``chatling contrast`` on the packaged model.

The draw is checked on hand-made streams where the right answer is known: what
may be rejected (only messages of other moments), which kinds, in which order,
reproducibly. The command runs for real: a 2-step SFT adapter of the packaged
SmolLM2-135M-Instruct, then trl's DPO on the drawn pairs, on the CPU.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from chatling.core.errors import ConfigError
from chatling.safety import dedupe_key
from chatling.training.data.pairs import Pair
from chatling.training.dpo.contrast import ContrastConfig, contrast_pairs, draw_negatives
from tests.test_train import make_pairs, tiny_preset, write_pairs


def stream(source: str, texts: list[str], step: float = 10.0) -> list[Pair]:
    return [
        Pair(source, 100.0 + i * step, ("the streamer talks",), ("a: hi",), text, f"u{i}")
        for i, text in enumerate(texts)
    ]


# Frequent: "LUL" (5x) and "KEKW" (3x). Every other message is unique.
TEXTS = [
    "LUL", "goose army rises", "LUL", "KEKW", "the goose won", "LUL", "honk honk",
    "KEKW", "LUL", "that boss is unfair", "KEKW", "LUL", "boss fight now", "go left",
]  # fmt: skip


def test_negatives_come_from_other_moments_in_kind_order_and_reproducibly() -> None:
    pairs = stream("a", TEXTS) + stream("b", ["goose time", "LUL", "boss again"])
    config = ContrastConfig(negatives=3, gap_s=25.0, n_frequent=2, n_similar=3, seed=7)
    drawn = draw_negatives(pairs, config)
    assert drawn == draw_negatives(pairs, config)
    assert drawn != draw_negatives(pairs, replace(config, seed=8))
    by_pair: dict[int, list[tuple[str, str]]] = {}
    for i, text, kind in drawn:
        by_pair.setdefault(i, []).append((text, kind))
    assert sorted(by_pair) == list(range(len(pairs)))
    for i, negatives in by_pair.items():
        pair = pairs[i]
        near = {
            dedupe_key(p.target)
            for p in pairs
            if p.source == pair.source and abs(p.offset - pair.offset) <= config.gap_s
        }
        keys = [dedupe_key(t) for t, _ in negatives]
        assert not near & set(keys), (pair.target, negatives)
        assert len(set(keys)) == len(keys)  # three different messages
        kinds = [k for _, k in negatives]
        assert kinds[0] in ("frequent", "random") and kinds[2] == "random"
        if kinds[0] == "frequent":
            assert negatives[0][0] in ("LUL", "KEKW")
        if kinds[1] == "similar":
            shared = set(negatives[1][0].lower().split()) & set(pair.target.lower().split())
            assert shared, (pair.target, negatives[1])
    # "goose army rises" (t=110): LUL and KEKW are both within 25 s, so the frequent
    # kind falls back to random; its similar one is another goose message.
    goose = dict((k, t) for t, k in by_pair[1])
    assert "frequent" not in goose and goose["similar"] in ("the goose won", "goose time")


def test_contrast_pairs_use_the_live_prompt_and_the_real_message_as_chosen() -> None:
    from chatling.core.settings import ReplySettings
    from chatling.prompt import PromptBuilder
    from chatling.training.data.pairs import render_prompt

    builder = PromptBuilder(ReplySettings(), lambda text: len(text.split()))
    pairs = stream("a", TEXTS)
    out = contrast_pairs(pairs, builder, ContrastConfig(negatives=2, gap_s=15.0))
    assert len(out) == 2 * len(pairs)
    first = out[0]
    parts = render_prompt(pairs[0], builder)
    assert (first.system, first.user, first.form) == (parts.system, parts.user, parts.form)
    assert first.chosen == "LUL" and first.rejected != "LUL"
    assert first.feedback_ids == () and first.prompt_reply_id is None


def test_a_stream_shorter_than_the_gap_gives_a_clear_error() -> None:
    from chatling.core.settings import ReplySettings
    from chatling.prompt import PromptBuilder

    builder = PromptBuilder(ReplySettings(), lambda text: len(text.split()))
    with pytest.raises(ConfigError, match="gap"):
        contrast_pairs(stream("a", TEXTS), builder, ContrastConfig(gap_s=10_000.0))
    with pytest.raises(ConfigError, match="negatives"):
        draw_negatives(stream("a", TEXTS), ContrastConfig(negatives=0))


@pytest.mark.slow
def test_chatling_contrast_trains_a_dpo_adapter_from_the_sft_one(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from chatling.cli.main import main
    from chatling.training.sft.train import METADATA_FILE, TrainRequest, train

    pairs = make_pairs(8, seed=4)
    data = write_pairs(tmp_path / "pairs", pairs)
    sft = train(
        TrainRequest(
            data=data, out=tmp_path / "sft", preset=tiny_preset(steps=2, lr=2e-3), split="none"
        )
    ).adapter_dir
    out = tmp_path / "contrast"
    args = ["contrast", "--adapter", str(sft), "--data", str(data), "--out", str(out)]
    args += ["--split", "none", "--gap", "2", "--negatives", "2", "--steps", "2"]
    args += ["--batch-size", "2", "--max-length", "384", "--lr", "1e-3"]
    assert main(args) == 0
    meta = json.loads((out / METADATA_FILE).read_text())
    dpo = meta["dpo"]
    assert dpo["steps"] == 2 and dpo["feedback_ids"] == []
    drawn = draw_negatives(pairs, ContrastConfig(negatives=2, gap_s=2.0))
    assert dpo["pairs"] == len(drawn) > len(pairs)  # all fit in max_length
    assert dpo["contrast"]["negatives"] == 2 and dpo["contrast"]["gap_s"] == 2.0
    assert dpo["contrast"]["split"] == "none"
    before = load_file(sft / "adapter_model.safetensors")
    after = load_file(out / "adapter_model.safetensors")
    assert any(not after[k].float().equal(before[k].float()) for k in before)
    # The output exists now: a second run refuses instead of overwriting it.
    assert main(args) == 2
