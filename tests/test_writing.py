"""What the bot writes: the metrics on hand-made cases where the answer is known,
``chatling generate`` through the real engine, and one prompt for training,
evaluation and serving."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chatling.core.errors import InputFileError
from chatling.core.paths import DEFAULT_MODEL_DIR
from chatling.training.data.pairs import Pair
from chatling.training.eval.writing import (
    Moment,
    classifier_auc,
    junk_kind,
    read_moments,
    shingles,
    writing_metrics,
)

WORDS = "goose swan run boss map luxembourg doug chat poland vatican army win lose".split()
EMOTES = ["KEKW", "LUL", "Pog", "OMEGALUL", ":owl:"]


def chat_line(rng: random.Random) -> str:
    """Chat-like: short, often caps, often an emote."""
    words = [rng.choice(WORDS) for _ in range(rng.randint(1, 3))]
    line = " ".join(words)
    if rng.random() < 0.4:
        line = line.upper()
    if rng.random() < 0.4:
        line += " " + rng.choice(EMOTES)
    return line


def assistant_line(rng: random.Random) -> str:
    """Nothing like chat: long, lower-case, full sentences."""
    return (
        f"I think that the {rng.choice(WORDS)} is a really interesting topic, and "
        f"honestly the {rng.choice(WORDS)} should be considered carefully by everyone here."
    )


def test_identical_styles_cannot_be_told_apart() -> None:
    rng = random.Random(1)
    a = [chat_line(rng) for _ in range(150)]
    b = [chat_line(rng) for _ in range(150)]
    auc = classifier_auc(a, b, repeats=4)
    assert 0.35 < auc["mean"] < 0.65, auc


def test_disjoint_styles_are_told_apart() -> None:
    rng = random.Random(2)
    auc = classifier_auc(
        [chat_line(rng) for _ in range(80)], [assistant_line(rng) for _ in range(80)], repeats=2
    )
    assert auc["mean"] > 0.95, auc


def test_junk_kinds() -> None:
    fixed = shingles("You are chatling, a regular viewer in a Twitch stream's chat. Only the "
                     "message text, one line.")  # fmt: skip
    kind = lambda text, cut=False: junk_kind(text, truncated=cut, fixed=fixed)  # noqa: E731
    assert kind("lol you are chatling, a regular viewer") == "prompt echo"
    assert kind("LlamaDrama42: LUL") == "name prefix"
    assert kind("Sure! Here is a chat message for you") == "assistant talk"
    assert kind('<marble_commerce_logo text="The Gambit" />') == "markup"
    assert kind("the goose is going to", cut=True) == "cut off"
    for fine in ("KEKW", "LUXEMBOURG!!!", "that swan is huge :owl:", "W", "is 5:30 too late"):
        assert kind(fine) is None, fine


def _moment(t: float, chosen: str | None, real: list[str], **extra: Any) -> Moment:
    candidates = extra.pop("candidates", [{"text": chosen or "", "allowed": chosen is not None}])
    for c in candidates:
        c.setdefault("reason", "ok" if c["allowed"] else "blocked_term")
    return Moment(
        t, "prompt", tuple(candidates), chosen, tuple(real), tuple(extra.get("recent", ()))
    )


def test_writing_metrics_on_a_known_case() -> None:
    rng = random.Random(3)
    moments = [
        _moment(float(i), chat_line(rng), [chat_line(rng), chat_line(rng)]) for i in range(60)
    ]
    moments.append(_moment(60.0, None, ["W"], candidates=[{"text": "slur", "allowed": False}]))
    moments.append(_moment(61.0, "gg", ["gg"], recent=["fan: GG"]))
    train = ["gg", "KEKW", "goose"]
    data = writing_metrics(moments, train, repeats=2, fixed_text="")
    assert data["moments"] == 62 and data["posted"] == 61
    assert data["postable_share"] == pytest.approx(61 / 62)
    assert 0.3 < data["classifier_auc"]["posted vs real"]["mean"] < 0.7
    same = data["classifier_auc"]["control: another real message of the moment"]["mean"]
    assert 0.3 < same < 0.7
    assert data["copies"]["recent_chat"] == pytest.approx(1 / 61)  # "gg" after "fan: GG"
    assert data["candidates"]["blocked_reasons"] == {"blocked_term": 1}
    assert data["junk"]["share"] == 0.0
    assert len(data["side_by_side"]) == 20
    # Shape: the posted length distribution matches the generator's, so W1 is small.
    assert data["length_wasserstein_chars"] < 4


def test_a_bad_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "gen.jsonl"
    good = {"time": 1.0, "chosen": "W", "real": ["W"], "candidates": []}
    path.write_text(json.dumps(good) + "\n" + '{"time": 2.0, "real": []}\n', encoding="utf-8")
    with pytest.raises(InputFileError, match=r"gen\.jsonl.*line 2"):
        read_moments(path)


# --- one prompt for training, evaluation and serving ----------------------------------------


def _pair() -> Pair:
    return Pair(
        source="s",
        offset=100.0,
        transcript=("we are going to invade luxembourg today",),
        chat=("fan: LUXEMBOURG", "other: the swan KEKW"),
        target="W",
        user="viewer",
    )


@pytest.mark.parametrize("form", ["log", "chat"])
def test_training_evaluation_and_serving_render_one_prompt(
    form: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A streamer's .env changes the bot's name and prompt form: SFT, the contrast step,
    the ranking evaluation and the live engine all see the same prompt tokens."""
    from transformers import AutoTokenizer

    from chatling.cli.eval import _model_rankers
    from chatling.core.settings import load_settings
    from chatling.engine import VllmEngine
    from chatling.prompt import PromptBuilder
    from chatling.training.data.pairs import render_prompt
    from chatling.training.dpo.contrast import ContrastConfig, contrast_pairs
    from chatling.training.dpo.preference import encode_preference
    from chatling.training.sft.collate import encode_pair, prompt_builder

    env = tmp_path / ".env"
    env.write_text(f"CHATLING_REPLY__BOT_NAME=gooseling\nCHATLING_REPLY__PROMPT_FORM={form}\n")
    monkeypatch.chdir(tmp_path)  # training reads the bot's own .env, as the bot does
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    live = SimpleNamespace(tokenizer=tokenizer)  # VllmEngine.render reads only .tokenizer
    settings = load_settings(env)
    served = VllmEngine.render(  # type: ignore[arg-type]
        live, PromptBuilder(settings.reply, live_count(tokenizer)).build(_snapshot(), None)
    )
    assert "gooseling" in tokenizer.decode(served)

    trained = encode_pair(_pair(), prompt_builder(tokenizer), tokenizer)
    assert trained.input_ids[: len(served)] == served

    args = argparse.Namespace(
        base=str(DEFAULT_MODEL_DIR), adapter=None, threads=None, device="cpu",
        dtype="bfloat16", batch_size=None, pmi=False, env_file=str(env),
    )  # fmt: skip
    ranker = _model_rankers(args)[0]
    assert ranker.prompt_ids(render_prompt(_pair(), ranker.builder)) == served

    pairs = [
        _pair(),
        Pair("s", 200.0, (), ("a: b",), "KEKW", "u"),
        Pair("s", 300.0, (), (), "gg", "u"),
    ]
    config = ContrastConfig(negatives=1, gap_s=60.0, seed=0)
    contrast = contrast_pairs(pairs, prompt_builder(tokenizer), config)
    first = next(p for p in contrast if p.chosen == "W")
    assert encode_preference(first, tokenizer).prompt_ids == served


