"""The preference step: marks in the real SQLite log -> pairs -> trl DPO of a real adapter.

Everything is real: ``chatling.store.Store`` writes the log that
``preference_pairs_from_db`` reads; the packaged SmolLM2-135M-Instruct gets a
tiny SFT adapter (2 steps of ``chatling train``) and trl's DPO trains it on six
hand-made pairs rendered with the live prompt builder. The DPO run is done
once per module (a few steps of two pairs on the CPU).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from chatling.core.errors import ConfigError
from chatling.core.events import Candidate, ChatMessage, Reply
from chatling.core.settings import ReplySettings
from chatling.training.dpo.preference import PreferencePair, live_system_prompt
from tests.test_train import make_pairs, tiny_preset, write_pairs

DPO_STEPS = 4
# Same contexts, two tones: the marks prefer the friendly reply.
REPLIES = [
    ("gg that was a clean run", "this streamer is trash lol"),
    ("nice one, the waterfall was a trap", "boring, nobody cares"),
    ("PogChamp that dodge", "uninstall the game already"),
    ("honk honk, goose army is proud", "worst stream i have ever seen"),
    ("good luck on the boss", "you will fail again lol"),
    ("that map check saved us", "stop wasting our time"),
]


def hand_made_pairs(tokenizer: Any) -> list[PreferencePair]:
    """Six pairs on the live prompt of test contexts (``render_prompt``, as SFT renders)."""
    from chatling.training.data.pairs import render_prompt
    from chatling.training.sft.collate import prompt_builder

    builder = prompt_builder(tokenizer)
    pairs = []
    for i, (pair, (good, bad)) in enumerate(zip(make_pairs(6, seed=21), REPLIES, strict=True)):
        parts = render_prompt(pair, builder)
        pairs.append(
            PreferencePair(
                parts.system, parts.user, good, bad, i + 1, i + 1, i + 1, (i + 1,), parts.form
            )
        )
    return pairs


# --- pairs from the log -------------------------------------------------------------------


def bot_reply(offset: float, text: str, prompt: str, **kw: Any) -> Reply:
    candidates = kw.pop("candidates", [Candidate(text, True, "ok", 0.9)])
    return Reply(offset, "quiet", prompt, list(candidates), chosen=text, status="posted", **kw)


async def test_marks_resolve_to_bot_replies_and_the_latest_mark_wins(tmp_path: Path) -> None:
    from chatling.store import Store
    from chatling.training.dpo.preference import preference_pairs_from_db

    now = [0.0]
    path = tmp_path / "chatling.sqlite"
    async with Store.open(path, clock=lambda: now[0]) as store:
        sid = await store.start_stream("live", "twitch")

        def at(t: float) -> int:
            now[0] = t
            return sid

        store.add_reply(at(10), bot_reply(10, "gg nice run", "prompt 0"))
        store.add_reply(
            at(100),
            bot_reply(
                100,
                "gg nice run",
                "prompt 1",
                candidates=[
                    Candidate("gg nice run", True, "ok", 0.9),
                    Candidate("you suck lol", False, "blocked_term", 0.8),
                    Candidate("nice", True, "ok", 0.5),
                ],
            ),
        )
        store.add_reply(at(105), bot_reply(105, "ur bad at this", "prompt 2"))
        # The bot's own post of R2 as it came back from Twitch, and a viewer's message.
        echo = ChatMessage(106, "chatling", "ur bad at this", message_id="tw-2", is_bot=True)
        store.add_chat(at(106), echo)
        viewer = ChatMessage(107, "viewer", "gg nice run", message_id="tw-v", source="twitch")
        store.add_chat(at(107), viewer)
        discord = [
            Candidate("hello from discord", True, "ok", 0.9),
            Candidate("go away", True, "ok", 0.2),
        ]
        r3 = bot_reply(120, "hello from discord", "prompt 3", candidates=discord)
        r3.in_reply_to = "discord:42"
        store.add_reply(at(120), r3)
        r4 = bot_reply(125, "whatever", "prompt 4")
        r4.in_reply_to = "discord:43"
        store.add_reply(at(125), r4)
        # Marks, oldest first (feedback ids 1..7).
        store.add_feedback(at(130), "tw-1", "good", "mod", "twitch", "gg nice run")  # no chat row
        store.add_feedback(at(131), "tw-2", "bad", "mod", "twitch")  # text from the chat row
        store.add_feedback(at(132), "discord:42", "bad", "mod", "discord")
        store.add_feedback(at(140), "discord:42", "good", "mod", "discord")  # the latest wins
        store.add_feedback(at(141), "tw-v", "bad", "mod", "twitch", "gg nice run")  # a viewer's
        store.add_feedback(at(142), "discord:43", "bad", "mod", "discord")
        store.add_feedback(at(143), "discord:99", "good", "mod", "discord")  # no such reply
        # Posted after the marks, with the marked text: not what the first mark meant.
        store.add_reply(at(300), bot_reply(300, "gg nice run", "prompt 5"))
        await store.flush()
        ids = {r["prompt"]: r["id"] for r in await store.replies(sid)}

    pairs = preference_pairs_from_db(path, settings=ReplySettings(prompt_form="chat"))
    system = live_system_prompt(ReplySettings(prompt_form="chat"))
    assert "chat" in system and all(p.system == system and p.form == "chat" for p in pairs)
    # The log form (the default) has no system turn: the pairs say which form they are in.
    assert all(p.system == "" and p.form == "log" for p in preference_pairs_from_db(path))
    got = [
        (p.user, p.chosen, p.rejected, p.chosen_reply_id, p.rejected_reply_id, p.feedback_ids)
        for p in pairs
    ]
    r1, r2, r3, r4 = (ids[f"prompt {i}"] for i in range(1, 5))
    assert got == [
        # good on R1 (not R0 before it nor R5 after the mark): its lowest-scored other candidate
        ("prompt 1", "gg nice run", "nice", r1, r1, (1,)),
        # bad on R2: the good reply closest in time (R1, 5 s before) is preferred on R2's prompt
        ("prompt 2", "gg nice run", "ur bad at this", r1, r2, (2, 1)),
        # R3: marked bad, then good: good
        ("prompt 3", "hello from discord", "go away", r3, r3, (4,)),
        # bad on R4: R3 is the closest good reply
        ("prompt 4", "hello from discord", "whatever", r3, r4, (6, 4)),
    ]
    assert [p.prompt_reply_id for p in pairs] == [r1, r2, r3, r4]


def test_a_mark_matches_the_posted_text_with_a_leading_mention() -> None:
    from chatling.training.dpo.preference import same_text

    assert same_text("gg nice run", " gg nice run ")
    assert same_text("gg nice run", "@viewer gg nice run")
    assert not same_text("gg nice run", "gg nice run!")
    assert not same_text("", "")


def test_too_few_pairs_skip_the_step_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from chatling.training.dpo.dpo import maybe_train_dpo

    pair = PreferencePair("s", "u", "a", "b", 1, 1, 1, (1,))
    with caplog.at_level(logging.INFO, logger="chatling.training.dpo.dpo"):
        out = maybe_train_dpo(tmp_path / "no-adapter", [pair] * 3, tmp_path / "out", tiny_preset())
    assert out is None and not (tmp_path / "out").exists()
    assert "preference step skipped: 3 marked pairs, fewer than min_preference_pairs=8" in (
        caplog.text
    )


# --- the DPO step ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from chatling.core.paths import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        pytest.fail("packaged models are not provisioned: run `make test` (or `make setup`)")
    return AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)


def test_dpo_sees_the_prompt_the_live_engine_sends(tokenizer: Any) -> None:
    from types import SimpleNamespace

    from chatling.engine import VllmEngine
    from chatling.training.dpo.preference import encode_preference

    # render only reads .tokenizer: the ids the live engine would send for this prompt.
    live = SimpleNamespace(tokenizer=tokenizer)
    for pair in hand_made_pairs(tokenizer):
        encoded = encode_preference(pair, tokenizer)
        assert encoded.prompt_ids == VllmEngine.render(live, pair.parts)  # type: ignore[arg-type]
        # The log form: the reply is the chat log's next line, ended by its newline.
        assert pair.form == "log"
        assert tokenizer.decode(encoded.chosen_ids) == f" {pair.chosen}\n"
        assert tokenizer.decode(encoded.rejected_ids) == f" {pair.rejected}\n"
    for pair in hand_made_pairs(tokenizer):  # the chat form: the assistant turn
        chat = dataclasses.replace(pair, system="persona", form="chat")
        encoded = encode_preference(chat, tokenizer)
        assert encoded.prompt_ids == VllmEngine.render_chat(live, chat.system, chat.user)  # type: ignore[arg-type]
        assert tokenizer.decode(encoded.chosen_ids) == chat.chosen + tokenizer.eos_token


@pytest.fixture(scope="module")
def sft_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two SFT steps at a high rate: an adapter measurably unlike the base."""
    from chatling.training.sft.train import TrainRequest, train

    root = tmp_path_factory.mktemp("sft")
    data = write_pairs(root / "pairs", make_pairs(8, seed=4))
    preset = tiny_preset(steps=2, lr=2e-3, save_steps=100)
    return train(TrainRequest(data=data, out=root / "adapter", preset=preset)).adapter_dir


