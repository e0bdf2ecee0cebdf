"""The real vLLM engine with the packaged model: candidates, streaming, LoRA swaps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chatling.core.errors import ModelError
from chatling.core.paths import DEFAULT_MODEL_DIR
from chatling.engine import SamplingOptions, resolve_model

pytestmark = [pytest.mark.engine]

GREEDY = SamplingOptions(n=1, max_tokens=12, temperature=0.0, seed=0)


def _prompt(engine) -> list[int]:
    return engine.render_chat("You are a Twitch chat viewer.", "Say hi to the streamer.")


async def test_four_candidates_in_one_request(engine) -> None:
    gen = await engine.generate(
        _prompt(engine), SamplingOptions(n=4, max_tokens=16, temperature=1.0, seed=7)
    )
    assert len(gen.texts) == 4
    assert all(isinstance(t, str) for t in gen.texts)
    assert sum(bool(t.strip()) for t in gen.texts) >= 3
    assert len(set(gen.texts)) >= 2, "sampling with temperature 1 should vary"
    assert 0 < gen.first_token_s <= gen.total_s
    assert 0 < gen.completion_tokens <= 4 * 16
    assert gen.adapter is None


async def test_greedy_is_deterministic(engine) -> None:
    a = await engine.generate(_prompt(engine), GREEDY)
    b = await engine.generate(_prompt(engine), GREEDY)
    assert a.texts == b.texts and a.texts[0].strip()


async def test_cancelled_request_is_aborted_and_engine_goes_on(engine) -> None:
    long = SamplingOptions(n=2, max_tokens=400, temperature=1.0, seed=1, stop=())
    task = asyncio.create_task(engine.generate(_prompt(engine), long))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gen = await engine.generate(_prompt(engine), GREEDY)
    assert gen.texts[0].strip()


def _make_adapter(path: Path, seed: int) -> Path:
    """A LoRA adapter with non-zero weights (peft starts B at zero, a no-op)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR, dtype=torch.float32)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.05)
    model.save_pretrained(path)
    return path


async def test_lora_adapter_swaps_while_running(engine, tmp_path) -> None:
    base_text = (await engine.generate(_prompt(engine), GREEDY)).texts
    adapter_dir = await asyncio.to_thread(_make_adapter, tmp_path / "adapter-v1", 0)
    try:
        loaded = await engine.set_adapter(adapter_dir)
        assert engine.adapter == loaded
        with_adapter = await engine.generate(_prompt(engine), GREEDY)
        assert with_adapter.adapter == str(adapter_dir.resolve())
        assert with_adapter.texts != base_text, "the adapter should change greedy output"
        # A broken adapter is refused and the serving one stays.
        with pytest.raises(ModelError, match=r"not a LoRA adapter"):
            await engine.set_adapter(tmp_path / "nothing-here")
        assert engine.adapter == loaded
    finally:
        await engine.set_adapter(None)
    assert (await engine.generate(_prompt(engine), GREEDY)).texts == base_text


def test_missing_model_path_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "no-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"config\.json"):
        resolve_model(str(tmp_path / "empty"))
    assert (
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
        == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
