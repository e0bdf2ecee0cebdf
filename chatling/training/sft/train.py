"""LoRA fine-tuning on (context -> chat message) pairs: the engine of ``chatling train``.

    chatling train --data DIR --preset cpu-tiny --out data/adapters/v1 [--steps N] [--resume]

Reads the pair parquet files in DIR, renders each pair into the live bot's
exact prompt (``chatling.training.sft.collate``), and trains a peft LoRA adapter with trl's
``SFTTrainer``: loss on the chat message only, short examples packed into
rows without attending to each other, a checkpoint every
``save_steps`` (``--resume`` continues from the last one). OUT then holds the
adapter (``adapter_config.json`` + ``adapter_model.safetensors``, loadable by
vLLM's ``LoRARequest`` and ``chatling replay --adapter OUT``) and
``chatling_adapter.json``: preset and arguments, dataset hash, base model, code
version, loss curve, time and token counts.

Several GPUs: the same command under ``accelerate launch`` (DDP, or FSDP for a
base that does not fit one card), see ``chatling/training/accelerate/``::

    accelerate launch --config_file chatling/training/accelerate/ddp.yaml \\
        -m chatling train --data DIR ...

Nothing here assumes one device: the ``Trainer`` places the model, shards the
batches and reduces the loss; only the main process writes OUT's metadata.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatling.core.errors import ConfigError, ModelError
from chatling.core.paths import PROJECT_ROOT
from chatling.core.settings import ReplySettings
from chatling.training.sft.collate import (
    EncodeStats,
    encode_pairs,
    find_pair_files,
    load_train_pairs,
    pack_examples,
    packed_collator,
)
from chatling.training.sft.presets import Preset, load_base, lora_config

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
    from trl import SFTTrainer

log = logging.getLogger(__name__)

METADATA_FILE = "chatling_adapter.json"
CHECKPOINTS_DIR = "checkpoints"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True, slots=True)
class TrainRequest:
    """One training run. ``preset`` already carries the command line's overrides."""

    data: Path
    out: Path
    preset: Preset
    base: str | None = None
    """Base model directory or Hugging Face id; ``None``: the preset's."""
    resume: bool = False
    attn_implementation: str = "auto"
    """``auto``: flex attention for packed rows on a CUDA GPU (block-sparse per example),
    else SDPA; or any transformers ``attn_implementation``."""
    split: str = "time"
    """How a pairs dataset is split (as ``chatling eval`` does): ``time``, ``source`` or
    ``none`` (train on every pair); only the train part is trained on."""
    test_fraction: float = 0.1
    args: Mapping[str, Any] | None = None
    """The command line's ``vars(args)``, saved in the metadata (the request's fields if unset)."""


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a finished run wrote and measured."""

    adapter_dir: Path
    metadata_path: Path
    global_step: int
    loss_curve: list[tuple[int, float]]
    train_seconds: float
    tokens_seen: int
    """Tokens this session trained on (a resumed run's earlier sessions not counted)."""
    encode: EncodeStats
    resumed_from: str | None = None


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def runtime_args(preset: Preset) -> dict[str, Any]:
    """Trainer arguments every chatling trainer (SFT, DPO) shares: seed, device, no
    reporting, data loading in the main process, DDP without unused-parameter scans."""
    cuda = _cuda_available()
    return {
        "seed": preset.seed,
        "report_to": "none",
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": cuda,
        "use_cpu": not cuda,
        "ddp_find_unused_parameters": False,
    }


def sft_config(preset: Preset, checkpoints: Path) -> Any:
    """trl's ``SFTConfig`` for the preset: checkpoints, and length-grouped padded batches
    when the preset does not pack (packing is done before, see ``build_trainer``)."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(checkpoints),
        max_steps=preset.max_steps,
        num_train_epochs=preset.epochs,
        per_device_train_batch_size=preset.batch_size,
        gradient_accumulation_steps=preset.grad_accum,
        learning_rate=preset.lr,
        lr_scheduler_type="cosine",
        warmup_steps=preset.warmup_ratio,
        logging_steps=preset.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=preset.save_steps,
        save_total_limit=preset.save_total_limit,
        gradient_checkpointing=preset.gradient_checkpointing,
        bf16=preset.dtype == "bfloat16",
        fp16=preset.dtype == "float16",
        max_length=preset.max_length,
        # Rows arrive packed (or not) from build_trainer; trl must not pack them again.
        packing=False,
        padding_free=False,
        # Without packing: batches of similar lengths, padded to the longest of each.
        train_sampling_strategy="random" if preset.packing else "group_by_length",
        completion_only_loss=True,
        # Packed rows have no attention mask: count all tokens (bfd leaves little padding).
        include_num_input_tokens_seen="all" if preset.packing else "non_padding",
        **runtime_args(preset),
        save_only_model=False,
        use_liger_kernel=preset.liger and _liger_available(),
    )


def resolve_attn(requested: str, preset: Preset) -> str:
    """The attention implementation to load the base with (``auto`` resolved).

    Packed rows need a per-example causal mask. Flex attention builds it as a
    block mask and skips the blocks across examples; SDPA gets a dense mask and
    computes them (bench/train_throughput.py on an H200: packed + flex + Liger
    2.1x a padded peft loop). Flex needs Triton, so only on a CUDA GPU.
    """
    if requested != "auto":
        return requested
    return "flex_attention" if preset.packing and _cuda_available() else "sdpa"


def _liger_available() -> bool:
    """Liger needs its package and a CUDA GPU (Triton); elsewhere the preset trains without."""
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is None or not _cuda_available():
        log.warning("liger kernels asked for but liger-kernel or CUDA is missing; training without")
        return False
    return True


def build_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    preset: Preset,
    checkpoints: Path,
    callbacks: Sequence[TrainerCallback] = (),
    *,
    peft: bool = True,
) -> SFTTrainer:
    """An ``SFTTrainer`` that adds the preset's LoRA to ``model`` and trains on ``dataset``
    (``input_ids`` + ``labels`` from ``chatling.training.sft.collate.encode_pairs``).

    With ``preset.packing`` the examples are packed into rows of up to
    ``max_length`` tokens first, and the collator keeps them apart
    (``chatling.training.sft.collate.packed_collator``); otherwise batches are padded to
    their longest example, grouped by length.
    """
    from trl import SFTTrainer

    collator = None
    if preset.packing:
        dataset = pack_examples(dataset, preset.max_length, preset.seed)
        attn = str(getattr(model.config, "_attn_implementation", None) or "sdpa")
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id
        collator = packed_collator(attn, pad_id)
    trainer_class = SFTTrainer if preset.fused_lm_head else _model_loss_trainer()
    return trainer_class(
        model=model,
        args=sft_config(preset, checkpoints),
        data_collator=collator,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(preset) if peft else None,
        callbacks=list(callbacks),
    )


def _model_loss_trainer() -> type[SFTTrainer]:
    """An ``SFTTrainer`` whose loss is the model's own (``Trainer.compute_loss``): full logits
    and one cross-entropy, without trl's tiled LM head and its per-step metric syncs."""
    from transformers import Trainer
    from trl import SFTTrainer

    class ModelLossSFTTrainer(SFTTrainer):
        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            inputs["use_cache"] = False
            return Trainer.compute_loss(
                self, model, inputs, return_outputs, num_items_in_batch=num_items_in_batch
            )

    return ModelLossSFTTrainer


def _log_callback() -> TrainerCallback:
    """Log lines with the loss (the Trainer's progress bar shows the rest)."""
    from transformers import TrainerCallback

    class LogLines(TrainerCallback):
        tokens_at_start = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            # After a checkpoint's state is restored: what this session starts from.
            self.tokens_at_start = state.num_input_tokens_seen

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if state.is_world_process_zero and logs and "loss" in logs:
                log.info(
                    "step %d/%d  loss %.4f  lr %.2e  tokens %d",
                    state.global_step,
                    state.max_steps,
                    logs["loss"],
                    logs.get("learning_rate", 0.0),
                    state.num_input_tokens_seen,
                )

    return LogLines()


def code_version() -> str:
    """``chatling.__version__`` plus the git commit (``+dirty`` with local changes), if known."""
    import chatling

    version = chatling.__version__
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}" + (".dirty" if dirty else "")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomically: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def loss_curve(log_history: Sequence[Mapping[str, Any]]) -> list[tuple[int, float]]:
    """(step, loss) of every logged training step, earlier sessions of a resumed run too."""
    return [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]


