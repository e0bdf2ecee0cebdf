"""``chatling train``: LoRA SFT of the packaged model on pairs, with real trl/peft training.

Everything is real: the packaged SmolLM2-135M-Instruct, trl's trainer on the
CPU, pair parquet files written here, and the session's vLLM engine loading
the trained adapter. Runs are a few steps on ~30 short pairs to keep the
time modest on 2 cores.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chatling.core.errors import ConfigError, InputFileError
from chatling.core.paths import DEFAULT_MODEL_DIR
from chatling.core.settings import ReplySettings
from chatling.training.data.pairs import Pair

SPEECH = [
    "okay chat we are going left this time",
    "that boss has way too much health",
    "I think the shop is behind the waterfall",
    "wait wait wait, did you see that",
    "let me check the map real quick",
    "we need three more feathers for the upgrade",
]
CHAT = [
    "mossy: go left",
    "pixelpanda: KEKW",
    "tinytomato: the waterfall one is a trap",
    "llamadrama42: LUL",
    "honkfan: honk honk",
    "quietviewer: first time here, love the vibes",
]
TARGETS = [
    "go right instead",
    "KEKW that was close",
    "the shop is left of the bridge",
    "LUL chat called it",
    "honk for the goose army",
    "check the map again",
    "PogChamp",
]


def make_pairs(count: int, *, target: str | None = None, seed: int = 0) -> list[Pair]:
    rng = random.Random(seed)
    return [
        Pair(
            source="test",
            offset=30.0 + i,
            transcript=tuple(rng.sample(SPEECH, 2)),
            chat=tuple(rng.sample(CHAT, 3)),
            target=target or rng.choice(TARGETS),
            user=f"viewer{i}",
        )
        for i in range(count)
    ]


def write_pairs(directory: Path, pairs: list[Pair], name: str = "train.parquet") -> Path:
    import datasets

    directory.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list([p.to_row() for p in pairs]).to_parquet(str(directory / name))
    return directory


def tiny_preset(**overrides: Any) -> Any:
    from chatling.training.sft.presets import get_preset, with_overrides

    defaults: dict[str, Any] = dict(steps=4, batch_size=2, max_length=384, save_steps=2)
    return with_overrides(get_preset("cpu-tiny"), **{**defaults, **overrides})


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        pytest.fail("packaged models are not provisioned: run `make test` (or `make setup`)")
    return AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)


@pytest.fixture(scope="module")
def base_model() -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    # bf16 as cpu-tiny trains (float32 ran ~10x slower on this CPU).
    model = AutoModelForCausalLM.from_pretrained(
        DEFAULT_MODEL_DIR, dtype=torch.bfloat16, attn_implementation="sdpa"
    )
    return model.eval()


# --- tokenisation and labels -------------------------------------------------------------


def test_labels_cover_only_the_message_and_end_of_turn(tokenizer: Any) -> None:
    from chatling.engine import VllmEngine
    from chatling.training.data.pairs import render_prompt
    from chatling.training.sft.collate import IGNORE_INDEX, encode_pair, label_text, prompt_builder

    builder = prompt_builder(tokenizer)
    # render_chat only reads .tokenizer: the ids the live engine would send for this prompt.
    live = SimpleNamespace(tokenizer=tokenizer)
    for pair in make_pairs(5):
        encoded = encode_pair(pair, builder, tokenizer)
        # The log form (default): the message is the log's next line, ended by its newline.
        assert label_text(tokenizer, encoded.labels) == f" {pair.target}\n"
        prompt_len = encoded.labels.index(next(t for t in encoded.labels if t != IGNORE_INDEX))
        assert all(t == IGNORE_INDEX for t in encoded.labels[:prompt_len])
        assert encoded.labels[prompt_len:] == encoded.input_ids[prompt_len:]
        parts = render_prompt(pair, builder)
        assert encoded.input_ids[:prompt_len] == VllmEngine.render(live, parts)  # type: ignore[arg-type]
    chat_builder = prompt_builder(tokenizer, ReplySettings(prompt_form="chat"))
    for pair in make_pairs(3):  # the chat form: the assistant turn and its end-of-turn token
        encoded = encode_pair(pair, chat_builder, tokenizer)
        assert label_text(tokenizer, encoded.labels) == pair.target + tokenizer.eos_token
        prompt_len = encoded.labels.index(next(t for t in encoded.labels if t != IGNORE_INDEX))
        parts = render_prompt(pair, chat_builder)
        assert encoded.input_ids[:prompt_len] == VllmEngine.render_chat(
            live, parts.system, parts.user
        )  # type: ignore[arg-type]


def test_packed_rows_collator_positions_and_labels(tokenizer: Any) -> None:
    from chatling.training.sft.collate import IGNORE_INDEX, PackedRowsCollator

    rows = [
        {"input_ids": [5, 6, 7, 8, 9], "labels": [-100, -100, 7, 8, 9], "seq_lengths": [3, 2]},
        {"input_ids": [1, 2], "labels": [-100, 2], "seq_lengths": [2]},
    ]
    collator = PackedRowsCollator(pad_token_id=0)
    batch = collator(rows)
    assert "attention_mask" not in batch
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    # The first token of each example and all padding carry no loss.
    assert batch["labels"].tolist() == [[-100, -100, 7, -100, 9], [-100, 2, -100, -100, -100]]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [1, 2, 0, 0, 0]]
    assert collator.real_tokens == 7
    assert IGNORE_INDEX == -100


@pytest.mark.parametrize("layout", ["rows", "flat"])
def test_packed_examples_do_not_attend_to_each_other(
    tokenizer: Any, base_model: Any, layout: str
) -> None:
    """Logits of packed examples match those of each example run alone (SDPA on CPU)."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from chatling.training.sft.collate import (
        Encoded,
        PackedRowsCollator,
        encode_pair,
        prompt_builder,
    )

    builder = prompt_builder(tokenizer)
    # The last 60 tokens of real examples (chat lines + message): short, and not alike.
    tails = [encode_pair(p, builder, tokenizer) for p in make_pairs(3, seed=1)]
    examples = [
        Encoded(e.input_ids[-60 + 7 * i :], e.labels[-60 + 7 * i :]) for i, e in enumerate(tails)
    ]
    lengths = [len(e.input_ids) for e in examples]
    row = {
        "input_ids": [t for e in examples for t in e.input_ids],
        "labels": [t for e in examples for t in e.labels],
        "seq_lengths": lengths,
    }
    if layout == "rows":
        batch = PackedRowsCollator(pad_token_id=tokenizer.pad_token_id)([row])
        inputs = {k: batch[k] for k in ("input_ids", "position_ids")}
    else:
        batch = DataCollatorForLanguageModeling(tokenizer.pad_token_id, padding_free=True)([row])
        inputs = {k: v for k, v in batch.items() if k != "labels"}

    def mean_gap(a: Any, b: Any) -> float:
        return float((a.float() - b.float()).abs().mean())

    with torch.no_grad():
        # As in training (trl passes use_cache=False): a KV cache would turn the packed masks off.
        packed = base_model(**inputs, use_cache=False).logits[0]
        start = 0
        for example, n in zip(examples, lengths, strict=True):
            alone = base_model(input_ids=torch.tensor([example.input_ids])).logits[0]
            here = packed[start : start + n]
            # bf16 rounding differs with the sequence length: ~0.1 on average, same argmax.
            assert mean_gap(here, alone) < 0.3, start
            assert (here.argmax(-1) == alone.argmax(-1)).float().mean() > 0.9, start
            start += n
        # Control: without positions that restart, later examples see the earlier ones
        # (measured: a mean gap of 3-4 logits).
        run_on = base_model(input_ids=batch["input_ids"], use_cache=False).logits[0]
        second = slice(lengths[0], lengths[0] + lengths[1])
        assert mean_gap(run_on[second], packed[second]) > 1.0


