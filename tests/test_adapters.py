"""The adapter registry, the promotion gate's rule and the runs table: fast, no model.

The engine side (a promoted or rolled-back adapter reaching the running vLLM
engine) is in tests/test_nightly.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from chatling.core.errors import ConfigError, ModelError
from chatling.learn.gate import AdapterScores, GateOptions, decide
from chatling.learn.registry import AdapterRegistry, check_adapter_dir
from chatling.learn.scoring import writing_auc
from chatling.store import Store
from chatling.store.runlog import RunLog


def fake_adapter(path: Path, marker: str = "x") -> Path:
    """A directory with the files of a LoRA adapter (a valid, tiny safetensors file)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8, "marker": marker}))
    header = json.dumps({"__metadata__": {"marker": marker}}).encode()
    (path / "adapter_model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    (path / "chatling_adapter.json").write_text(json.dumps({"preset": {"name": "cpu-tiny"}}))
    return path


# -- registry ----------------------------------------------------------------------


def test_add_promote_rollback_move_the_pointer(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    assert registry.active() is None and registry.versions() == []
    v1 = registry.add(fake_adapter(tmp_path / "a1", "one"))
    v2 = registry.add(fake_adapter(tmp_path / "a2", "two"))
    assert (v1.name, v2.name) == ("v0001", "v0002")
    assert registry.active() is None, "adding must not activate"
    registry.promote("v0001")
    registry.promote("v0002")
    active = registry.active()
    assert active is not None and active.name == "v0002"
    assert json.loads((active.path / "adapter_config.json").read_text())["marker"] == "two"
    assert [v.name for v in registry.versions() if v.active] == ["v0002"]
    assert registry.rollback().version == "v0001"
    assert registry.rollback().version is None  # back to the base model
    with pytest.raises(ConfigError, match="no active adapter"):
        registry.rollback()


def test_broken_adapter_is_refused_and_pointer_kept(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    registry.add(fake_adapter(tmp_path / "a1"))
    registry.promote("v0001")
    with pytest.raises(ModelError, match="missing"):
        registry.add(_empty_dir(tmp_path / "empty"))
    v2 = registry.add(fake_adapter(tmp_path / "a2"))
    (v2.path / "adapter_model.safetensors").write_bytes(b"\xff" * 16)  # corrupted on disk
    with pytest.raises(ModelError, match="corrupt"):
        registry.promote("v0002")
    assert registry.pointer().version == "v0001"
    with pytest.raises(ConfigError, match="not an adapter version"):
        registry.promote("../etc")


def _empty_dir(path: Path) -> Path:
    path.mkdir()
    return path


def test_pointer_is_replaced_atomically(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    registry.add(fake_adapter(tmp_path / "a1"))
    registry.promote("v0001")
    inode = os.stat(registry.pointer_path).st_ino
    registry.promote("v0001")
    assert os.stat(registry.pointer_path).st_ino != inode, "must be a new file, renamed over"
    leftovers = [p.name for p in registry.root.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    registry.pointer_path.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable adapter pointer"):
        registry.pointer()


def test_check_adapter_dir_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such adapter directory"):
        check_adapter_dir(tmp_path / "missing")
    path = fake_adapter(tmp_path / "a")
    check_adapter_dir(path)
    (path / "adapter_config.json").write_text("{")
    with pytest.raises(ModelError, match=r"adapter_config\.json"):
        check_adapter_dir(path)


# -- the gate's rule ----------------------------------------------------------------


def _scores(recall: list[float], mrr: list[float], ppl: float, blocked: int = 0) -> AdapterScores:
    return AdapterScores(
        "x", {"recall@10": np.asarray(recall), "mrr": np.asarray(mrr)}, ppl, blocked, 20
    )


def _points(n: int) -> tuple[list[float], list[str]]:
    return [float(i * 70) for i in range(n)], ["s"] * n


def test_gate_promotes_an_equal_or_better_adapter() -> None:
    rng = np.random.default_rng(0)
    r = rng.integers(0, 2, 40).astype(float)
    m = rng.random(40)
    times, sources = _points(40)
    same = decide(_scores(r, m, 50.0), _scores(r, m, 50.0), times, sources)
    assert same.promote, same.reasons
    better = decide(_scores(r, m, 50.0), _scores(np.ones(40), m + 0.1, 40.0), times, sources)
    assert better.promote and "recall@10" in better.reason


def test_gate_rejects_worse_ranking_perplexity_or_more_blocks() -> None:
    times, sources = _points(40)
    good = _scores([1.0] * 40, [0.5] * 40, 50.0, blocked=1)
    worse_recall = decide(good, _scores([0.0] * 30 + [1.0] * 10, [0.5] * 40, 50.0), times, sources)
    assert not worse_recall.promote and "recall@10 worse" in worse_recall.reason
    worse_mrr = decide(good, _scores([1.0] * 40, [0.1] * 40, 50.0), times, sources)
    assert not worse_mrr.promote and "mrr worse" in worse_mrr.reason
    worse_ppl = decide(good, _scores([1.0] * 40, [0.5] * 40, 60.0), times, sources)
    assert not worse_ppl.promote and "perplexity worse" in worse_ppl.reason
    within = decide(good, _scores([1.0] * 40, [0.5] * 40, 50.5), times, sources)
    assert within.promote, "a 1% perplexity change is within the default 2% margin"
    blocked = decide(good, _scores([1.0] * 40, [0.5] * 40, 50.0, blocked=5), times, sources)
    assert not blocked.promote and "more replies blocked" in blocked.reason
    lenient = decide(
        good,
        _scores([1.0] * 40, [0.5] * 40, 50.0, blocked=5),
        times,
        sources,
        GateOptions(blocked_margin=0.5),
    )
    assert lenient.promote


def test_gate_noise_within_the_interval_is_not_worse() -> None:
    # One point of 40 flips: a drop of 0.025 that the paired interval covers.
    times, sources = _points(40)
    current = _scores([1.0] * 20 + [0.0] * 20, [0.5] * 40, 50.0)
    candidate = _scores([1.0] * 19 + [0.0] * 21, [0.5] * 40, 50.0)
    assert decide(current, candidate, times, sources).promote


def test_gate_a_hair_worse_everywhere_is_within_the_rank_margin() -> None:
    # Every point's MRR down by 0.0003 (a 3-step adapter): the paired interval lies wholly
    # below zero, yet no worse a model; 0.02 everywhere is beyond the default margin.
    times, sources = _points(40)
    current = _scores([1.0] * 40, [0.5] * 40, 50.0)
    hair = decide(current, _scores([1.0] * 40, [0.4997] * 40, 50.0), times, sources)
    assert hair.promote, hair.reasons
    assert hair.checks["mrr"]["ci95"][1] < 0.0
    worse = decide(current, _scores([1.0] * 40, [0.48] * 40, 50.0), times, sources)
    assert not worse.promote and "mrr worse" in worse.reason
    strict = decide(
        current,
        _scores([1.0] * 40, [0.4997] * 40, 50.0),
        times,
        sources,
        GateOptions(rank_margin=0.0),
    )
    assert not strict.promote


def test_gate_with_ranking_reported_promotes_a_worse_ranker_and_records_it() -> None:
    # The served writer on DougDoug ranks worse than the base model yet reads more like chat
    # (docs/results.md, round 4): with `gate_ranking=reported` (the setting's default) the
    # drop is recorded, and perplexity and the blocked share still gate.
    times, sources = _points(40)
    current = _scores([1.0] * 40, [0.5] * 40, 50.0)
    worse_ranker = _scores([0.0] * 30 + [1.0] * 10, [0.1] * 40, 40.0)
    reported = GateOptions(ranking_required=False)
    decision = decide(current, worse_ranker, times, sources, reported)
    assert decision.promote, decision.reasons
    assert decision.checks["mrr"]["passed"] is False and decision.checks["mrr"]["gating"] is False
    assert "reported, not gating" in decision.reason
    assert not decide(current, worse_ranker, times, sources).promote  # `required`
    worse_ppl = decide(current, _scores([1.0] * 40, [0.5] * 40, 60.0), times, sources, reported)
    assert not worse_ppl.promote and "perplexity worse" in worse_ppl.reason


def test_gate_ranking_setting_reaches_the_nightly_config() -> None:
    from chatling.core.settings import Settings
    from chatling.learn.config import NightlyConfig

    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert not NightlyConfig.from_settings(defaults, env_file=None).gate.ranking_required
    strict = Settings(_env_file=None, schedule={"gate_ranking": "required"})  # type: ignore[call-arg]
    assert NightlyConfig.from_settings(strict, env_file=None).gate.ranking_required


def _writer(auc: float) -> AdapterScores:
    return dataclasses.replace(
        _scores([1.0] * 40, [0.5] * 40, 50.0), writing_auc=auc, writing_auc_std=0.05
    )


def test_gate_writing_check_is_recorded_by_default_and_refuses_when_required() -> None:
    times, sources = _points(40)
    current, worse_writer, better_writer = _writer(0.70), _writer(0.80), _writer(0.62)
    recorded = decide(current, worse_writer, times, sources)
    assert recorded.promote, recorded.reasons
    check = recorded.checks["writing_auc"]
    assert check["passed"] is False and check["gating"] is False
    assert check["candidate"] == 0.80 and check["current"] == 0.70
    assert "writing AUC 0.800" in recorded.reason and "reported, not gating" in recorded.reason
    required = GateOptions(writing_required=True)
    refused = decide(current, worse_writer, times, sources, required)
    assert not refused.promote and "writes less like chat" in refused.reason
    assert decide(current, better_writer, times, sources, required).promote
    within = decide(current, _writer(0.74), times, sources, required)  # inside the 0.05 margin
    assert within.promote, within.reasons


def test_gate_writing_unmeasured_passes_and_says_so() -> None:
    times, sources = _points(40)
    unmeasured = _scores([1.0] * 40, [0.5] * 40, 50.0)  # writing_auc NaN: too few samples
    decision = decide(_writer(0.6), unmeasured, times, sources, GateOptions(writing_required=True))
    assert decision.promote, decision.reasons
    assert "writing AUC not measured" in decision.checks["writing_auc"]["line"]
    assert decision.checks["writing_auc"]["candidate"] is None


def test_writing_auc_tells_another_style_from_chat_and_not_chat_from_itself() -> None:
    rng = random.Random(0)
    words = ["pog", "LUL", "W", "KEKW", "no way", "GG", "lets go", "true", "LMAO", "what"]
    chat = [" ".join(rng.choices(words, k=rng.randint(1, 3))) for _ in range(120)]
    more_chat = [" ".join(rng.choices(words, k=rng.randint(1, 3))) for _ in range(120)]
    essays = [
        f"As a helpful assistant, I think topic number {i} is quite interesting indeed."
        for i in range(120)
    ]
    assert writing_auc(chat, essays, seed=0)["mean"] > 0.95
    assert abs(writing_auc(chat, more_chat, seed=0)["mean"] - 0.5) < 0.15
    assert math.isnan(writing_auc(chat[:5], essays[:5], seed=0)["mean"])  # too few to fit
    assert math.isnan(writing_auc(chat, [""] * 120, seed=0)["mean"])  # nothing was written


def test_gate_writing_setting_reaches_the_nightly_config() -> None:
    from chatling.core.settings import Settings
    from chatling.learn.config import NightlyConfig

    defaults = NightlyConfig.from_settings(Settings(_env_file=None), env_file=None)  # type: ignore[call-arg]
    assert not defaults.gate.writing_required and defaults.gate.writing_margin == 0.05
    strict = Settings(  # type: ignore[call-arg]
        _env_file=None, schedule={"gate_writing": "required", "gate_writing_margin": 0.02}
    )
    gate = NightlyConfig.from_settings(strict, env_file=None).gate
    assert gate.writing_required and gate.writing_margin == 0.02


# -- the runs table -------------------------------------------------------------------


async def _new_db(path: Path) -> None:
    async with Store.open(path):
        pass


async def test_reconcile_closes_rows_of_dead_runs(tmp_path: Path) -> None:
    db = tmp_path / "log.sqlite"
    await _new_db(db)
    registry = AdapterRegistry(tmp_path / "adapters")
    registry.add(fake_adapter(tmp_path / "a1"))
    runs = RunLog(db)
    try:
        killed = runs.start("schedule", None)
        promoted_then_killed = runs.start("schedule", None)
        runs.update(promoted_then_killed, candidate_version="v0001")
        registry.promote("v0001")
        assert runs.reconcile(registry.pointer().version) == 2
        rows = {r["id"]: r for r in runs.rows()}
    finally:
        runs.close()
    assert rows[killed]["status"] == "failed" and "ended before" in rows[killed]["error"]
    assert rows[promoted_then_killed]["status"] == "promoted"
    assert all(r["ended_at"] is not None for r in rows.values())


async def test_a_promotion_that_fails_midway_leaves_its_row_running(tmp_path: Path) -> None:
    """The promotion's row update and pointer move are one transaction: a failure in
    between rolls the row back, so the next run's ``reconcile`` judges it."""
    db = tmp_path / "log.sqlite"
    await _new_db(db)
    runs = RunLog(db)
    try:
        failed, promoted = runs.start("manual", None), runs.start("manual", None)
        with pytest.raises(OSError, match="disk gone"), runs.transaction():
            runs.finish(failed, "promoted", "passed the gate")
            raise OSError("disk gone")  # e.g. the pointer file could not be written
        with runs.transaction():
            runs.finish(promoted, "promoted", "passed the gate")
        status = {r["id"]: r["status"] for r in runs.rows()}
    finally:
        runs.close()
    assert status == {failed: "running", promoted: "promoted"}


def test_runlog_refuses_an_old_or_missing_database(tmp_path: Path) -> None:
    from chatling.core.errors import StoreError

    with pytest.raises(StoreError, match="no such database"):
        RunLog(tmp_path / "none.sqlite")
    old = tmp_path / "old.sqlite"
    conn = sqlite3.connect(old)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with pytest.raises(StoreError, match="no training_runs"):
        RunLog(old)
