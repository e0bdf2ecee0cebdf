"""Tests of ``chatling eval``: metrics on hand-made cases, candidate sets, rankers, report.

The metric code is checked where the answer is known by hand (ground truth
1st, 3rd, out of the top 10; ties; a higher log-probability must rank higher,
the pitfall of the public LiveBot code), the random expectation against a
simulation, the candidate sets for reproducibility and for flagging only real
ground truths. The model ranker runs the real packaged SmolLM2-135M on CPU.
Data is a small synthetic stream built here (no mocks).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest

from chatling.cli.eval import add_eval_command
from chatling.core.paths import DEFAULT_MODEL_DIR
from chatling.core.settings import ReplySettings
from chatling.safety import SafetyFilter, dedupe_key
from chatling.training.data.pairs import Pair
from chatling.training.data.splits import load_split
from chatling.training.eval import metrics as em
from chatling.training.eval.evaluate import (
    BootstrapConfig,
    CandidateConfig,
    CandidateSets,
    SystemResult,
    TestPoint,
    build_candidates,
    evaluate,
    paired_differences,
    select_points,
    summarise,
)
from chatling.training.eval.rankers import (
    FrequencyRanker,
    ModelRanker,
    RandomRanker,
    TfIdf,
    TfIdfRanker,
    load_model,
)

WORDS = (
    "lol kekw pog nice what gg rip no way chat doug is cooking this run the boss fight "
    "again why clip it true real based sadge wait monkas hello everyone pepehands lets go"
).split()


def make_stream(source: str, n: int, *, start: float = 0.0, step: float = 1.0, seed: int = 0):
    """A synthetic stream: one message every ``step`` s, skewed toward a few favourites."""
    rng = random.Random(seed)
    favourites = ["LUL", "KEKW", "Pog", "gg", "W"]
    pairs, history = [], []
    for i in range(n):
        if rng.random() < 0.3:
            text = rng.choice(favourites)
        else:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 7)))
        user = f"viewer{rng.randint(1, 40)}"
        t = start + i * step
        speech = (f"okay we are at the part {i // 20} of the stream",)
        pairs.append(Pair(source, t, speech, tuple(history[-8:]), text, user))
        history.append(f"{user}: {text}")
    return pairs


def point(scores_truth: list[tuple[float, bool]]) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray([s for s, _ in scores_truth], dtype=float)
    truth = np.asarray([t for _, t in scores_truth])
    return scores, truth


# --- metrics on hand-made cases ------------------------------------------------------------


def test_ground_truth_first_third_and_out_of_top_10() -> None:
    first = em.point_metrics(*point([(0.9, True), (0.5, False), (0.1, False)]))
    assert first == {
        "recall@1": 1.0,
        "recall@5": 1.0,
        "recall@10": 1.0,
        "mean_rank": 1.0,
        "mrr": 1.0,
    }

    third = em.point_metrics(*point([(0.9, False), (0.8, False), (0.7, True), (0.1, False)]))
    assert (third["recall@1"], third["recall@5"], third["mean_rank"]) == (0.0, 1.0, 3.0)
    assert third["mrr"] == pytest.approx(1 / 3)

    scores = [(100.0 - i, False) for i in range(14)] + [(50.0, True)] + [(1.0, False)] * 5
    far = em.point_metrics(*point(scores))
    assert (far["recall@5"], far["recall@10"], far["mean_rank"]) == (0.0, 0.0, 15.0)
    assert far["mrr"] == pytest.approx(1 / 15)


def test_best_ranked_ground_truth_counts() -> None:
    m = em.point_metrics(*point([(5.0, False), (4.0, True), (3.0, False), (1.0, True)]))
    assert m["mean_rank"] == 2.0 and m["recall@1"] == 0.0 and m["recall@5"] == 1.0


def test_higher_log_probability_ranks_higher() -> None:
    """The LiveBot pitfall: sorting summed NLL ascending-as-if-score ranks the worst first."""
    logprob = np.asarray([-3.2, -12.5, -7.1, -0.4])  # truth is the 2nd most likely
    truth = np.asarray([True, False, False, False])
    assert em.point_metrics(logprob, truth)["mean_rank"] == 2.0
    nll = -logprob  # a loss: passing it as a score would be the bug
    assert em.point_metrics(nll, truth)["mean_rank"] == 3.0
    assert em.point_metrics(-nll, truth)["mean_rank"] == 2.0


def test_ties_expected_and_pessimistic() -> None:
    all_tied = point([(0.0, True), (0.0, False), (0.0, False), (0.0, False)])
    exp = em.point_metrics(*all_tied)
    assert exp["recall@1"] == pytest.approx(0.25)
    assert exp["mean_rank"] == pytest.approx(2.5)
    assert exp["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    pes = em.point_metrics(*all_tied, ties="pessimistic")
    assert (pes["recall@1"], pes["mean_rank"]) == (0.0, 4.0)

    # one distractor above, the truth tied with two distractors: rank 2, 3 or 4
    mixed = point([(2.0, False), (1.0, True), (1.0, False), (1.0, False), (0.0, False)])
    m = em.point_metrics(*mixed)
    assert m["mean_rank"] == pytest.approx(3.0)
    assert m["recall@1"] == 0.0 and m["recall@5"] == 1.0
    assert em.point_metrics(*mixed, ties="pessimistic")["mean_rank"] == 4.0
    # two truths tied with two distractors: first truth at position 1 w.p. 1/2
    two = em.point_metrics(*point([(1.0, True), (1.0, True), (1.0, False), (1.0, False)]))
    assert two["recall@1"] == pytest.approx(0.5)
    assert two["mean_rank"] == pytest.approx(5 / 3)


def test_metrics_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="ground-truth"):
        em.point_metrics(np.zeros(3), np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        em.point_metrics(np.asarray([np.nan, 1.0]), np.asarray([True, False]))


def test_random_expectation_matches_simulation_and_all_tied_ranker() -> None:
    n, g = 100, 5
    exact = em.random_expectation(n, g)
    assert exact["recall@10"] == pytest.approx(0.4162, abs=1e-3)  # the protocol's "near 0.41"
    truth = np.zeros(n, dtype=bool)
    truth[:g] = True
    assert em.point_metrics(np.zeros(n), truth) == pytest.approx(exact)

    rng = np.random.default_rng(1)
    sims = [em.point_metrics(rng.permutation(n).astype(float), truth) for _ in range(20000)]
    for metric, value in exact.items():
        values = np.asarray([s[metric] for s in sims])
        sem = values.std() / np.sqrt(len(values))
        assert abs(values.mean() - value) < 4 * sem + 1e-9, metric


# --- bootstrap ------------------------------------------------------------------------------


def _width(ci: tuple[float, float]) -> float:
    return ci[1] - ci[0]


def test_bootstrap_contains_estimate_and_shrinks_with_more_points() -> None:
    rng = np.random.default_rng(0)
    widths = {}
    for n in (40, 1000):
        values = (rng.random(n) < 0.3).astype(float)
        ci = em.interval(lambda idx, v=values: v[idx].mean(), em.point_resamples(n, 500, seed=0))
        assert ci[0] <= values.mean() <= ci[1]
        times = np.arange(n) * 10.0
        block = em.interval(
            lambda idx, v=values: v[idx].mean(),
            em.block_resamples(times, ["s"] * n, 60.0, 500, seed=0),
        )
        assert block[0] <= values.mean() <= block[1]
        widths[n] = (_width(ci), _width(block))
    assert widths[1000][0] < widths[40][0] / 2
    assert widths[1000][1] < widths[40][1] / 2


def test_blocks_follow_stream_time_and_sources() -> None:
    times = [0.0, 30.0, 59.0, 61.0, 0.0, 10.0]
    sources = ["a", "a", "a", "a", "b", "b"]
    blocks = em.blocks_of(times, sources, 60.0)
    assert blocks[0].tolist() == [0, 1, 2]
    assert blocks[1].tolist() == [1, 2, 3]
    assert blocks[3].tolist() == [3]
    assert blocks[4].tolist() == [4, 5]


def test_block_bootstrap_is_wider_for_correlated_points() -> None:
    """Points in runs of equal outcomes (shared context): blocks see the dependence."""
    rng = np.random.default_rng(3)
    values = np.repeat((rng.random(50) < 0.5).astype(float), 10)  # runs of 10 points
    times = np.arange(values.size) * 5.0  # a run spans 50 s
    stat = lambda idx: values[idx].mean()  # noqa: E731
    plain = em.interval(stat, em.point_resamples(values.size, 800, seed=0))
    block = em.interval(stat, em.block_resamples(times, ["s"] * values.size, 60.0, 800, seed=0))
    assert _width(block) > 1.5 * _width(plain)


# --- candidate sets -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stream() -> tuple[list[Pair], list[Pair]]:
    pairs = make_stream("vod1", 1500, step=0.8, seed=7)
    cut = 1100
    train = pairs[:cut] + make_stream("vod0", 800, seed=3)
    return train, pairs[cut:]


def test_candidate_sets_frozen_reproducible_and_flag_only_ground_truth(
    stream: tuple[list[Pair], list[Pair]], tmp_path: Path
) -> None:
    train, test = stream
    config = CandidateConfig(n_points=30, seed=5)
    sets = build_candidates(test, train, config)
    again = build_candidates(test, train, config)
    assert sets.to_json() == again.to_json()
    other = build_candidates(test, train, CandidateConfig(n_points=30, seed=6))
    assert other.to_json() != sets.to_json()

    digest = sets.write(tmp_path / "candidates.json")
    loaded, loaded_digest = CandidateSets.load(tmp_path / "candidates.json")
    assert loaded == sets and loaded_digest == digest

    assert len(sets.points) == 30
    train_keys = {dedupe_key(p.target) for p in train}
    counts = FrequencyRanker.from_messages([p.target for p in train]).counts
    top = {k for k, _ in counts.most_common(3)}
    for pt in sets.points:
        in_window = [
            dedupe_key(p.target)
            for p in sorted(test, key=lambda p: p.offset)
            if p.source == pt.source and pt.t < p.offset <= pt.t + config.window_s
        ]
        window = list(dict.fromkeys(in_window))  # distinct, in time order
        assert pt.n_truth_window == len(window)
        flagged = {dedupe_key(c) for c, t in zip(pt.candidates, pt.truth, strict=True) if t}
        others = [dedupe_key(c) for c, t in zip(pt.candidates, pt.truth, strict=True) if not t]
        assert flagged == set(window[: config.max_truth])  # real messages, and only those
        assert not set(window) & set(others)  # no distractor was posted in the window
        assert all(k in train_keys for k in others)
        assert len(pt.candidates) == config.n_candidates
        assert len({dedupe_key(c) for c in pt.candidates}) == config.n_candidates
        origins = {o: pt.origins.count(o) for o in set(pt.origins)}
        assert origins["frequent"] == config.n_frequent
        assert dedupe_key(pt.pair.target) in flagged  # the anchor is a ground truth
        assert pt.pair.offset == pytest.approx(pt.t, abs=1e-5)
        # the most frequent training messages are candidates (unless posted in the window)
        assert top - set(window) <= {dedupe_key(c) for c in pt.candidates}

    tampered = sets.to_json()
    first = tampered["points"][0]["candidates"]
    for c in first:
        c["truth"] = True  # the LiveBot bug: everything labelled correct
    (tmp_path / "bad.json").write_text(json.dumps(tampered))
    with pytest.raises(Exception, match="inconsistent"):
        CandidateSets.load(tmp_path / "bad.json")


def test_points_do_not_overlap_and_respect_window(stream: tuple[list[Pair], list[Pair]]) -> None:
    _, test = stream
    chosen = select_points(test, CandidateConfig(n_points=1000, seed=1))
    offsets = [a.offset for a, _ in chosen]
    assert all(b - a >= 5.0 for a, b in itertools.pairwise(offsets))
    assert len(chosen) > 50
    for anchor, window in chosen:
        assert window[0] == anchor.target.strip() and len(set(window)) == len(window)


# --- lexical rankers and evaluation ---------------------------------------------------------


def _point(candidates: list[str], truth: list[bool], pair: Pair, t: float = 10.0) -> TestPoint:
    return TestPoint(
        0, pair.source, t, pair, tuple(candidates), tuple(truth), tuple(
            "truth" if x else "random" for x in truth
        ), sum(truth),
    )  # fmt: skip


def test_tfidf_rankers_prefer_echoes_of_chat_and_transcript() -> None:
    pair = Pair(
        "s", 10.0, ("we are going to fight the giant penguin now",),
        ("a: the penguin is huge", "b: penguin time"), "penguin", "c",
    )  # fmt: skip
    tfidf = TfIdf(["lol", "gg", "nice", "the boss", "penguin"])
    cands = ["gg", "penguin lol", "nice one", "giant fight"]
    pt = _point(cands, [False, True, False, False], pair)
    chat = TfIdfRanker(tfidf, "chat").score(pt).scores[""]
    assert int(np.argmax(chat)) == 1
    transcript = TfIdfRanker(tfidf, "transcript").score(pt).scores[""]
    assert int(np.argmax(transcript)) == 3


def test_evaluate_random_and_frequency(stream: tuple[list[Pair], list[Pair]]) -> None:
    train, test = stream
    sets = build_candidates(test, train, CandidateConfig(n_points=40, seed=0))
    boot = BootstrapConfig(n_boot=200)
    results = evaluate(
        sets.points,
        [RandomRanker(), FrequencyRanker.from_messages([p.target for p in train])],
        boot,
    )
    rnd = results["random (exact expectation)"]
    expected = np.mean(
        [em.random_expectation(len(p.candidates), sum(p.truth))["recall@10"] for p in sets.points]
    )
    assert rnd.estimates["recall@10"].value == pytest.approx(expected)
    for est in rnd.estimates.values():
        assert est.ci_points[0] <= est.value <= est.ci_points[1]
        assert est.ci_blocks[0] <= est.value <= est.ci_blocks[1]
    assert "frequency" in results


# --- generated-message statistics ---------------------------------------------------------


def test_wasserstein_and_distinct_on_known_cases() -> None:
    assert em.wasserstein_1d([0, 0], [1, 1]) == pytest.approx(1.0)
    assert em.wasserstein_1d([0, 1, 2], [0, 1, 2]) == 0.0
    assert em.wasserstein_1d([0, 1, 5], [3, 4, 8]) == pytest.approx(3.0)
    assert em.wasserstein_1d([0, 2], [1]) == pytest.approx(1.0)
    assert em.distinct_n([["a", "b", "a"], ["a", "b"]], 1) == pytest.approx(2 / 5)
    assert em.distinct_n([["a", "b", "a"], ["a", "b"]], 2) == pytest.approx(2 / 3)


def test_generated_stats_copies_emotes_and_safety() -> None:
    safety = SafetyFilter.from_settings(ReplySettings())
    generated = ["KEKW KEKW", "check out evil.com", "this boss is so hard", "gg"]
    real = ["gg", "KEKW", "lol this boss", "nice one chat", "what"]
    stats = em.generated_stats(generated, real, ["GG!", "hello"], safety)
    assert stats["verbatim_train_copy_share"] == pytest.approx(0.25)  # "gg" == "GG!"
    assert stats["blocked_share"] == pytest.approx(0.25)
    assert stats["blocked_reasons"] == {"link": 1}
    assert stats["emote_rate"]["generated_mean"] == pytest.approx(0.25)
    assert stats["length_words"]["wasserstein"] >= 0


# --- the model ranker on the real SmolLM2 ---------------------------------------------------


@pytest.fixture(scope="module")
def smol() -> tuple[object, object]:
    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        pytest.fail("packaged models are not provisioned: run `make test` (or `make setup`)")
    return load_model(str(DEFAULT_MODEL_DIR), device="cpu", dtype="float32")  # exact comparisons


def _builder(tokenizer: object):
    from chatling.prompt import PromptBuilder

    return PromptBuilder(
        ReplySettings(), lambda s: len(tokenizer.encode(s, add_special_tokens=False))
    )


CONTEXT = Pair(
    "s", 30.0, ("okay chat, we are finally going to beat the final boss",),
    ("alice: lets go doug", "bob: the boss has so much health"), "", "",
)  # fmt: skip


@pytest.mark.slow
def test_model_ranks_fluent_sentence_above_shuffled_words(smol: tuple[object, object]) -> None:
    model, tokenizer = smol
    fluent = "the boss is going down this time"
    words = fluent.split()
    shuffled = [" ".join(random.Random(s).sample(words, len(words))) for s in range(3)]
    shuffled = [s for s in shuffled if s != fluent]
    ranker = ModelRanker(model, tokenizer, _builder(tokenizer), batch_size=4)
    pt = _point([*shuffled, fluent], [False] * len(shuffled) + [True], CONTEXT)
    out = ranker.score(pt)
    assert out.logprob is not None and (out.logprob < 0).all()
    assert em.point_metrics(out.scores["summed"], np.asarray(pt.truth))["mean_rank"] == 1.0
    assert em.point_metrics(out.scores["per token"], np.asarray(pt.truth))["mean_rank"] == 1.0


@pytest.mark.slow
def test_pmi_is_log_probability_minus_the_context_free_one(smol: tuple[object, object]) -> None:
    model, tokenizer = smol
    builder = _builder(tokenizer)
    cands = ["lets go doug", "gg", "the boss has so much health", "W"]
    ranker = ModelRanker(model, tokenizer, builder, batch_size=4, pmi=True)
    pt = _point(cands, [True, False, False, False], CONTEXT)
    out = ranker.score(pt)
    empty = Pair("e", 0.0, (), (), "", "")
    from chatling.training.data.pairs import render_prompt

    free, _ = ranker.logprobs(render_prompt(empty, builder, with_transcript=False), cands)
    np.testing.assert_allclose(out.scores["pmi"], out.logprob - free, rtol=1e-5, atol=1e-4)
    # Echoes of the recent chat gain the most from the context.
    gain = out.scores["pmi"]
    assert gain[cands.index("the boss has so much health")] > gain[cands.index("W")]
    # The context-free scores are cached per text: a second point does not recompute them.
    calls = []
    original = ranker.logprobs
    ranker.logprobs = lambda *a, **k: calls.append(a) or original(*a, **k)  # type: ignore[method-assign]
    ranker.score(_point(list(reversed(cands)), [False, False, False, True], CONTEXT))
    assert len(calls) == 1  # only the point's own prompt


def test_paired_differences_on_a_known_case() -> None:
    pair = Pair("s", 1.0, (), (), "x", "u")
    pts = [_point(["a", "b"], [True, False], pair, t=10.0 * i) for i in range(40)]
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 40)
    results = {}
    for name, ranker, shift in (
        ("base model · pmi", "base model", 0.0),
        ("fine-tuned · pmi", "fine-tuned", 0.2),
        ("fine-tuned, no transcript · pmi", "fine-tuned, no transcript", 0.2),
    ):
        per_point = {m: np.clip(base + shift, 0, 2) for m in ("recall@10", "mrr")}
        results[name] = SystemResult(name, ranker, per_point, {})
    rows = paired_differences(pts, results, BootstrapConfig(n_boot=200, block_s=60.0))
    by_what = {r["what"]: r for r in rows}
    tuned = by_what["fine-tuning"]
    assert (tuned["system"], tuned["reference"]) == ("fine-tuned · pmi", "base model · pmi")
    assert tuned["mrr"]["value"] == pytest.approx(0.2)
    low, high = tuned["mrr"]["ci95_blocks"]
    assert low == pytest.approx(0.2) and high == pytest.approx(0.2)  # a constant difference
    same = by_what["transcript (fine-tuned)"]["recall@10"]
    assert same["value"] == 0.0 and same["ci95_points"] == [0.0, 0.0]
    assert "transcript (base)" not in by_what  # no base-without-transcript system here


@pytest.mark.slow
def test_shared_prompt_cache_equals_full_sequences(smol: tuple[object, object]) -> None:
    model, tokenizer = smol
    builder = _builder(tokenizer)
    cands = ["gg", "KEKW the boss is so fat", "no way", "what is happening chat 😂", "W"]
    shared = ModelRanker(model, tokenizer, builder, batch_size=2)
    full = ModelRanker(model, tokenizer, builder, batch_size=3, shared_prompt=False)
    pt = _point(cands, [True] + [False] * 4, CONTEXT)
    a, b = shared.score(pt), full.score(pt)
    np.testing.assert_allclose(a.logprob, b.logprob, rtol=1e-4, atol=2e-3)
    np.testing.assert_array_equal(a.n_tokens, b.n_tokens)

    # The candidate tokens are exactly what the model writes in the prompt form served:
    # the chat log's next line and its newline (``log``) or the assistant turn (``chat``).
    from chatling.prompt import PromptBuilder, completion_text
    from chatling.training.data.pairs import chat_messages, render_prompt

    parts = render_prompt(CONTEXT, builder)
    prompt = shared.prompt_ids(parts)
    for c in cands:
        text = parts.user + completion_text(parts, tokenizer, c)
        assert tokenizer.encode(text, add_special_tokens=False) == prompt + shared.candidate_ids(c)
    chat_builder = PromptBuilder(ReplySettings(prompt_form="chat"), builder._count_tokens)
    chat = ModelRanker(model, tokenizer, chat_builder, batch_size=2)
    parts = render_prompt(CONTEXT, chat_builder)
    prompt = chat.prompt_ids(parts)
    for c in cands:
        messages = chat_messages(parts.system, parts.user, c)
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        ids = tokenizer.encode(text.rstrip(), add_special_tokens=False)
        assert ids == prompt + chat.candidate_ids(c)


@pytest.mark.slow
def test_adapter_changes_scores_and_can_be_disabled(
    smol: tuple[object, object], tmp_path: Path
) -> None:
    """A random (non-zero) LoRA adapter saved with peft and loaded like a trained one."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, tokenizer = smol
    torch.manual_seed(0)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(copy.deepcopy(model), config).save_pretrained(str(tmp_path / "adapter"))

    builder = _builder(tokenizer)
    tuned, _ = load_model(
        str(DEFAULT_MODEL_DIR), str(tmp_path / "adapter"), device="cpu", dtype="float32"
    )
    pt = _point(["gg", "the boss is going down"], [True, False], CONTEXT)
    plain = ModelRanker(model, tokenizer, builder).score(pt).logprob
    on = ModelRanker(tuned, tokenizer, builder).score(pt).logprob
    off = ModelRanker(tuned, tokenizer, builder, adapter_enabled=False).score(pt).logprob
    np.testing.assert_allclose(off, plain, rtol=1e-5, atol=1e-4)
    assert np.abs(on - plain).max() > 0.1