@pytest.fixture(scope="module")
def dpo_run(
    sft_adapter: Path, tokenizer: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[PreferencePair], list[dict[str, Any]]]:
    from transformers import TrainerCallback

    from chatling.training.dpo.dpo import train_dpo

    records: list[dict[str, Any]] = []

    class Record(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            records.append(dict(logs or {}))

    pairs = hand_made_pairs(tokenizer)
    out = tmp_path_factory.mktemp("dpo") / "adapter"
    result = train_dpo(
        sft_adapter, pairs, out, tiny_preset(), steps=DPO_STEPS, lr=1e-3, callbacks=[Record()]
    )
    assert result == out
    return out, pairs, records


@pytest.mark.slow
def test_dpo_changes_the_adapter_and_keeps_its_layout(
    sft_adapter: Path, dpo_run: tuple[Path, list[PreferencePair], list[dict[str, Any]]]
) -> None:
    from safetensors.torch import load_file

    out, _, _ = dpo_run
    assert sorted(os.listdir(out)) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "chatling_adapter.json",
    ]
    assert not any(p.name.endswith(".partial") for p in out.parent.iterdir())
    before = load_file(sft_adapter / "adapter_model.safetensors")
    after = load_file(out / "adapter_model.safetensors")
    # The trained adapter only (trl's frozen "ref" copy is not saved), same tensors.
    assert sorted(after) == sorted(before)
    assert all(after[k].shape == before[k].shape for k in before)
    changed = [k for k in before if not after[k].float().equal(before[k].float())]
    assert len(changed) > len(before) // 2
    sft_config = json.loads((sft_adapter / "adapter_config.json").read_text())
    dpo_config = json.loads((out / "adapter_config.json").read_text())
    for key in ("r", "lora_alpha", "target_modules", "base_model_name_or_path"):
        assert dpo_config[key] == sft_config[key], key


