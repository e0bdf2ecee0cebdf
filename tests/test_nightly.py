"""The nightly retrain for real: export -> train -> evaluate -> gate -> promote -> live swap.

Real parts throughout: a SQLite log written through ``Store`` with the demo
stream's script and chat, training with the ``cpu-tiny`` preset (the packaged
SmolLM2-135M) in a child process, scoring with transformers, the session's vLLM
engine picking the promoted adapter up through the pointer file, and
``chatling run`` in-process against the fake Twitch with the scheduler firing.
Steps are capped so the whole file stays within a few minutes on 2 cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from chatling.core.settings import Settings, load_settings
from chatling.learn.gate import GateOptions, decide
from chatling.learn.nightly import NightlyConfig, run_nightly
from chatling.learn.registry import AdapterRegistry
from chatling.learn.scoring import score_adapter
from chatling.learn.watcher import AdapterWatcher
from chatling.prompt import PromptBuilder
from chatling.responder import ChatResponder
from chatling.safety import SafetyFilter
from chatling.store import Store
from devtools.demo_log import write_demo_log

pytestmark = [pytest.mark.slow]


def nightly_config(tmp_path: Path, **overrides: Any) -> NightlyConfig:
    values: dict[str, Any] = dict(
        db_path=tmp_path / "log.sqlite",
        adapters_dir=tmp_path / "adapters",
        runs_dir=tmp_path / "runs",
        max_steps=3,
        min_new_pairs=20,
        eval_points=12,
        gate_generations=6,
        # Six samples cannot tell blocked shares apart; the rule is tested in test_adapters.
        gate=GateOptions(blocked_margin=1.0),
        threads=1,
        env_file=None,
    )
    values.update(overrides)
    return NightlyConfig(**values)


async def answer_adapter(engine: Any, store_path: Path, settings: Settings) -> str | None:
    """One /chat-style answer through the real engine; the adapter its log row names."""
    async with Store.open(store_path) as store:
        stream = await store.start_stream("check", "live", None, engine.model_name, None)
        responder = ChatResponder(
            settings.reply,
            engine,
            PromptBuilder(settings.reply, engine.count_tokens),
            SafetyFilter.from_settings(settings.reply),
            store,
            stream,
        )
        await responder.answer("viewer", "what do you think of the geese?", message_id=None)
        await store.flush()
        rows = await store.replies(stream)
    return rows[-1]["adapter"]


@pytest.fixture
def settings() -> Settings:
    return load_settings(None)


async def test_nightly_run_promotes_and_the_live_engine_switches(
    tmp_path: Path, engine: Any, settings: Settings
) -> None:
    config = nightly_config(tmp_path)
    await write_demo_log(config.db_path)
    registry = AdapterRegistry(config.adapters_dir)
    watcher = AdapterWatcher(registry, engine)
    await watcher.sync()
    try:
        assert await answer_adapter(engine, config.db_path, settings) is None

        steps: list[tuple[str, str]] = []
        outcome = await asyncio.to_thread(
            run_nightly, config, settings, on_step=lambda s, st: steps.append((s, st))
        )
        assert outcome.status == "promoted", outcome.reason
        assert outcome.candidate_version == "v0001"
        assert [s.name for s in outcome.steps] == ["export", "train", "dpo", "evaluate", "gate"]
        assert all(s.seconds >= 0 and s.peak_rss_mib > 0 for s in outcome.steps)
        timed = {s.name: s.seconds for s in outcome.steps}
        assert timed["train"] > 0 and timed["evaluate"] > 0, timed
        assert registry.pointer().version == "v0001"

        # The running engine picks the promotion up; the next reply is logged with it.
        assert await watcher.sync()
        adapter = await answer_adapter(engine, config.db_path, settings)
        assert adapter is not None and adapter.endswith("v0001"), adapter

        db = sqlite3.connect(config.db_path)
        row = db.execute(
            "SELECT status, new_pairs, current_metrics, candidate_metrics, candidate_version,"
            " ended_at FROM training_runs"
        ).fetchone()
        db.close()
        status, new_pairs, current, candidate, version, ended = row
        assert status == "promoted" and version == "v0001" and ended is not None
        assert new_pairs >= 20
        assert json.loads(current)["adapter"] == "base model"
        assert json.loads(candidate)["perplexity"] > 0
        # Six samples are too few for the writing classifier: recorded as not measured.
        assert "writing_auc" in json.loads(candidate)
        assert "writing AUC not measured" in outcome.metrics["gate"]["writing_auc"]["line"]
        meta = json.loads((registry.path_of("v0001") / "chatling_adapter.json").read_text())
        assert meta["nightly"]["run"] == outcome.run_id and meta["nightly"]["gate"]["promote"]

        # A run right after finds no new pairs: skipped, nothing changes.
        again = await asyncio.to_thread(run_nightly, config, settings)
        assert again.status == "skipped" and "new pairs" in again.reason
        assert registry.pointer().version == "v0001"

        # A forced-worse adapter (LoRA B scaled 40x) is rejected by the same gate.
        worse = tmp_path / "worse"
        _scaled_copy(registry.path_of("v0001"), worse, 40.0)
        points = _held_out(config, outcome)
        current_scores, _ = await asyncio.to_thread(
            score_adapter, "v0001", str(settings.model.name), registry.path_of("v0001"),
            points, settings, config,
        )  # fmt: skip
        worse_scores, _ = await asyncio.to_thread(
            score_adapter, "worse", str(settings.model.name), worse, points, settings, config
        )
        decision = decide(
            current_scores, worse_scores, [p.t for p in points], [p.source for p in points]
        )
        assert not decision.promote and "perplexity worse" in decision.reason, decision.reason

        # Rollback reaches the live engine too.
        registry.rollback()
        assert await watcher.sync()
        assert await answer_adapter(engine, config.db_path, settings) is None
        registry.promote("v0001")
        assert await watcher.sync()
    finally:
        await engine.set_adapter(None)


def _scaled_copy(source: Path, out: Path, factor: float) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(source, out)
    tensors = load_file(str(source / "adapter_model.safetensors"))
    tensors = {k: (v * factor if "lora_B" in k else v) for k, v in tensors.items()}
    save_file(tensors, str(out / "adapter_model.safetensors"))


def _held_out(config: NightlyConfig, outcome: Any) -> list[Any]:
    from chatling.training.eval.evaluate import CandidateSets

    sets, _ = CandidateSets.load(outcome.run_dir / "eval" / "candidates.json")
    return list(sets.points)


async def test_killed_training_leaves_the_serving_adapter(
    tmp_path: Path, engine: Any, settings: Settings
) -> None:
    from tests.test_adapters import fake_adapter

    config = nightly_config(tmp_path, max_steps=500)
    await write_demo_log(config.db_path)
    registry = AdapterRegistry(config.adapters_dir)
    registry.add(fake_adapter(tmp_path / "old"))
    registry.promote("v0001")
    killed: list[int] = []

    def kill_trainer() -> None:
        deadline = time.monotonic() + 300
        me = psutil.Process()
        while time.monotonic() < deadline and not killed:
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "chatling.cli.train" in " ".join(child.cmdline()):
                        log = next(config.runs_dir.glob("run-*/train.log"), None)
                        if log is not None and "step" in log.read_text(errors="replace"):
                            os.kill(child.pid, signal.SIGKILL)
                            killed.append(child.pid)
                            return
            time.sleep(0.5)

    killer = threading.Thread(target=kill_trainer)
    killer.start()
    outcome = await asyncio.to_thread(run_nightly, config, settings)
    killer.join()
    assert killed, "the trainer never started"
    assert outcome.status == "failed" and "signal 9" in outcome.reason, outcome.reason
    assert registry.pointer().version == "v0001"
    assert [v.name for v in registry.versions()] == ["v0001"]
    db = sqlite3.connect(config.db_path)
    status, error, ended = db.execute(
        "SELECT status, error, ended_at FROM training_runs"
    ).fetchone()
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    assert status == "failed" and "signal 9" in error and ended is not None


async def test_scheduler_skips_while_live_and_runs_when_offline(tmp_path: Path) -> None:
    from apscheduler.triggers.date import DateTrigger

    from chatling.core.settings import ScheduleSettings
    from chatling.learn.schedule import NightlyScheduler

    live = [True]
    done = tmp_path / "ran"
    command = ["python3", "-c", f"open({str(done)!r}, 'w').write('ok')"]
    soon = DateTrigger(run_date=None)
    async with NightlyScheduler(
        ScheduleSettings(enabled=True), lambda: live[0], trigger=soon, command=command
    ) as scheduler:
        for _ in range(50):
            if scheduler.fired:
                break
            await asyncio.sleep(0.1)
        assert scheduler.fired == 1 and scheduler.skipped == 1 and not done.exists()
        live[0] = False
        assert await scheduler.run_once() == 0
    assert done.read_text() == "ok"


def _trainer_running() -> bool:
    """Whether a `chatling train` child runs now. A child can end, or be a zombie not yet
    reaped, between the listing and the reading of its command line: that one is not."""
    for child in psutil.Process().children(recursive=True):
        try:
            if "chatling.cli.train" in " ".join(child.cmdline()):
                return True
        except psutil.Error:
            continue
    return False


async def test_scheduled_retrain_inside_chatling_run_keeps_chatting(
    tmp_path: Path, engine: Any
) -> None:
    """The scheduler fires inside a running app; chat is answered while the child trains;
    the promoted adapter then writes the next reply."""
    from datetime import UTC, datetime, timedelta

    from apscheduler.triggers.date import DateTrigger

    from chatling.live import run_live
    from devtools.fakes.twitch_server import FakeTwitch

    db = tmp_path / "live.sqlite"
    await write_demo_log(db)
    with FakeTwitch() as fake:
        access, refresh = fake.issue_tokens()
        lines = {
            **fake.env_settings(access, refresh, str(tmp_path / "tokens.json")),
            "CHATLING_STORAGE__DB_PATH": str(db),
            "CHATLING_AUDIO__ENABLED": "false",
            "CHATLING_REPLY__GLOBAL_COOLDOWN_S": "1",
            "CHATLING_REPLY__USER_COOLDOWN_S": "1",
            "CHATLING_REPLY__QUIET_INTERVAL_S": "600",
            "CHATLING_SCHEDULE__ENABLED": "true",
            "CHATLING_SCHEDULE__ONLY_WHEN_OFFLINE": "false",
            "CHATLING_SCHEDULE__ADAPTERS_DIR": str(tmp_path / "adapters"),
            "CHATLING_SCHEDULE__RUNS_DIR": str(tmp_path / "runs"),
            "CHATLING_SCHEDULE__MAX_STEPS": "3",
            "CHATLING_SCHEDULE__MIN_NEW_PAIRS": "20",
            "CHATLING_SCHEDULE__EVAL_POINTS": "12",
            "CHATLING_SCHEDULE__GATE_GENERATIONS": "6",
            "CHATLING_SCHEDULE__GATE_BLOCKED_MARGIN": "1.0",
        }
        env_file = tmp_path / ".env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
        settings = load_settings(env_file)
        trigger = DateTrigger(run_date=datetime.now(UTC) + timedelta(seconds=3))
        run = asyncio.create_task(
            run_live(
                settings,
                engine=engine,
                env_file=str(env_file),
                schedule_trigger=trigger,
                adapter_poll_s=0.5,
                run_for_s=900,
            )
        )
        pointer = tmp_path / "adapters" / "active.json"
        try:
            deadline = time.monotonic() + 120
            while fake._chat_target() is None:
                assert not run.done(), run
                assert time.monotonic() < deadline, "no EventSub subscription"
                await asyncio.sleep(0.2)
            # Chat while the retrain runs: every answer must still come.
            deadline = time.monotonic() + 600
            during = 0
            i = 0
            while not pointer.exists():
                assert not run.done(), run
                assert time.monotonic() < deadline, "the scheduled retrain never promoted"
                training = _trainer_running()
                before = len(fake.chat_posts)
                await fake.send_chat(f"@chatling are you still there? {i}", chatter=f"fan{i}")
                i += 1
                for _ in range(60):
                    if len(fake.chat_posts) > before:
                        break
                    await asyncio.sleep(0.25)
                if training and len(fake.chat_posts) > before:
                    during += 1
                await asyncio.sleep(1.0)
            assert during >= 1, "no chat answered while the trainer ran"
            for _ in range(40):
                if engine.adapter is not None:
                    break
                await asyncio.sleep(0.25)
            assert engine.adapter is not None and engine.adapter.path.endswith("v0001")
            # Ask until a reply is posted: a 3-step adapter's candidates may all be blocked
            # (copies of chat, stray @mentions), and the bot then rightly posts nothing.
            before = len(fake.chat_posts)
            for k in range(8):
                text = f"@chatling and now, with your new brain? {k}"
                await fake.send_chat(text, chatter=f"late{k}")
                for _ in range(60):
                    if len(fake.chat_posts) > before:
                        break
                    await asyncio.sleep(0.25)
                if len(fake.chat_posts) > before:
                    break
            assert len(fake.chat_posts) > before, "nothing posted after the promotion"
            os.kill(os.getpid(), signal.SIGTERM)  # chatling run's own handler stops it
            result = await asyncio.wait_for(run, 120)
        finally:
            if not run.done():
                run.cancel()
                with contextlib.suppress(BaseException):
                    await run
            await engine.set_adapter(None)
    assert result.stats.posted >= 2
    conn = sqlite3.connect(db)
    runs = conn.execute("SELECT trigger, status FROM training_runs").fetchall()
    last = conn.execute(
        "SELECT adapter FROM bot_replies WHERE status = 'posted' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    conn.close()
    assert runs == [("schedule", "promoted")]
    assert last[0] is not None and last[0].endswith("v0001"), last


async def test_dpo_step_on_marked_pairs_changes_the_adapter_and_is_gated(
    tmp_path: Path, settings: Settings
) -> None:
    """A handful of hand-made moderator marks: the run adds DPO after SFT, and what
    reaches the gate (and the registry, if promoted) is the DPO adapter."""
    from safetensors.torch import load_file

    from chatling.core.events import Reply

    config = nightly_config(tmp_path, min_preference_pairs=4)
    await write_demo_log(config.db_path)
    good = [
        "that goose is a genius LUL",
        "castle speedrun any% PogChamp",
        "chat we ride at dawn",
        "the geese have unionized KEKW",
    ]
    bad = [
        "buy followers at my site",
        "this stream is boring",
        "you are bad at this game",
        "nobody cares about geese",
    ]
    async with Store.open(config.db_path) as store:
        sid = await store.start_stream("marks", "live", None, "smollm2", None)
        for i, text in enumerate(good + bad):
            reply = Reply(10.0 * i, "discord", f"Stream: geese everywhere.\nViewer {i}: thoughts?",
                          [], chosen=text, status="posted", in_reply_to=f"discord:{i}")  # fmt: skip
            store.add_reply(sid, reply)
        for i in range(len(good + bad)):
            store.add_feedback(
                sid, f"discord:{i}", "good" if i < len(good) else "bad", "mod", "discord"
            )
        await store.end_stream(sid)

    outcome = await asyncio.to_thread(run_nightly, config, settings)
    dpo = next(s for s in outcome.steps if s.name == "dpo")
    assert "preference pairs" in dpo.detail, dpo.detail
    assert outcome.status in ("promoted", "rejected"), outcome.reason
    assert outcome.metrics["gate"], "the DPO adapter must go through the gate"
    run_dir = outcome.run_dir
    assert run_dir is not None
    sft = load_file(str(run_dir / "sft" / "adapter_model.safetensors"))
    after = load_file(str(run_dir / "dpo" / "adapter_model.safetensors"))
    assert any(not (sft[k] == after[k]).all() for k in sft), "DPO left the adapter unchanged"
    meta = json.loads((run_dir / "dpo" / "chatling_adapter.json").read_text())
    assert meta["dpo"] and meta["nightly"]["run"] == outcome.run_id
    db = sqlite3.connect(config.db_path)
    (prefs,) = db.execute("SELECT preference_pairs FROM training_runs").fetchone()
    db.close()
    assert prefs >= 4