# --- data files and presets --------------------------------------------------------------


def test_pair_files_are_found_hashed_and_checked(tmp_path: Path) -> None:
    import datasets

    from chatling.training.sft.collate import find_pair_files, load_train_pairs

    data = write_pairs(tmp_path / "d", make_pairs(4))
    write_pairs(data, make_pairs(2, seed=3), name="eval.parquet")
    files = find_pair_files(data)
    assert [p.name for p in files.files] == ["train.parquet"]
    assert len(load_train_pairs(files)) == 4
    again = find_pair_files(data)
    assert again.sha256 == files.sha256
    write_pairs(data, make_pairs(4, seed=9))
    assert find_pair_files(data).sha256 != files.sha256

    bad = tmp_path / "bad"
    bad.mkdir()
    datasets.Dataset.from_list([{"text": "hi"}]).to_parquet(str(bad / "x.parquet"))
    with pytest.raises(InputFileError, match=r"x\.parquet.*lacks the pair column"):
        load_train_pairs(find_pair_files(bad))
    with pytest.raises(ConfigError, match="no such training data"):
        find_pair_files(tmp_path / "missing")


def test_a_pairs_dataset_trains_only_on_the_split_that_eval_does_not_test(tmp_path: Path) -> None:
    from chatling.training.data.dataset import SourceInfo, load_pairs, split_pairs, write_source
    from chatling.training.sft.collate import find_pair_files, load_train_pairs

    out = tmp_path / "dataset"
    for name in ("vod-a", "vod-b"):
        pairs = [Pair(name, 10.0 * i, (), (), f"{name} message {i}", "u") for i in range(1, 11)]
        write_source(out, pairs, SourceInfo(name, "vod", f"sha-{name}"))
    files = find_pair_files(out)
    assert files.is_dataset and len(files.files) == 2
    train = load_train_pairs(files, split="time", test_fraction=0.2)
    expected = split_pairs(load_pairs(out), by="time", test_fraction=0.2)
    assert sorted(train["target"]) == sorted(expected["train"]["target"])
    assert not set(train["target"]) & set(expected["test"]["target"])
    assert len(load_train_pairs(files, split="none")) == 20
    by_source = load_train_pairs(files, split="source", test_fraction=0.5)
    assert set(by_source["source"]) == {"vod-a"}


