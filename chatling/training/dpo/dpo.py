"""The preference step: DPO of an SFT LoRA adapter on moderators' good/bad marks.

    from chatling.training.dpo.dpo import maybe_train_dpo
    out = maybe_train_dpo(sft_dir, pairs, out_dir, preset, min_pairs=schedule.min_preference_pairs)

(``pairs`` from ``chatling.training.dpo.preference.preference_pairs_from_db``). The nightly
run calls this after SFT and before its gate; with fewer than ``min_pairs``
pairs (``ScheduleSettings.min_preference_pairs``) it logs why and returns
``None``, and the SFT adapter goes to the gate as it is.

How it trains: the base model (``chatling.training.sft.presets.load_base``, the preset's
dtype, 4-bit for QLoRA) gets the SFT adapter loaded trainable under peft's
``default`` name; trl's ``DPOTrainer``, given that ``PeftModel`` without a
``ref_model``, copies it into a second, frozen adapter named ``ref`` and
computes the reference log-probs with ``ref`` active: the reference is the
SFT adapter exactly, and no second model is held. Each pair is tokenised the
way the live engine sends it (chat template with the generation prompt, as
``VllmEngine.render_chat``; the reply and the template's end-of-turn token as
the completion, as ``chatling.training.sft.collate.encode_pair`` trains SFT), so DPO
trains on the serving prompt; pairs longer than ``preset.max_length`` are
dropped, never cut.

The result is a directory laid out like ``chatling train``'s output
(``adapter_config.json``, ``adapter_model.safetensors``,
``chatling_adapter.json``): the SFT adapter's metadata plus a ``dpo`` section
(pairs, beta, steps, loss curve, final reward metrics, the adapter it started
from). It is written under a temporary name beside ``out_dir`` and renamed
when complete, so a crash leaves no half-written ``out_dir``.

``chatling.training.dpo.preference.preference_margins`` measures what DPO should widen:
log p(chosen) - log p(rejected) of each pair on the live prompt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatling.core.errors import ConfigError, ModelError
from chatling.training.dpo.preference import (
    PreferencePair,
    encode_preferences,
    feedback_ids,
    pairs_sha256,
)
from chatling.training.sft.presets import Preset, load_base
from chatling.training.sft.train import (
    ADAPTER_FILES,
    METADATA_FILE,
    _save_adapter,
    _write_json,
    code_version,
    loss_curve,
)

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase, TrainerCallback
    from trl import DPOTrainer

log = logging.getLogger(__name__)

MIN_PREFERENCE_PAIRS = 8
"""Fewer marked pairs than this: no preference step (``ScheduleSettings.min_preference_pairs``)."""
DEFAULT_BETA = 0.1
DEFAULT_EPOCHS = 2.0
LR_SCALE = 0.1
"""DPO's learning rate is the preset's (SFT) rate times this unless given."""
MIN_STEPS_PER_EPOCH = 4
"""Gradient accumulation shrinks (never grows) so that an epoch has at least this many steps."""
PARTIAL_SUFFIX = ".partial"


def dpo_config(
    preset: Preset,
    output_dir: Path,
    *,
    pairs: int,
    beta: float,
    lr: float,
    steps: int | None,
    epochs: float,
) -> Any:
    """trl's ``DPOConfig`` from the preset: its batch, precision and checkpointing; no saves.

    A step takes ``batch_size`` pairs (2 x ``batch_size`` sequences) per device;
    accumulation is the preset's, cut for few pairs so an epoch still has
    ``MIN_STEPS_PER_EPOCH`` optimizer steps.
    """
    from trl import DPOConfig

    from chatling.training.sft.train import runtime_args

    grad_accum = max(1, min(preset.grad_accum, pairs // (preset.batch_size * MIN_STEPS_PER_EPOCH)))
    return DPOConfig(
        output_dir=str(output_dir),
        max_steps=steps if steps is not None else -1,
        num_train_epochs=epochs,
        per_device_train_batch_size=preset.batch_size,
        gradient_accumulation_steps=grad_accum,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=preset.warmup_ratio,
        logging_steps=1 if steps is not None and steps <= 20 else preset.logging_steps,
        logging_first_step=True,
        save_strategy="no",
        gradient_checkpointing=preset.gradient_checkpointing,
        bf16=preset.dtype == "bfloat16",
        fp16=preset.dtype == "float16",
        max_length=preset.max_length,
        beta=beta,
        loss_type=["sigmoid"],
        **runtime_args(preset),
    )


def _trainer_class() -> type[DPOTrainer]:
    """``DPOTrainer`` for examples already tokenised by ``encode_preferences``."""
    from trl import DPOTrainer

    class TokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(
            self, dataset: Any, processing_class: Any, args: Any, dataset_name: str
        ) -> Any:
            # trl would re-render the prompt through the chat template and tokenise prompt and
            # reply together; the ids here are already the live engine's (encode_preference).
            if "prompt_ids" in dataset.column_names:
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return TokenizedDPOTrainer


def load_policy(
    adapter_dir: Path, preset: Preset, base: str | None, *, attn_implementation: str = "sdpa"
) -> tuple[Any, PreTrainedTokenizerBase]:
    """The base model with the adapter at ``adapter_dir`` loaded trainable (peft ``default``)."""
    from peft import PeftModel

    missing = [name for name in ADAPTER_FILES if not (adapter_dir / name).is_file()]
    if missing:
        raise ModelError(
            f"{adapter_dir}: not an adapter directory (no {', '.join(missing)}); "
            "give the output of `chatling train`"
        )
    model, tokenizer = load_base(preset, base, attn_implementation=attn_implementation)
    try:
        policy = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"cannot load adapter {adapter_dir} onto {base}: {exc}") from exc
    return policy, tokenizer


def _log_callback() -> TrainerCallback:
    from transformers import TrainerCallback

    class LogLines(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if state.is_world_process_zero and logs and "loss" in logs:
                log.info(
                    "dpo step %d/%d  loss %.4f  reward margin %.4f  accuracy %.2f  lr %.2e",
                    state.global_step,
                    state.max_steps,
                    logs["loss"],
                    logs.get("rewards/margins", float("nan")),
                    logs.get("rewards/accuracies", float("nan")),
                    logs.get("learning_rate", 0.0),
                )

    return LogLines()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_metadata(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable adapter metadata ({exc})") from None


def adapter_base(adapter_dir: Path, preset: Preset, base: str | None = None) -> str:
    """The base model to train an adapter on: ``base`` if given, else the one its metadata
    names, else the preset's."""
    return str(base or _read_metadata(adapter_dir).get("base_model") or preset.base)


