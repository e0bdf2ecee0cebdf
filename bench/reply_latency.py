"""How fast is a reply? vLLM AsyncLLM (1 and 4 candidates) against transformers ``generate``,
and what the HTTP hop of the server backend (``CHATLING_MODEL__BACKEND=server``) costs.

Same model (the packaged SmolLM2-135M-Instruct, bf16), same 50 prompts (the
pipeline's real prompts at 50 moments of the demo stream), same sampling
(temperature 0.9, top-p 0.95, up to 32 tokens, stop at a newline), in one run.
Reports time to first token and to the full message (p50/p95), completion
tokens per second, and peak resident memory of the process tree. The server
rows run a vLLM server on 127.0.0.1 after the in-process engine has shut down
(one at a time: on 2 cores they would slow each other), same settings, eager.
"x base n=4" is against the first n=4 row (transformers, or in-process vLLM
with ``--skip-transformers``, whose result goes to ``reply_latency_server.json``).

Run: ``.venv/bin/python bench/reply_latency.py [--prompts 50] [--compile]
[--skip-transformers] [--skip-server]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import PeakMemory, demo_prompts, now, percentile, print_table, write_result

MAX_TOKENS = 32


def bench_transformers(prompts: list[tuple[str, str]], n: int) -> dict:
    """The baseline: plain transformers ``generate`` with sampling, one prompt at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria

    from chatling.core.paths import DEFAULT_MODEL_DIR

    torch.set_num_threads(os.cpu_count() or 2)
    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR, dtype=torch.bfloat16).eval()

    class FirstToken(StoppingCriteria):
        def __init__(self) -> None:
            self.at: float | None = None

        def __call__(self, input_ids, scores, **kwargs):  # type: ignore[no-untyped-def]
            if self.at is None:
                self.at = now()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    ttft, total, tokens = [], [], 0
    with PeakMemory() as mem:
        started_all = now()
        for i, (system, user) in enumerate(prompts):
            ids = tok.apply_chat_template(
                [{"role": "system", "content": system}, {"role": "user", "content": user}],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
            first = FirstToken()
            torch.manual_seed(i)
            t0 = now()
            with torch.inference_mode():
                out = model.generate(
                    **ids,
                    do_sample=True,
                    temperature=0.9,
                    top_p=0.95,
                    max_new_tokens=MAX_TOKENS,
                    num_return_sequences=n,
                    stop_strings=["\n"],
                    tokenizer=tok,
                    stopping_criteria=[first],
                    pad_token_id=tok.eos_token_id,
                )
            total.append(now() - t0)
            ttft.append((first.at or now()) - t0)
            new = out[:, ids["input_ids"].shape[1] :]
            tokens += int((new != tok.eos_token_id).sum())
        wall = now() - started_all
    del model
    gc.collect()
    return _summary(f"transformers generate (n={n})", ttft, total, tokens, wall, mem.peak_bytes)


async def _variants(
    engine, prompts: list[tuple[str, str]], ns: list[int], label: str
) -> list[dict]:
    """The same prompts at each ``n`` through one engine (in-process or server)."""
    from chatling.engine import SamplingOptions

    token_prompts = [engine.render_chat(s, u) for s, u in prompts]
    # Warm-up (first requests pay one-off costs in both engines' favour otherwise).
    await engine.generate(token_prompts[0], SamplingOptions(n=1, max_tokens=4))
    results = []
    for n in ns:
        # Each variant starts from a cold prefix cache, or the second would
        # reuse the first one's cached prompts.
        await engine.reset_prefix_cache()
        ttft, total, tokens = [], [], 0
        started_all = now()
        for i, ids in enumerate(token_prompts):
            options = SamplingOptions(n=n, max_tokens=MAX_TOKENS, seed=i)
            gen = await engine.generate(ids, options)
            ttft.append(gen.first_token_s)
            total.append(gen.total_s)
            tokens += gen.completion_tokens
        wall = now() - started_all
        results.append(_summary(f"{label} (n={n})", ttft, total, tokens, wall, 0))
    return results


async def bench_vllm(prompts: list[tuple[str, str]], ns: list[int], eager: bool) -> list[dict]:
    from chatling.core.settings import ModelSettings
    from chatling.engine import VllmEngine

    with PeakMemory() as mem:
        async with VllmEngine.start(ModelSettings(enforce_eager=eager)) as engine:
            mode = "eager" if eager else "compiled"
            results = await _variants(engine, prompts, ns, f"vLLM AsyncLLM {mode}")
    for r in results:
        r["peak_rss_mib"] = round(mem.peak_bytes / 2**20)
    return results


async def bench_server(prompts: list[tuple[str, str]], ns: list[int]) -> list[dict]:
    """The same through the server backend: a vLLM server on 127.0.0.1 (started here with
    ``chatling serve``'s command line, eager), streamed over HTTP by ``ServerEngine``."""
    import socket
    import tempfile

    from chatling.core.settings import ModelSettings
    from chatling.engine_server import ServerEngine
    from chatling.serve import ServerProcess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = ModelSettings(
        enforce_eager=True, backend="server", server_url=f"http://127.0.0.1:{port}"
    )
    log_path = Path(tempfile.mkdtemp()) / "server.log"
    # Dev mode: /reset_prefix_cache, so each variant starts cold as in-process.
    server = ServerProcess(settings, port, log_path, {"VLLM_SERVER_DEV_MODE": "1"})
    with PeakMemory() as mem:  # the server is a child of this process: counted
        server.start()
        try:
            await asyncio.to_thread(server.wait_ready)
            async with ServerEngine.start(settings) as engine:
                results = await _variants(engine, prompts, ns, "vLLM server over HTTP")
        finally:
            server.stop()
    for r in results:
        r["peak_rss_mib"] = round(mem.peak_bytes / 2**20)
    return results


def _summary(name: str, ttft, total, tokens: int, wall: float, peak: int) -> dict:
    return {
        "engine": name,
        "prompts": len(total),
        "ttft_p50_s": round(percentile(ttft, 50), 4),
        "ttft_p95_s": round(percentile(ttft, 95), 4),
        "reply_p50_s": round(percentile(total, 50), 4),
        "reply_p95_s": round(percentile(total, 95), 4),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "peak_rss_mib": round(peak / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--compile", action="store_true", help="also run vLLM with torch.compile")
    parser.add_argument(
        "--skip-transformers",
        action="store_true",
        help="leave out the transformers rows (in-process vLLM is then the baseline)",
    )
    parser.add_argument(
        "--skip-server", action="store_true", help="leave out the vLLM server backend rows"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    prompts = demo_prompts(args.prompts)
    # Import everything first: the run takes minutes, and lazy imports must not
    # pick up files edited meanwhile.
    import chatling.engine  # noqa: F401

    rows = []
    if not args.skip_transformers:
        rows += [bench_transformers(prompts, 1), bench_transformers(prompts, 4)]
        print("baseline:", rows, flush=True)
    rows += asyncio.run(bench_vllm(prompts, [1, 4], eager=True))
    if args.compile:
        rows += asyncio.run(bench_vllm(prompts, [1, 4], eager=False))
    if not args.skip_server:
        rows += asyncio.run(bench_server(prompts, [1, 4]))
    base4 = rows[1]["tokens_per_s"]
    for r in rows:
        r["throughput_vs_transformers_n4"] = round(r["tokens_per_s"] / base4, 2)
    header = [
        "engine",
        "ttft p50",
        "ttft p95",
        "reply p50",
        "reply p95",
        "tok/s",
        "x base n=4",
        "peak MiB",
    ]
    print_table(
        f"reply latency, {len(prompts)} demo-stream prompts, up to {MAX_TOKENS} tokens",
        header,
        [
            [
                r["engine"],
                f"{r['ttft_p50_s'] * 1000:.0f} ms",
                f"{r['ttft_p95_s'] * 1000:.0f} ms",
                f"{r['reply_p50_s']:.2f} s",
                f"{r['reply_p95_s']:.2f} s",
                r["tokens_per_s"],
                r["throughput_vs_transformers_n4"],
                r["peak_rss_mib"],
            ]
            for r in rows
        ],
    )
    # A run without the transformers rows must not replace the full result.
    name = "reply_latency_server" if args.skip_transformers else "reply_latency"
    path = write_result(name, {"max_tokens": MAX_TOKENS, "results": rows})
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
