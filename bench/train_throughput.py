"""How fast does ``chatling train`` learn? Real tokens/s of its packing against padded batches.

Same model, same data, same device, same LoRA, same optimizer and schedule, in
one run; each variant in its own process so that peak memory is its own:

- ``plain loop, padded``: a plain peft training loop; each batch of
  ``--batch-size`` examples is padded to its longest one (trl's default
  ``DataCollatorForLanguageModeling``), labels masking the prompt;
- ``chatling --no-packing``: ``chatling train``'s trainer without packing
  (batches of similar lengths, padded);
- ``chatling (packed)``: ``chatling train``'s setup: rows of up to
  ``--max-length`` tokens packed with several examples, positions reset per
  example (no attention across examples).

Real tokens are the ones that are not padding; "computed" tokens include the
padding. Peak memory is CUDA's max allocated (GPU) or the process's peak RSS
(CPU). The loss curves show that every variant trains the same model.

Data: pairs from ``--data`` (a pair parquet file or directory), else pairs
built from the project's demo stream (``data/demo``). ``--model
tiny-random-1b`` is a 1B-class Llama with random weights (SmolLM2's
vocabulary and tokenizer), ``tiny`` a two-layer one for a CPU smoke run, or a
model directory.

Run (GPU):  python bench/train_throughput.py --device cuda --model tiny-random-1b --steps 60
Run (CPU smoke): .venv/bin/python bench/train_throughput.py --device cpu --model tiny --steps 4
Writes bench/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PeakMemory, print_table, write_result

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = ROOT / "data" / "models" / "smollm2-135m-instruct"
VARIANTS = ("plain", "trl-padded", "chatling", "trl-padded-model-loss", "chatling-model-loss")
DEFAULT_VARIANTS = VARIANTS[:3]
LABELS = {
    "plain": "plain loop, padded",
    "trl-padded": "chatling --no-packing",
    "chatling": "chatling (packed)",
    "trl-padded-model-loss": "chatling --no-packing, model loss",
    "chatling-model-loss": "chatling (packed), model loss",
}
CONFIGS: dict[str, dict[str, int]] = {
    "tiny-random-1b": dict(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=49152,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
    ),
}
log = logging.getLogger("bench.train_throughput")


MODIFIERS = {
    "liger": "Liger kernels",
    "flex": "flex attention",
    "nodrop": "LoRA dropout 0",
}
"""``VARIANT+MOD+MOD``: a trainer variant with extra options (``chatling+flex+liger``)."""


def split_variant(variant: str) -> tuple[str, set[str]]:
    """(``name@batch``, modifiers) of a variant string."""
    name, *mods = variant.split("+")
    unknown = sorted(set(mods) - set(MODIFIERS))
    if unknown:
        raise SystemExit(
            f"unknown modifier(s) {unknown} in {variant!r}; choose from {list(MODIFIERS)}"
        )
    if mods and name.startswith("plain"):
        raise SystemExit(f"{variant!r}: the plain loop is the baseline and takes no modifiers")
    return name, set(mods)


def label_of(variant: str) -> str:
    """``plain@N``: the plain loop with N examples a batch (e.g. as many tokens a step as
    the packed rows hold); ``+mod``: see ``MODIFIERS``."""
    full, mods = split_variant(variant)
    name, _, batch = full.partition("@")
    if name not in LABELS:
        raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    extra = [MODIFIERS[m] for m in sorted(mods)]
    return ", ".join([LABELS[name] + (f", batch {batch}" if batch else ""), *extra])


def demo_pairs() -> list[Any]:
    """A pair for every demo chat message after the first 10 s: the last 60 s of the
    streamer's script and the 20 chat lines before it (the live bot's window)."""
    from chatling.chatlog import read_chat_log
    from chatling.training.data.pairs import Pair

    script = json.loads((ROOT / "data" / "demo" / "script.json").read_text())
    chat = read_chat_log(ROOT / "data" / "demo" / "chat.json")
    pairs = []
    for i, message in enumerate(chat):
        if message.offset < 10.0:
            continue
        spoken = [
            line["text"]
            for line in script
            if message.offset - 60.0 <= line["start"] < message.offset
        ]
        before = [f"{m.display_name or m.user}: {m.text}" for m in chat[max(0, i - 20) : i]]
        pairs.append(
            Pair(
                source="demo",
                offset=message.offset,
                transcript=tuple(spoken),
                chat=tuple(before),
                target=message.text,
                user=message.user,
            )
        )
    return pairs


def load_examples(args: argparse.Namespace, tokenizer: Any) -> Any:
    import datasets

    from chatling.training.sft.collate import encode_pairs, find_pair_files, load_train_pairs

    if args.data:
        pairs = load_train_pairs(find_pair_files(Path(args.data)), split="none")
    else:
        pairs = datasets.Dataset.from_list([p.to_row() for p in demo_pairs()])
    examples, _ = encode_pairs(pairs, tokenizer, args.max_length)
    return examples


def build_model(args: argparse.Namespace, device: str, dtype: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if args.model in CONFIGS:
        config = LlamaConfig(
            **CONFIGS[args.model], max_position_embeddings=4096, attn_implementation=args.attn
        )
        with torch.device(device):
            model = LlamaForCausalLM(config).to(dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            args.model, dtype=dtype, attn_implementation=args.attn
        ).to(device)
    model.config.use_cache = False
    return model


class Meter:
    """Wraps a collator: counts real and computed tokens of every batch it builds."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator
        self.real: list[int] = []
        self.computed: list[int] = []

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(rows)
        labels_or_ids = batch["input_ids"]
        if "attention_mask" in batch:
            self.real.append(int(batch["attention_mask"].sum()))
        else:
            self.real.append(sum(len(r["input_ids"]) for r in rows))
        self.computed.append(int(labels_or_ids.numel()))
        return batch


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_plain(args: argparse.Namespace, model: Any, tokenizer: Any, examples: Any, device: str):
    """The baseline: a plain peft loop over padded batches (same LoRA, AdamW, schedule)."""
    import torch
    from peft import get_peft_model
    from transformers import get_cosine_schedule_with_warmup, set_seed
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from chatling.training.sft.train import lora_config

    set_seed(args.seed)
    model = get_peft_model(model, lora_config(_preset(args, packing=False)))
    model.train()
    meter = Meter(DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id))
    batch_size = int(args.variant.partition("@")[2] or args.batch_size)
    loader = torch.utils.data.DataLoader(
        examples.with_format(None),
        batch_size=batch_size,
        shuffle=True,
        collate_fn=meter,
        generator=torch.Generator().manual_seed(args.seed),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(optim, 0, args.steps)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16)
    times, losses = [], []
    step = 0
    while step < args.steps:
        for batch in loader:
            if step >= args.steps:
                break
            batch = {k: v.to(device) for k, v in batch.items()}
            _sync(device)
            t0 = time.perf_counter()
            with autocast:
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)
            _sync(device)
            times.append(time.perf_counter() - t0)
            step += 1
            losses.append((step, float(loss.detach())))
    return times, losses, meter