def test_presets_refuse_what_vllm_cannot_serve() -> None:
    from chatling.training.sft.presets import PRESETS, get_preset, with_overrides

    assert {"cpu-tiny", "gpu-24gb", "gpu-12gb"} <= set(PRESETS)
    for preset in PRESETS.values():
        preset.check()
        assert preset.lora_r <= 16
    assert PRESETS["gpu-12gb"].load_in_4bit and PRESETS["gpu-24gb"].gradient_checkpointing
    with pytest.raises(ConfigError, match="rank 32"):
        with_overrides(get_preset("cpu-tiny"), lora_r=32)
    with pytest.raises(ConfigError, match="unknown training preset"):
        get_preset("gpu-1tb")
    assert with_overrides(get_preset("gpu-24gb"), steps=7).max_steps == 7
    assert with_overrides(get_preset("cpu-tiny"), epochs=2.0).max_steps == -1


def test_qlora_preset_needs_bitsandbytes_or_says_so() -> None:
    from chatling.training.sft.presets import get_preset
    from chatling.training.sft.train import load_base

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="needs bitsandbytes"):
            load_base(get_preset("gpu-12gb"), str(DEFAULT_MODEL_DIR))
    else:
        pytest.skip("bitsandbytes is installed here: the error path cannot be shown")


# --- training runs -----------------------------------------------------------------------