def _last_metrics(history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    keys = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
    last = next((e for e in reversed(history) if "loss" in e), {})
    return {k: float(last[k]) for k in keys if k in last}


def _staging_dir(out_dir: Path) -> Path:
    return out_dir.with_name(f".{out_dir.name}{PARTIAL_SUFFIX}")


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _fresh_staging(out_dir: Path) -> Path:
    """The temporary directory the result is written into, emptied of a crashed run's files."""
    from accelerate import PartialState

    if out_dir.exists():
        raise ConfigError(f"{out_dir} already exists; give the DPO step a new output directory")
    staging = _staging_dir(out_dir)
    state = PartialState()
    if state.is_main_process and staging.exists():
        log.warning("removing %s, left by an interrupted DPO run", staging)
        shutil.rmtree(staging)
    state.wait_for_everyone()
    return staging


def build_dpo_trainer(
    policy: Any,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    preset: Preset,
    output_dir: Path,
    *,
    beta: float,
    lr: float,
    steps: int | None,
    epochs: float,
    callbacks: Sequence[TrainerCallback] = (),
) -> DPOTrainer:
    """trl's ``DPOTrainer`` on the encoded pairs, the reference a frozen copy of the adapter."""
    config = dpo_config(
        preset, output_dir, pairs=len(dataset), beta=beta, lr=lr, steps=steps, epochs=epochs
    )
    trainer = _trainer_class()(
        model=policy,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[_log_callback(), *callbacks],
    )
    if "ref" not in trainer.accelerator.unwrap_model(trainer.model).peft_config:
        raise ModelError(
            "trl did not keep a frozen copy of the SFT adapter as the DPO reference; "
            "this trl/peft pair is not supported (see chatling/training/dpo/dpo.py)"
        )
    return trainer


def _dpo_section(
    trainer: DPOTrainer,
    output: Any,
    adapter_dir: Path,
    sft_meta: Mapping[str, Any],
    kept: Sequence[PreferencePair],
    given: int,
    times: tuple[datetime, float],
) -> dict[str, Any]:
    """The ``dpo`` section of the metadata: what was trained on, how, and what it measured."""
    args, state = trainer.args, trainer.state
    curve = loss_curve(state.log_history)
    started_at, train_seconds = times
    return {
        "format": 1,
        "pairs": len(kept),
        "pairs_given": given,
        "pairs_sha256": pairs_sha256(kept),
        "feedback_ids": feedback_ids(kept),
        "beta": trainer.beta,
        "loss_type": "sigmoid",
        "learning_rate": args.learning_rate,
        "steps": state.global_step,
        "epochs": state.epoch,
        "batch_size": args.per_device_train_batch_size,
        "grad_accum": args.gradient_accumulation_steps,
        "max_length": args.max_length,
        "reference": "sft_adapter",
        "started_from": {
            "path": str(adapter_dir.resolve()),
            "adapter_sha256": _sha256(adapter_dir / "adapter_model.safetensors"),
            "code_version": sft_meta.get("code_version"),
        },
        "loss_curve": curve,
        "final_loss": curve[-1][1] if curve else None,
        "train_loss": float(output.training_loss),
        "final_metrics": _last_metrics(state.log_history),
        "code_version": code_version(),
        "time": {
            "started_at": started_at.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "train_seconds": round(train_seconds, 3),
        },
    }


def train_dpo(
    adapter_dir: Path,
    pairs: Sequence[PreferencePair],
    out_dir: Path,
    preset: Preset,
    *,
    base: str | None = None,
    steps: int | None = None,
    epochs: float = DEFAULT_EPOCHS,
    beta: float = DEFAULT_BETA,
    lr: float | None = None,
    attn_implementation: str = "sdpa",
    callbacks: Sequence[TrainerCallback] = (),
    extra_metadata: Mapping[str, Any] | None = None,
) -> Path:
    """DPO of the SFT adapter at ``adapter_dir`` on ``pairs``; the new adapter in ``out_dir``.

    ``base``: the base model (default: the one the SFT adapter's metadata names,
    else the preset's). ``steps`` (optimizer steps) overrides ``epochs``;
    ``lr`` defaults to ``LR_SCALE`` times the preset's. ``preset.max_steps``
    and ``epochs`` (SFT's) are not used. ``extra_metadata`` is merged into
    the ``dpo`` section. ``out_dir`` must not exist yet.
    """
    preset.check()
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if not pairs:
        raise ConfigError("no preference pairs to train on")
    if beta <= 0 or (steps is not None and steps < 1) or (steps is None and epochs <= 0):
        raise ConfigError("DPO needs beta > 0 and steps >= 1 (or epochs > 0)")
    staging = _fresh_staging(out_dir)
    sft_meta = _read_metadata(adapter_dir)
    base = adapter_base(adapter_dir, preset, base)
    lr = lr if lr is not None else preset.lr * LR_SCALE
    started_at = datetime.now(UTC)
    policy, tokenizer = load_policy(
        adapter_dir, preset, base, attn_implementation=attn_implementation
    )
    dataset, kept = encode_preferences(pairs, tokenizer, preset.max_length)
    how = f"{steps} steps" if steps is not None else f"{epochs:g} epochs"
    log.info("DPO of %s on %d pairs (beta %g, lr %.2e, %s)", adapter_dir, len(kept), beta, lr, how)
    try:
        staging.mkdir(parents=True, exist_ok=True)
        trainer = build_dpo_trainer(
            policy, tokenizer, dataset, preset, staging / "trainer",
            beta=beta, lr=lr, steps=steps, epochs=epochs, callbacks=callbacks,
        )  # fmt: skip
        clock = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - clock
        _save_adapter(trainer, staging)
        if trainer.is_world_process_zero():
            shutil.rmtree(staging / "trainer", ignore_errors=True)
            dpo = _dpo_section(
                trainer, output, adapter_dir, sft_meta, kept, len(pairs), (started_at, seconds)
            )
            metadata = {
                "format": 1,
                **sft_meta,
                "base_model": str(base),
                "base_model_resolved": str(policy.get_base_model().config.name_or_path),
                "dpo": {**dpo, **dict(extra_metadata or {})},
            }
            _write_json(staging / METADATA_FILE, metadata)
            staging.rename(out_dir)
            log.info("DPO adapter written to %s (step %d)", out_dir, trainer.state.global_step)
        trainer.accelerator.wait_for_everyone()
    finally:
        if staging.exists() and _is_main_process():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def maybe_train_dpo(
    adapter_dir: Path,
    pairs: Sequence[PreferencePair],
    out_dir: Path,
    preset: Preset,
    *,
    min_pairs: int = MIN_PREFERENCE_PAIRS,
    **options: Any,
) -> Path | None:
    """``train_dpo`` when there are at least ``min_pairs`` pairs; else a log line and ``None``."""
    if len(pairs) < min_pairs:
        log.info(
            "preference step skipped: %d marked pairs, fewer than min_preference_pairs=%d",
            len(pairs),
            min_pairs,
        )
        return None
    return train_dpo(adapter_dir, pairs, out_dir, preset, **options)


__all__ = [
    "DEFAULT_BETA",
    "MIN_PREFERENCE_PAIRS",
    "adapter_base",
    "build_dpo_trainer",
    "dpo_config",
    "load_policy",
    "maybe_train_dpo",
    "train_dpo",
]
