"""Training presets: the LoRA recipe for each kind of machine, as typed dataclasses.

``chatling train --preset NAME`` starts from one of these and applies the
command line's overrides (``--steps``, ``--epochs``, ``--lr``,
``--batch-size``...). Every preset trains a LoRA adapter that vLLM can serve:
rank at most 16 (the engine's ``max_lora_rank``) on the attention and MLP
projections vLLM supports for Llama-style models.

- ``cpu-tiny``: the packaged SmolLM2-135M-Instruct in bfloat16 on the CPU, a
  few steps; for tests and the demo.
- ``gpu-24gb``: bf16 LoRA of a 7-8B base with gradient checkpointing; 2 packed
  rows of up to 2048 tokens per step (about 6 live prompts), 8 accumulated.
- ``gpu-12gb``: 4-bit QLoRA (bitsandbytes NF4) of the same base; needs
  ``bitsandbytes`` (``pip install bitsandbytes``) and a CUDA GPU.

``load_base`` and ``lora_config`` build what a preset describes: the base
model in its dtype (4-bit for QLoRA) and the peft ``LoraConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from chatling.core.errors import ConfigError, ModelError
from chatling.core.paths import DEFAULT_MODEL_DIR

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# The projections vLLM's LoRA layers cover for Llama/Qwen/Mistral-style models.
VLLM_TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
MAX_LORA_RANK = 16
"""vLLM's ``max_lora_rank`` (``ModelSettings`` in chatling.core.settings): larger won't load."""


@dataclass(frozen=True, slots=True)
class Preset:
    """One training recipe. Step counts are optimizer steps (after accumulation)."""

    name: str
    description: str
    base: str
    """Default base model (directory or Hugging Face id); ``--base`` replaces it."""
    dtype: str
    """Weights' dtype while training: ``float32`` or ``bfloat16``."""
    load_in_4bit: bool
    """QLoRA: load the base in 4-bit NF4 through bitsandbytes."""
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: tuple[str, ...]
    gradient_checkpointing: bool
    max_length: int
    """Longest example in tokens, and the length of one packed row. The live prompt is at
    most ~1000 tokens (768 of context + persona + template), so 2048 packs 2-3 examples
    a row; at 1024 most rows hold one and packing gains little (bench/train_throughput.py)."""
    batch_size: int
    """Examples per device per step before packing (a packed row holds up to
    ``batch_size * max_length`` tokens)."""
    grad_accum: int
    lr: float
    max_steps: int
    """Optimizer steps; -1 trains for ``epochs`` instead."""
    epochs: float
    warmup_ratio: float
    save_steps: int
    """A checkpoint every this many steps (``--resume`` continues from the last)."""
    save_total_limit: int
    logging_steps: int
    packing: bool
    """Padding-free packing (best-fit decreasing, positions reset per example)."""
    fused_lm_head: bool = True
    """trl's tiled LM head + loss: never builds the (tokens x vocab) logits. Off: the model's
    own loss over full logits (fewer, larger kernels; faster where the logits fit)."""
    liger: bool = False
    """Liger's fused Triton kernels (RMSNorm, SwiGLU, RoPE, linear + cross-entropy) on a
    CUDA GPU where ``liger-kernel`` is installed; the same math in fewer kernels."""
    context_free_share: float = 0.0
    """Share of pairs also trained with no context (see ``collate.encode_pairs``): teaches
    p(message | no context), which PMI ranking divides by."""
    seed: int = 0

    def check(self) -> None:
        """Refuse a recipe vLLM could not serve or the trainer could not run."""
        if not 1 <= self.lora_r <= MAX_LORA_RANK:
            raise ConfigError(
                f"preset {self.name}: LoRA rank {self.lora_r} is outside 1..{MAX_LORA_RANK} "
                "(vLLM's max_lora_rank); pass a smaller --rank"
            )
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"preset {self.name}: unknown dtype {self.dtype!r}")
        for name in ("batch_size", "grad_accum", "max_length", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"preset {self.name}: {name} must be at least 1")
        if self.max_steps == 0 or (self.max_steps < 0 and self.epochs <= 0):
            raise ConfigError(f"preset {self.name}: give --steps > 0 or --epochs > 0")
        if not 0.0 <= self.context_free_share <= 1.0:
            raise ConfigError(f"preset {self.name}: context_free_share must be within 0..1")
        if self.lr <= 0:
            raise ConfigError(f"preset {self.name}: the learning rate must be positive")


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="cpu-tiny",
            description="packaged SmolLM2-135M-Instruct, bf16 on CPU, r=8; tests and demo",
            base=str(DEFAULT_MODEL_DIR),
            # bf16 (avx512_bf16 through oneDNN) ran a step ~10x faster than float32 here.
            dtype="bfloat16",
            load_in_4bit=False,
            lora_r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules=VLLM_TARGET_MODULES,
            gradient_checkpointing=False,
            max_length=1024,
            batch_size=4,
            grad_accum=1,
            lr=2e-4,
            max_steps=20,
            epochs=1.0,
            warmup_ratio=0.0,
            save_steps=10,
            save_total_limit=2,
            logging_steps=1,
            packing=True,
        ),
        Preset(
            name="gpu-24gb",
            description="bf16 LoRA of a 7-8B base, r=16 on all linear layers, "
            "gradient checkpointing; one 24 GB card",
            base="Qwen/Qwen2.5-7B-Instruct",
            dtype="bfloat16",
            load_in_4bit=False,
            lora_r=16,
            lora_alpha=32,
            lora_dropout=0.05,
            target_modules=VLLM_TARGET_MODULES,
            gradient_checkpointing=True,
            max_length=2048,
            batch_size=2,
            grad_accum=8,
            lr=1e-4,
            max_steps=-1,
            epochs=1.0,
            warmup_ratio=0.03,
            save_steps=200,
            save_total_limit=3,
            logging_steps=10,
            packing=True,
            liger=True,
        ),
        Preset(
            name="gpu-12gb",
            description="4-bit QLoRA (bitsandbytes NF4) of a 7-8B base, r=16; one 12 GB card",
            base="Qwen/Qwen2.5-7B-Instruct",
            dtype="bfloat16",
            load_in_4bit=True,
            lora_r=16,
            lora_alpha=32,
            lora_dropout=0.05,
            target_modules=VLLM_TARGET_MODULES,
            gradient_checkpointing=True,
            max_length=2048,
            batch_size=1,
            grad_accum=16,
            lr=1e-4,
            max_steps=-1,
            epochs=1.0,
            warmup_ratio=0.03,
            save_steps=200,
            save_total_limit=3,
            logging_steps=10,
            packing=True,
            liger=True,
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ``ConfigError`` listing the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise ConfigError(f"unknown training preset {name!r}; choose one of: {known}") from None


def with_overrides(preset: Preset, **overrides: object) -> Preset:
    """``preset`` with the given fields replaced (``None`` values are ignored), checked.

    ``steps`` sets ``max_steps``; ``epochs`` alone switches to epoch-based
    training (``max_steps=-1``) unless ``steps`` is given too.
    """
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "steps" in changes:
        changes["max_steps"] = changes.pop("steps")
    elif "epochs" in changes:
        changes["max_steps"] = -1
    known = {f.name for f in fields(Preset)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ConfigError(f"unknown preset override(s): {', '.join(unknown)}")
    if "target_modules" in changes:
        changes["target_modules"] = tuple(changes["target_modules"])  # type: ignore[arg-type]
    result = replace(preset, **changes)  # type: ignore[arg-type]
    result.check()
    return result


def _torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _quantization_config(preset: Preset) -> Any:
    """The 4-bit NF4 config of a QLoRA preset; a clear error without bitsandbytes or a GPU."""
    import torch

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"preset {preset.name} loads the base in 4 bits and needs bitsandbytes: "
            "`pip install bitsandbytes` on a machine with a CUDA GPU, or use --preset gpu-24gb"
        ) from None
    if not torch.cuda.is_available():
        raise ConfigError(f"preset {preset.name} (4-bit QLoRA) needs a CUDA GPU; none is visible")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )


def load_base(
    preset: Preset, base: str | None = None, *, attn_implementation: str = "sdpa"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model (in the preset's dtype, 4-bit for QLoRA) and its tokenizer."""
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatling.engine import resolve_model

    name = resolve_model(base or preset.base)
    kwargs: dict[str, Any] = {
        "dtype": _torch_dtype(preset.dtype),
        "attn_implementation": attn_implementation,
    }
    if preset.load_in_4bit:
        kwargs["quantization_config"] = _quantization_config(preset)
        # Each process holds the whole (quantised) base on its own GPU.
        kwargs["device_map"] = {"": PartialState().local_process_index}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load base model {name}: {exc}") from exc
    if tokenizer.chat_template is None:
        raise ModelError(f"{name} has no chat template: use an instruct/chat model as the base")
    if preset.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=preset.gradient_checkpointing
        )
    # A KV cache during training would also disable transformers' packed-sequence masks.
    model.config.use_cache = False
    return model, tokenizer


def lora_config(preset: Preset) -> Any:
    """The peft ``LoraConfig`` of the preset (what vLLM serves: rank, alpha, projections)."""
    from peft import LoraConfig

    return LoraConfig(
        r=preset.lora_r,
        lora_alpha=preset.lora_alpha,
        lora_dropout=preset.lora_dropout,
        target_modules=list(preset.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


__all__ = [
    "MAX_LORA_RANK",
    "PRESETS",
    "VLLM_TARGET_MODULES",
    "Preset",
    "get_preset",
    "load_base",
    "lora_config",
    "with_overrides",
]