@pytest.mark.slow
def test_cpu_tiny_run_writes_adapter_and_resumes(tmp_path: Path) -> None:
    from chatling.training.sft.train import METADATA_FILE, TrainRequest, train

    data = write_pairs(tmp_path / "pairs", make_pairs(30))
    out = tmp_path / "adapter"
    result = train(TrainRequest(data=data, out=out, preset=tiny_preset()))

    assert result.global_step == 4
    assert (out / "adapter_config.json").exists()
    assert (out / "adapter_model.safetensors").exists()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 8 and set(config["target_modules"]) >= {"q_proj", "down_proj"}
    meta = json.loads((out / METADATA_FILE).read_text())
    assert [s for s, _ in meta["loss_curve"]] == [1, 2, 3, 4]
    assert all(math.isfinite(loss) and loss > 0 for _, loss in meta["loss_curve"])
    assert meta["preset"]["name"] == "cpu-tiny" and meta["preset"]["max_length"] == 384
    assert len(meta["dataset"]["sha256"]) == 64 and meta["dataset"]["examples"] == 30
    assert meta["base_model"] == str(DEFAULT_MODEL_DIR)
    assert meta["code_version"].startswith("0.")
    assert meta["tokens"]["seen"] > 0 and meta["time"]["train_seconds"] > 0
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]

    with pytest.raises(ConfigError, match="pass --resume"):
        train(TrainRequest(data=data, out=out, preset=tiny_preset()))

    resumed = train(TrainRequest(data=data, out=out, preset=tiny_preset(steps=5), resume=True))
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-4")
    assert resumed.global_step == 5
    meta = json.loads((out / METADATA_FILE).read_text())
    assert [s for s, _ in meta["loss_curve"]] == [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def memorised_adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An adapter trained hard on one repeated message, so that it surely changes the output."""
    from chatling.training.sft.train import TrainRequest, train

    target = "honk honk goose army assemble"
    root = tmp_path_factory.mktemp("memorise")
    data = write_pairs(root / "pairs", make_pairs(16, target=target, seed=5))
    preset = tiny_preset(steps=6, batch_size=2, lr=4e-3, save_steps=100)
    train(TrainRequest(data=data, out=root / "adapter", preset=preset))
    return root / "adapter", target


@pytest.mark.slow
@pytest.mark.engine
async def test_adapter_loads_in_vllm_and_changes_greedy_output(
    engine: Any, memorised_adapter: tuple[Path, str]
) -> None:
    from chatling.core.settings import ReplySettings
    from chatling.engine import SamplingOptions
    from chatling.prompt import PromptBuilder
    from chatling.training.data.pairs import render_prompt

    adapter, target = memorised_adapter
    pair = make_pairs(1, seed=11)[0]
    prompt = engine.render(render_prompt(pair, PromptBuilder(ReplySettings(), engine.count_tokens)))
    greedy = SamplingOptions(n=1, max_tokens=12, temperature=0.0, top_p=1.0, seed=0)
    base = (await engine.generate(prompt, greedy)).texts[0]
    try:
        await engine.set_adapter(adapter)
        tuned = (await engine.generate(prompt, greedy)).texts[0]
    finally:
        await engine.set_adapter(None)
    assert tuned != base
    assert tuned.strip().startswith(target)
    assert (await engine.generate(prompt, greedy)).texts[0] == base


def test_cli_reports_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import argparse

    from chatling.cli.train import add_train_command, main

    parser = argparse.ArgumentParser()
    add_train_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--data", "d", "--out", "o", "--steps", "3", "--lr", "1e-3"])
    assert (args.steps, args.lr, args.preset, args.split) == (3, 1e-3, "cpu-tiny", "time")

    assert main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 2
    assert "no such training data" in capsys.readouterr().err
    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--rank", "64"]) == 2
    assert "outside 1..16" in capsys.readouterr().err


def test_attention_auto_is_flex_only_for_packed_rows_on_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chatling.training.sft import train as train_module
    from chatling.training.sft.presets import get_preset, with_overrides

    packed = get_preset("gpu-24gb")
    padded = with_overrides(packed, packing=False)
    monkeypatch.setattr(train_module, "_cuda_available", lambda: True)  # no GPU here
    assert train_module.resolve_attn("auto", packed) == "flex_attention"
    assert train_module.resolve_attn("auto", padded) == "sdpa"
    assert train_module.resolve_attn("eager", packed) == "eager"
    monkeypatch.setattr(train_module, "_cuda_available", lambda: False)
    assert train_module.resolve_attn("auto", packed) == "sdpa"
    # Liger is asked for by the GPU presets, and skipped with a warning where it cannot run.
    assert packed.liger and not get_preset("cpu-tiny").liger
    assert train_module.sft_config(packed, Path("/tmp/unused")).use_liger_kernel is False


def test_context_free_copies_use_the_rankers_context_free_prompt(tokenizer: Any) -> None:
    import datasets

    from chatling.training.data.pairs import render_prompt
    from chatling.training.eval.rankers import ModelRanker
    from chatling.training.sft.collate import IGNORE_INDEX, encode_pairs, prompt_builder

    pairs = datasets.Dataset.from_list([p.to_row() for p in make_pairs(40)])
    plain, _ = encode_pairs(pairs, tokenizer, 2048)
    mixed, stats = encode_pairs(pairs, tokenizer, 2048, context_free_share=0.5, seed=1)
    extra = stats.examples - len(plain)
    assert 10 <= extra <= 30  # about half of 40, seeded
    builder = prompt_builder(tokenizer)
    ranker = ModelRanker.__new__(ModelRanker)  # only prompt_ids, which needs the tokenizer
    ranker.tokenizer = tokenizer
    empty = Pair("e", 0.0, (), (), "", "")
    free_prompt = ranker.prompt_ids(render_prompt(empty, builder, with_transcript=False))
    free_rows = [r for r in mixed if r["input_ids"][: len(free_prompt)] == free_prompt]
    assert len(free_rows) == extra
    for row in free_rows:  # the loss is still on the message only
        assert row["labels"][: len(free_prompt)] == [IGNORE_INDEX] * len(free_prompt)