# --- report and CLI -------------------------------------------------------------------------


def _write_split(stream: tuple[list[Pair], list[Pair]], directory: Path) -> Path:
    directory.mkdir()
    for name, pairs in (("train.jsonl", stream[0]), ("test.jsonl", stream[1])):
        with (directory / name).open("w", encoding="utf-8") as fh:
            for p in pairs:
                fh.write(json.dumps(p.to_row()) + "\n")
    return directory


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="chatling")
    add_eval_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_report_files_written_from_baselines(
    stream: tuple[list[Pair], list[Pair]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write_split(stream, tmp_path / "pairs")
    train, test = load_split(data)
    assert len(train) == len(stream[0]) and len(test) == len(stream[1])
    (tmp_path / "gen.txt").write_text("gg\nKEKW KEKW\nthe boss is hard\nvisit spam.com\n")
    (tmp_path / "chatling_adapter.json").write_text(
        json.dumps({"loss_curve": [[1, 3.0], [2, 2.5]]})
    )
    report = tmp_path / "report"
    argv = ["eval", "--data", str(data), "--report", str(report), "--points", "25", "--no-model"]
    argv += ["--generated", str(tmp_path / "gen.txt"), "--bootstrap", "100"]
    argv += ["--trainer-log", str(tmp_path / "chatling_adapter.json")]
    assert _run_cli(argv) == 0
    names = ("report.json", "report.md", "report.html", "candidates.json", "metrics.png")
    for name in (*names, "lengths.png", "loss.png"):
        assert (report / name).stat().st_size > 0, name
    assert (report / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    result = json.loads((report / "report.json").read_text())
    assert set(result["systems"]) == {
        "random (exact expectation)", "frequency", "TF-IDF to recent chat", "TF-IDF to transcript"
    }  # fmt: skip
    assert result["split"]["kind"] == "by time within sources"
    assert result["generated"]["blocked_reasons"] == {"link": 1}
    html = (report / "report.html").read_text()
    assert 'src="metrics.png"' in html and "TF-IDF to recent chat" in html
    assert "TF-IDF to transcript" in (report / "report.md").read_text()
    assert "frequency" in capsys.readouterr().out

    # Reusing the frozen candidates gives the same sets (and the same numbers).
    again = tmp_path / "again"
    argv2 = [
        "eval",
        "--data",
        str(data),
        "--report",
        str(again),
        "--no-model",
        "--bootstrap",
        "100",
    ]
    assert _run_cli([*argv2, "--candidates", str(report / "candidates.json")]) == 0
    second = json.loads((again / "report.json").read_text())
    assert second["candidates"]["sha256"] == result["candidates"]["sha256"]
    assert second["systems"]["frequency"]["metrics"] == result["systems"]["frequency"]["metrics"]


@pytest.mark.slow
def test_cli_with_the_real_model(
    stream: tuple[list[Pair], list[Pair]], smol: tuple[object, object], tmp_path: Path
) -> None:
    data = _write_split(stream, tmp_path / "pairs")
    report = tmp_path / "report"
    argv = ["eval", "--data", str(data), "--report", str(report), "--points", "2"]
    argv += ["--n-candidates", "8", "--bootstrap", "50", "--base", str(DEFAULT_MODEL_DIR)]
    assert _run_cli(argv) == 0
    result = json.loads((report / "report.json").read_text())
    for name in (
        "base model · summed",
        "base model · per token",
        "base model, no transcript · summed",
    ):
        assert result["systems"][name]["perplexity"]["value"] > 1.0
    assert any(k.endswith("candidates/s") for k in result["speed"])


def test_summarise_perplexity_from_logprobs() -> None:
    from chatling.training.eval.rankers import CandidateScores

    pair = Pair("s", 1.0, (), (), "x", "u")
    pts = [_point(["a", "b"], [True, False], pair, t=float(i)) for i in range(3)]
    lp, n = np.asarray([-2.0, -1.0]), np.asarray([2.0, 1.0])
    scored = [CandidateScores({"summed": lp}, lp, n) for _ in pts]
    res = summarise(
        pts, "m", "m", [s.scores["summed"] for s in scored], BootstrapConfig(n_boot=20), scored
    )
    assert res.perplexity is not None and res.perplexity.value == pytest.approx(np.e)
    assert res.estimates["mean_rank"].value == 2.0


def test_load_split_reads_a_pairs_dataset_and_parquet_files(
    stream: tuple[list[Pair], list[Pair]], tmp_path: Path
) -> None:
    """The dataset written by ``chatling data ingest`` (training.dataset), split by time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from chatling.training.data.dataset import SourceInfo, write_source

    pairs = sorted([p for p in stream[0] + stream[1] if p.source == "vod1"], key=lambda p: p.offset)
    write_source(tmp_path / "ds", pairs, SourceInfo(name="vod1", kind="vod"))
    train, test = load_split(tmp_path / "ds", "time", 0.25)
    cut = max(p.offset for p in train)
    assert min(p.offset for p in test) > cut
    assert len(train) + len(test) <= len(pairs) and len(test) > 0.2 * len(pairs)
    assert not {p.target.casefold() for p in test} & {p.target.casefold() for p in train}

    (tmp_path / "files").mkdir()
    for name, part in (("train-0.parquet", train), ("test-0.parquet", test)):
        table = pa.Table.from_pylist([p.to_row() for p in part])
        pq.write_table(table, tmp_path / "files" / name)
    again = load_split(tmp_path / "files")
    assert again == (train, test)
    with pytest.raises(Exception, match="train"):
        load_split(tmp_path / "ds" / "data")  # parquet files, but neither split nor manifest