@pytest.mark.slow
def test_dpo_writes_provenance_and_trains_against_the_sft_adapter(
    sft_adapter: Path, dpo_run: tuple[Path, list[PreferencePair], list[dict[str, Any]]]
) -> None:
    import hashlib

    from chatling.training.sft.train import METADATA_FILE

    out, pairs, logs = dpo_run
    sft_meta = json.loads((sft_adapter / METADATA_FILE).read_text())
    meta = json.loads((out / METADATA_FILE).read_text())
    for key in ("preset", "dataset", "base_model"):
        assert meta[key] == sft_meta[key], key
    dpo = meta["dpo"]
    assert (dpo["pairs"], dpo["beta"], dpo["steps"]) == (6, 0.1, DPO_STEPS)
    assert dpo["started_from"]["path"] == str(sft_adapter.resolve())
    sha = hashlib.sha256((sft_adapter / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert dpo["started_from"]["adapter_sha256"] == sha
    assert dpo["feedback_ids"] == [p.feedback_ids[0] for p in pairs]
    assert [s for s, _ in dpo["loss_curve"]] == list(range(1, DPO_STEPS + 1))
    assert dpo["time"]["train_seconds"] > 0 and dpo["code_version"]
    # The reference is the SFT adapter itself: at the first step the policy (the same
    # adapter) has exactly zero reward on both replies, and the loss is log 2.
    first = next(e for e in logs if "loss" in e)
    assert first["rewards/chosen"] == 0.0 and first["rewards/rejected"] == 0.0
    assert first["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert dpo["final_metrics"]["rewards/margins"] > 0
    assert dpo["final_loss"] < first["loss"]


@pytest.mark.slow
def test_dpo_widens_the_preference_margin_on_its_pairs(
    sft_adapter: Path,
    tokenizer: Any,
    dpo_run: tuple[Path, list[PreferencePair], list[dict[str, Any]]],
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from chatling.core.paths import DEFAULT_MODEL_DIR
    from chatling.training.dpo.preference import preference_margins

    out, pairs, _ = dpo_run
    base = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR, dtype=torch.bfloat16)
    # Adapters in bf16 like the base (peft would upcast them: 2-4x slower on the CPU).
    model = PeftModel.from_pretrained(
        base, str(sft_adapter), adapter_name="sft", autocast_adapter_dtype=False
    )
    model.load_adapter(str(out), adapter_name="dpo", autocast_adapter_dtype=False)
    model.set_adapter("sft")
    before = preference_margins(model, tokenizer, pairs)
    with model.disable_adapter():
        bare = preference_margins(model, tokenizer, pairs)
    # The SFT adapter is not the base: a reference taken from the base (adapters off) would
    # have shown non-zero rewards at DPO's first step (see the provenance test).
    assert max(abs(s - b) for s, b in zip(before, bare, strict=True)) > 0.05
    model.set_adapter("dpo")
    after = preference_margins(model, tokenizer, pairs)
    gains = [a - b for a, b in zip(after, before, strict=True)]
    # Measured: +5 to +22 nats a pair after 4 steps (bf16 on the CPU).
    assert all(g > 0.5 for g in gains) and sum(gains) / len(gains) > 2.0, gains


@pytest.mark.slow
def test_a_failed_dpo_run_leaves_no_output(
    sft_adapter: Path, tokenizer: Any, tmp_path: Path
) -> None:
    from transformers import TrainerCallback

    from chatling.training.dpo.dpo import train_dpo

    class Crash(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            raise RuntimeError("power cut")

    out = tmp_path / "adapter"
    with pytest.raises(RuntimeError, match="power cut"):
        train_dpo(
            sft_adapter,
            hand_made_pairs(tokenizer),
            out,
            tiny_preset(),
            steps=1,
            callbacks=[Crash()],
        )
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        train_dpo(sft_adapter, hand_made_pairs(tokenizer), out, tiny_preset(), steps=1)
