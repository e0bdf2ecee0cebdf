"""Does ``chatling train`` scale from 1 to 2 GPUs? One epoch of the same data, DDP.

The same command a user runs (``accelerate launch --config_file
chatling/training/accelerate/ddp.yaml --num_processes N -m chatling.cli.train ...``),
with N = 1 then N = 2, on the same pairs dataset, base model, preset and
per-GPU batch size; one epoch each, so both see the same examples (N = 2 takes
half the optimizer steps, each on twice the rows). Reported per N: wall time
of the training loop (``time.train_seconds`` in the adapter metadata), real
tokens per second, final loss, and the speed-up over N = 1 (ideal 2.0x).

The base is a 1B-class Llama with random weights and SmolLM2's tokenizer
(``--tokenizer DIR``), large enough that compute, not launch overhead,
dominates; the preset is ``gpu-24gb`` (bf16 LoRA r=16 on all linear layers).

Run on a 2-GPU machine:
    python bench/ddp_scaling.py --data DIR --tokenizer DIR [--max-length 2048]
Writes bench/results/ddp_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import print_table, write_result  # noqa: E402 - after the path setup


def random_llama(out: Path, tokenizer: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer)
    config = LlamaConfig(
        hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=len(tok), max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)


def run(n: int, args: argparse.Namespace, base: Path, work: Path) -> dict:
    out = work / f"adapter-{n}gpu"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "chatling/training/accelerate/ddp.yaml"),
        "--num_processes", str(n),
        "-m", "chatling.cli.train",
        "--data", str(args.data), "--base", str(base), "--preset", "gpu-24gb",
        "--out", str(out), "--epochs", "1", "--batch-size", str(args.batch_size),
        "--max-length", str(args.max_length), "--split", "time", "--save-steps", "100000",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-5000:], file=sys.stderr)
        raise SystemExit(f"{n} GPU run failed ({proc.returncode})")
    meta = json.loads((out / "chatling_adapter.json").read_text())
    return {
        "gpus": n,
        "world_size": meta["world_size"],
        "global_step": meta["global_step"],
        "train_seconds": meta["time"]["train_seconds"],
        "process_wall_seconds": round(wall, 1),
        "tokens_seen": meta["tokens"]["seen"],
        "tokens_per_second": meta["tokens"]["per_second"],
        "final_loss": meta["final_loss"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="pairs dataset directory")
    p.add_argument("--tokenizer", type=Path, required=True, help="SmolLM2 tokenizer directory")
    p.add_argument("--batch-size", type=int, default=8, help="rows per GPU per step")
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--work", type=Path, default=Path("/tmp/ddp-scaling"))
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    base = args.work / "random-llama-1b"
    if not (base / "config.json").exists():
        random_llama(base, args.tokenizer)
    rows = [run(n, args, base, args.work) for n in (1, 2)]
    one = rows[0]["train_seconds"]
    for r in rows:
        r["speedup"] = round(one / r["train_seconds"], 2)
    import torch

    device = torch.cuda.get_device_name(0)
    print_table(
        f"chatling train, 1 epoch of {args.data.name}, random 1B Llama, gpu-24gb, {device}",
        ["GPUs", "steps", "train s", "tokens/s", "speed-up", "final loss"],
        [
            [
                r["gpus"],
                r["global_step"],
                r["train_seconds"],
                r["tokens_per_second"],
                f"{r['speedup']}x",
                round(r["final_loss"], 3),
            ]
            for r in rows
        ],
    )
    print(f"written {write_result('ddp_scaling', {'device': device, 'results': rows})}")
    os.sync()


if __name__ == "__main__":
    main()