def live_count(tokenizer: Any) -> Any:
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def _snapshot() -> Any:
    from chatling.training.data.pairs import snapshot_of

    return snapshot_of(_pair())


# --- chatling generate, through the real engine ----------------------------------------------


@pytest.mark.engine
@pytest.mark.slow
async def test_generate_writes_what_the_live_bot_would_post(engine: Any, tmp_path: Path) -> None:
    from chatling.core.settings import Settings
    from chatling.training.eval.generate import GenerateRequest, moments, write_replies

    rows = []
    for i in range(40):
        rows.append(
            Pair(
                "stream", 10.0 + 3 * i, ("we go to poland now",),
                tuple(f"u{j}: {w}" for j, w in enumerate(["POLAND", "KEKW", "the swan"])),
                ["W", "POLAND LUL", "no way"][i % 3], f"v{i}",
            ).to_row()
        )  # fmt: skip
    data = tmp_path / "pairs"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:30]))
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[30:]))
    out = tmp_path / "gen.jsonl"
    request = GenerateRequest(data=data, out=out, points=4, spacing_s=1.0, concurrency=2)
    chosen = moments(request)
    assert len(chosen) == 4
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert await write_replies(settings, request, engine, chosen) == 4
    assert not out.with_name(out.name + ".partial").exists()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == [0, 1, 2, 3]
    for line in lines:
        assert len(line["candidates"]) == settings.reply.candidates
        assert line["prompt"].endswith(f"{settings.reply.bot_name}:")  # the served log form
        assert line["real"] and line["recent_chat"]
        allowed = [c["text"] for c in line["candidates"] if c["allowed"]]
        assert line["chosen"] == (allowed[0] if allowed else None)  # the default chooser
    data_metrics = writing_metrics(read_moments(out), [r["target"] for r in rows[:30]], repeats=1)
    assert data_metrics["moments"] == 4