def _preset(
    args: argparse.Namespace,
    *,
    packing: bool,
    fused_lm_head: bool = True,
    mods: frozenset = frozenset(),
) -> Any:
    from chatling.training.sft.presets import get_preset, with_overrides

    return with_overrides(
        get_preset("cpu-tiny"),
        dtype="bfloat16" if args.bf16 else "float32",
        steps=args.steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        lr=args.lr,
        warmup_ratio=0.0,
        packing=packing,
        save_steps=10**9,
        logging_steps=1,
        seed=args.seed,
        gradient_checkpointing=False,
        fused_lm_head=fused_lm_head,
        liger="liger" in mods,
        lora_dropout=0.0 if "nodrop" in mods else None,
    )


def run_trainer(args, model, tokenizer, examples, device, *, packing: bool, fused: bool, mods):  # type: ignore[no-untyped-def]
    """``chatling train``'s trainer (``training.train.build_trainer``) on the same model."""
    from transformers import TrainerCallback

    from chatling.training.sft.train import build_trainer, loss_curve

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a: Any, **kw: Any) -> None:
            _sync(device)
            self.t0 = time.perf_counter()

        def on_step_end(self, *a: Any, **kw: Any) -> None:
            _sync(device)
            times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(
            model,
            tokenizer,
            examples,
            _preset(args, packing=packing, fused_lm_head=fused, mods=frozenset(mods)),
            Path(tmp),
            [StepTimer()],
        )
        meter = Meter(trainer.data_collator)
        trainer.data_collator = meter
        trainer.train()
    return times, loss_curve(trainer.state.log_history), meter