def _checkpoint_to_resume(checkpoints: Path, resume: bool) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if resume and last is None:
        raise ConfigError(f"--resume: {checkpoints} holds no checkpoint; start without --resume")
    if not resume and last is not None:
        raise ConfigError(
            f"{checkpoints} already holds checkpoints of an earlier run: pass --resume to "
            "continue it, or choose another --out"
        )
    return last


def _save_adapter(trainer: SFTTrainer, out: Path) -> None:
    """The adapter files alone in ``out`` (``save_model`` gathers FSDP shards first)."""
    staging = out / ".final"
    trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        for name in ADAPTER_FILES:
            if not (staging / name).exists():
                raise ModelError(f"{staging}: the trainer wrote no {name}")
            os.replace(staging / name, out / name)
        shutil.rmtree(staging, ignore_errors=True)


def train(
    request: TrainRequest,
    *,
    reply_settings: ReplySettings | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainResult:
    """Train, save the adapter and its metadata in ``request.out``; see the module docstring."""
    preset = request.preset
    preset.check()
    out = request.out
    checkpoints = out / CHECKPOINTS_DIR
    resume_from = _checkpoint_to_resume(checkpoints, request.resume)
    files = find_pair_files(request.data)
    started_at = datetime.now(UTC)
    attn = resolve_attn(request.attn_implementation, preset)
    model, tokenizer = load_base(preset, request.base, attn_implementation=attn)
    pairs = load_train_pairs(files, split=request.split, test_fraction=request.test_fraction)
    dataset, stats = encode_pairs(
        pairs,
        tokenizer,
        preset.max_length,
        settings=reply_settings,
        context_free_share=preset.context_free_share,
        seed=preset.seed,
    )
    log.info(
        "%d examples from %d pairs (%d prompt + %d message tokens) in %s",
        stats.examples,
        stats.pairs,
        stats.prompt_tokens,
        stats.completion_tokens,
        ", ".join(p.name for p in files.files),
    )
    out.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(
        model, tokenizer, dataset, preset, checkpoints, [progress := _log_callback(), *callbacks]
    )
    clock = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - clock
    _save_adapter(trainer, out)
    state = trainer.state
    session_tokens = state.num_input_tokens_seen - int(getattr(progress, "tokens_at_start", 0))
    curve = loss_curve(state.log_history)
    base = str(request.base or preset.base)
    metadata = {
        "format": 1,
        "preset": asdict(preset),
        "args": dict(request.args) if request.args is not None else _request_fields(request),
        "base_model": base,
        "base_model_resolved": str(model.config.name_or_path),
        "dataset": {
            "path": str(files.root),
            "files": [str(p) for p in files.files],
            "sha256": files.sha256,
            "split": request.split if files.is_dataset else "files",
            "test_fraction": request.test_fraction if files.is_dataset else None,
            **asdict(stats),
        },
        "code_version": code_version(),
        "loss_curve": curve,
        "final_loss": curve[-1][1] if curve else None,
        "train_loss": float(output.training_loss),
        "global_step": state.global_step,
        "epochs": state.epoch,
        "resumed_from": resume_from,
        "time": {
            "started_at": started_at.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "train_seconds": round(train_seconds, 3),
        },
        "tokens": {
            "seen": state.num_input_tokens_seen,
            "seen_this_session": session_tokens,
            "dataset_prompt": stats.prompt_tokens,
            "dataset_message": stats.completion_tokens,
            "per_second": round(session_tokens / max(train_seconds, 1e-9), 1),
        },
        "world_size": trainer.args.world_size,
        "lora": {"r": preset.lora_r, "alpha": preset.lora_alpha, "targets": preset.target_modules},
    }
    metadata_path = out / METADATA_FILE
    if trainer.is_world_process_zero():
        _write_json(metadata_path, metadata)
        log.info("adapter written to %s (step %d)", out, state.global_step)
    return TrainResult(
        adapter_dir=out,
        metadata_path=metadata_path,
        global_step=state.global_step,
        loss_curve=curve,
        train_seconds=train_seconds,
        tokens_seen=session_tokens,
        encode=stats,
        resumed_from=resume_from,
    )


def _request_fields(request: TrainRequest) -> dict[str, Any]:
    return {
        "data": str(request.data),
        "out": str(request.out),
        "preset": request.preset.name,
        "base": request.base,
        "resume": request.resume,
        "attn_implementation": resolve_attn(request.attn_implementation, request.preset),
        "split": request.split,
        "test_fraction": request.test_fraction,
    }


__all__ = [
    "METADATA_FILE",
    "TrainRequest",
    "TrainResult",
    "build_trainer",
    "code_version",
    "load_base",
    "lora_config",
    "loss_curve",
    "resolve_attn",
    "runtime_args",
    "sft_config",
    "train",
]