def test_choosers_pick_among_allowed_candidates_only() -> None:
    from chatling.core.events import Candidate
    from chatling.core.settings import ReplySettings
    from chatling.reply import ReplyWriter

    cands = [
        Candidate("blocked one", False, "blocked_term", 9.0),
        Candidate("W", True, "ok", 0.5),
        Candidate("the goose is a national treasure honestly", True, "ok", 2.0),
        Candidate("KEKW", True, "ok", 1.0),
    ]
    logprobs = [-0.1, -3.0, -2.0, -0.5]

    def pick(chooser: str, lps: list[float] = logprobs) -> str | None:
        writer = ReplyWriter(ReplySettings(chooser=chooser), None, None, None)  # type: ignore[arg-type]
        chosen = writer.choose(cands, lps)
        return chosen.text if chosen else None

    assert pick("first") == "W"  # a draw from the model: its first allowed sample
    assert pick("score") == "the goose is a national treasure honestly"
    assert pick("likelihood") == "KEKW"  # the blocked one is likelier, but blocked
    assert pick("likelihood", []) == "W"  # no log-probabilities: the first allowed
    writer = ReplyWriter(ReplySettings(), None, None, None)  # type: ignore[arg-type]
    assert writer.choose(cands[:1]) is None
    assert writer.sampling(7).logprobs is None
    likely = ReplyWriter(ReplySettings(chooser="likelihood"), None, None, None)  # type: ignore[arg-type]
    assert likely.sampling(7).logprobs == 0
    topical = ReplyWriter(ReplySettings(chooser="topical"), None, None, None)  # type: ignore[arg-type]
    chat = ["ann: the GOOSE is loose", "bob: goose!!", "cy: KEKW"]
    assert topical.choose(cands, (), chat).text == "the goose is a national treasure honestly"
    assert topical.choose(cands, (), []).text == "W"  # no chat to share words with: the first


def test_topical_scores_count_recent_lines_not_names_or_function_words() -> None:
    from chatling.topical import content_words, topical_choice, topical_scores

    assert content_words("The GOOSE, is it? gooseKEKW") == ["goose", "goosekekw"]
    chat = ["goose: hello", "ann: Luxembourg", "bob: LUXEMBOURG!", "cy: is it the moon"]
    # `goose` is a viewer's name, not a word of the chat; `the`/`is`/`it` say nothing.
    assert topical_scores(["goose", "luxembourg", "is it the"], chat) == [0.0, 2.0, 0.0]
    # Normalised by length: one shared word in four scores below it alone.
    assert topical_choice(["luxembourg now or never ok", "luxembourg"], chat) == 1
    assert topical_choice(["moon", "Moon"], chat) == 0  # a tie keeps the model's order
    with pytest.raises(ValueError):
        topical_choice([], chat)