def run_variant(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    device = args.device
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    tok_dir = TOKENIZER_DIR if args.model in CONFIGS else args.model
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    examples = load_examples(args, tokenizer)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    name, mods = split_variant(args.variant)
    if "flex" in mods:
        args.attn = "flex_attention"
    with PeakMemory() as mem:
        model = build_model(args, device, dtype)
        if name.startswith("plain"):
            times, losses, meter = run_plain(args, model, tokenizer, examples, device)
        else:
            packing = name.startswith("chatling")
            fused = not name.endswith("model-loss")
            times, losses, meter = run_trainer(
                args, model, tokenizer, examples, device, packing=packing, fused=fused, mods=mods
            )
    skip = min(args.warmup, max(len(times) - 1, 0))
    timed_s = sum(times[skip:])
    real = sum(meter.real[skip : len(times)])
    computed = sum(meter.computed[skip : len(times)])
    peak = (
        torch.cuda.max_memory_allocated() if device.startswith("cuda") else mem.peak_bytes
    ) / 2**20
    return {
        "variant": args.variant,
        "attn": args.attn,
        "label": label_of(args.variant),
        "steps": len(times),
        "timed_steps": len(times) - skip,
        "examples": len(examples),
        "step_s_mean": round(timed_s / max(len(times) - skip, 1), 4),
        "real_tokens_per_s": round(real / timed_s, 1) if timed_s else None,
        "computed_tokens_per_s": round(computed / timed_s, 1) if timed_s else None,
        "padding_share": round(1 - real / computed, 4) if computed else None,
        "real_tokens_per_step": round(real / max(len(times) - skip, 1), 1),
        "peak_memory_mib": round(peak),
        "peak_memory_kind": "cuda max allocated" if device.startswith("cuda") else "process RSS",
        "loss_curve": [(int(s), round(float(v), 4)) for s, v in losses],
        # Per-step losses are noisy (only the short messages are scored): compare means.
        "loss_first5_mean": _mean([v for _, v in losses[:5]]),
        "loss_last10_mean": _mean([v for _, v in losses[-10:]]),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("transformers", "trl", "peft", "datasets")}


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def _child_argv(args: argparse.Namespace, variant: str, out: Path) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--variant", variant]
    argv += ["--variant-out", str(out), "--device", args.device, "--model", args.model]
    argv += ["--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    argv += ["--max-length", str(args.max_length), "--lr", str(args.lr), "--attn", args.attn]
    argv += ["--warmup", str(args.warmup), "--seed", str(args.seed)]
    argv += ["--bf16"] if args.bf16 else ["--no-bf16"]
    if args.data:
        argv += ["--data", args.data]
    return argv


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--model", default="tiny-random-1b", help="tiny-random-1b, tiny or a path")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--attn", default="sdpa", help="attention implementation of every variant")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the timing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="pair parquet file or directory")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, of: {', '.join(VARIANTS)}; plain@N: plain loop at batch N",
    )
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--variant-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.bf16 is None:
        args.bf16 = args.device.startswith("cuda")
    return args


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.variant:
        result = run_variant(args)
        Path(args.variant_out).write_text(json.dumps(result))
        return 0
    for variant in args.variants.split(","):
        label_of(variant)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            out = Path(tmp) / f"{variant}.json"
            env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
            subprocess.run(_child_argv(args, variant, out), check=True, env=env)
            results.append(json.loads(out.read_text()))
    base = next((r for r in results if r["variant"].startswith("plain")), results[0])
    for r in results:
        r["speedup_vs_plain"] = round(r["real_tokens_per_s"] / base["real_tokens_per_s"], 2)
    import torch

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print_table(
        f"training throughput: {args.model} on {device_name}, batch {args.batch_size}, "
        f"max length {args.max_length}, {args.steps} steps ({args.warmup} untimed)",
        [
            "setup",
            "real tok/s",
            "padding",
            "tok/step",
            "step s",
            "peak MiB",
            "loss first 5 -> last 10",
            "x",
        ],
        [
            [
                r["label"],
                r["real_tokens_per_s"],
                f"{r['padding_share']:.0%}",
                r["real_tokens_per_step"],
                r["step_s_mean"],
                r["peak_memory_mib"],
                f"{r['loss_first5_mean']:.2f} -> {r['loss_last10_mean']:.2f}",
                r["speedup_vs_plain"],
            ]
            for r in results
        ],
    )
    path = write_result(
        "train_throughput",
        {
            "device": device_name,
            "model": args.model,
            "config": CONFIGS.get(args.model),
            "args": {k: v for k, v in vars(args).items() if not k.startswith("variant")},
            "data": args.data or "demo stream pairs (data/demo)",
            "torch": torch.__version__,
            "versions": _versions(),
            "results": results,
        },
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
