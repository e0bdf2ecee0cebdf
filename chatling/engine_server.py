"""The language model engine as a client of a vLLM server (``CHATLING_MODEL__BACKEND=server``).

The same interface as ``chatling.engine.VllmEngine`` (``count_tokens``,
``render_chat``, ``render``, ``generate``, ``set_adapter``, ``adapter``, an async
``start`` context), so the pipeline, the Discord responder and the adapter
watcher do not know which one they hold. The prompt is still rendered here,
by the model's own tokenizer through the very same ``render_chat`` function,
and sent to ``/v1/completions`` as token ids: the server runs exactly the
tokens the in-process engine would, and a server serving a different
tokenizer is refused at start.

- One request per reply asks for ``n`` candidates, streamed (SSE), so the time
  to the first token is known. A cancelled caller closes the HTTP connection;
  vLLM aborts a request whose client went away, so the server stops
  generating.
- Every request has a connect timeout, a stall timeout (no streamed bytes for
  that long) and a total timeout (``ModelSettings.server_*_timeout_s``).
- Start: a server that does not answer, refuses the API key or serves another
  tokenizer is one ``ModelError`` line. Later: a server that dies or stalls
  mid-reply fails that reply with ``EngineError`` (the pipeline drops it and
  goes on) and starts one background reconnect with exponential backoff;
  replies asked for meanwhile fail at once instead of queueing behind a dead
  server. Once ``/health`` answers again the serving adapter is loaded again
  (a restarted server has forgotten it).
- LoRA: ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` (the server
  runs with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` and ``--enable-lora``;
  ``chatling serve`` sets both). Each adapter directory gets a model name of
  its own, requests switch by that name, and the old one is unloaded after the
  switch, so a rollback is just loading the older directory again. The server
  reads the adapter from its own disk: on another machine the adapters
  directory must be mounted at the same absolute path (README), and a path the
  server cannot read is refused with a message that says so.

HTTP client: aiohttp, which chatling already uses for Twitch, so the bot has
one HTTP stack; ``ClientTimeout(sock_read=...)`` gives the per-chunk stall
timeout directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from chatling.core.errors import EngineError, ModelError
from chatling.core.settings import ModelSettings
from chatling.engine import (
    Adapter,
    Generation,
    SamplingOptions,
    VllmEngine,
    _adapter_dir,
    resolve_model,
)
from chatling.server_wire import (
    StreamedCandidates,
    adapter_model_name,
    completion_body,
    error_text,
    sse_events,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_TOKENIZER_PROBE = "chatling checks the tokenizer: Ünïcode 👋 PogChamp\n"


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """How the engine retries a server that went away."""

    first_s: float = 0.5
    max_s: float = 10.0


class ServerEngine:
    """Candidates for chat replies from a vLLM server over HTTP."""

    # The very functions the in-process engine renders and counts with (they read
    # only ``self.tokenizer``): the served prompt is the in-process one by construction.
    count_tokens = VllmEngine.count_tokens
    render_chat = VllmEngine.render_chat
    render = VllmEngine.render

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokenizer: PreTrainedTokenizerBase,
        settings: ModelSettings,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self._session = session
        self.tokenizer = tokenizer
        self.url = settings.server_url.rstrip("/")
        self.model_name = ""
        """The base model's name on the server (set by ``check_server``)."""
        self._timeout = aiohttp.ClientTimeout(
            total=settings.server_request_timeout_s,
            sock_connect=settings.server_connect_timeout_s,
            sock_read=settings.server_stall_timeout_s,
        )
        self._probe_timeout = aiohttp.ClientTimeout(
            total=settings.server_connect_timeout_s + 5.0,
            sock_connect=settings.server_connect_timeout_s,
        )
        self._backoff = backoff or Backoff()
        self._adapter: Adapter | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self.reconnects = 0
        """Times the server came back after it was lost."""

    @classmethod
    @asynccontextmanager
    async def start(
        cls, settings: ModelSettings, *, backoff: Backoff | None = None
    ) -> AsyncIterator[ServerEngine]:
        """Check the server, yield the engine, and always close the HTTP session.

        The tokenizer is loaded locally from ``settings.name`` (the prompt is
        rendered here); the model weights are the server's.
        """
        model = resolve_model(settings.name)
        from transformers import AutoTokenizer

        try:
            tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, model)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the tokenizer of {model}: {exc}") from exc
        key = settings.server_api_key.get_secret_value()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with aiohttp.ClientSession(headers=headers) as session:
            engine = cls(session, tokenizer, settings, backoff=backoff)
            try:
                await engine.check_server()
                if settings.adapter:
                    await engine.set_adapter(settings.adapter)
                yield engine
            finally:
                await engine._stop_reconnecting()
        log.info("vLLM server session closed")

    # -- health ----------------------------------------------------------------------

    async def check_server(self) -> None:
        """One clear ``ModelError`` unless a vLLM server with our tokenizer answers."""
        where = f"the vLLM server at {self.url}"
        try:
            async with self._session.get(
                f"{self.url}/v1/models", timeout=self._probe_timeout
            ) as response:
                if response.status == 401:
                    raise ModelError(
                        f"{where} refused the API key: set CHATLING_MODEL__SERVER_API_KEY "
                        "to the key the server was started with (--api-key)"
                    )
                if response.status != 200:
                    raise ModelError(
                        f"{where} answered GET /v1/models with HTTP {response.status} "
                        f"({await error_text(response)}): is CHATLING_MODEL__SERVER_URL "
                        "a vLLM server?"
                    )
                models = (await response.json())["data"]
            base = next(m for m in models if not m.get("parent"))
            self.model_name = str(base["id"])
            async with self._session.post(
                f"{self.url}/tokenize",
                json={"model": self.model_name, "prompt": _TOKENIZER_PROBE,
                      "add_special_tokens": False},
                timeout=self._probe_timeout,
            ) as response:  # fmt: skip
                served = (await response.json()).get("tokens") if response.ok else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ModelError(
                f"{where} does not answer ({exc or type(exc).__name__}): start it with "
                "`chatling serve` (or fix CHATLING_MODEL__SERVER_URL)"
            ) from None
        except (KeyError, StopIteration, ValueError, TypeError) as exc:
            raise ModelError(f"{where} lists no base model in /v1/models ({exc})") from None
        local = self.tokenizer.encode(_TOKENIZER_PROBE, add_special_tokens=False)
        if served is not None and list(served) != list(local):
            raise ModelError(
                f"{where} serves {self.model_name}, whose tokenizer differs from the one of "
                "CHATLING_MODEL__NAME; set it to the model the server serves (chatling renders "
                "the prompt with it)"
            )
        log.info("using the vLLM server at %s (model %s)", self.url, self.model_name)

    async def _probe(self) -> None:
        async with self._session.get(f"{self.url}/health", timeout=self._probe_timeout) as r:
            r.raise_for_status()

    @property
    def alive(self) -> bool:
        """False while the server is lost and being reconnected."""
        return self._reconnecting is None

    def _server_lost(self, why: str) -> None:
        """Start one background reconnect (no-op if one runs)."""
        if self._reconnecting is None:
            log.error("lost the vLLM server at %s (%s); reconnecting with backoff", self.url, why)
            self._reconnecting = asyncio.create_task(self._reconnect(), name="server-reconnect")

    async def _reconnect(self) -> None:
        """Probe ``/health`` with exponential backoff until it answers; reload the adapter."""
        delay = self._backoff.first_s
        try:
            while True:
                await asyncio.sleep(delay)
                try:
                    await self._probe()
                    break
                except (aiohttp.ClientError, TimeoutError) as exc:
                    log.debug("vLLM server still down (%s); next try in %.1f s", exc, delay)
                    delay = min(delay * 2, self._backoff.max_s)
            if self._adapter is not None:
                try:
                    await self._load_lora(self._adapter.name, self._adapter.path)
                except ModelError as exc:
                    log.error("%s; serving the base model", exc)
                    self._adapter = None
            self.reconnects += 1
            log.warning("reconnected to the vLLM server at %s", self.url)
        finally:
            self._reconnecting = None

    async def _stop_reconnecting(self) -> None:
        task = self._reconnecting
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- LoRA ------------------------------------------------------------------------

    @property
    def adapter(self) -> Adapter | None:
        """The adapter the next request will use (``None``: the base model)."""
        return self._adapter

    async def _lora_call(self, endpoint: str, body: dict[str, Any]) -> tuple[int, str]:
        try:
            async with self._session.post(
                f"{self.url}/v1/{endpoint}", json=body, timeout=self._timeout
            ) as response:
                return response.status, ("" if response.ok else await error_text(response))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Unreachable(
                f"cannot reach the vLLM server at {self.url} to {endpoint.replace('_', ' ')} "
                f"({exc or type(exc).__name__})"
            ) from None

    async def _load_lora(self, name: str, path: str) -> bool:
        """Load ``path`` as model ``name`` on the server; False if it was loaded already."""
        status, text = await self._lora_call(
            "load_lora_adapter", {"lora_name": name, "lora_path": path}
        )
        if status == 200:
            return True
        if status == 400 and "already been loaded" in text:
            return False
        if status == 404 and text == "Not Found":
            raise ModelError(
                f"the vLLM server at {self.url} cannot load adapters at run time: start it "
                "with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora "
                "(`chatling serve` does)"
            )
        if status == 404:
            raise ModelError(
                f"the vLLM server at {self.url} cannot read adapter {path} ({text}); a server "
                "on another machine reads adapters from its own disk: mount the adapters "
                "directory at the same absolute path there (see README, server backend)"
            )
        raise ModelError(f"the vLLM server refused adapter {path}: HTTP {status}: {text}")

    async def _unload_lora(self, name: str) -> None:
        status, text = await self._lora_call("unload_lora_adapter", {"lora_name": name})
        if status not in (200, 404):  # 404: the server no longer has it (restarted)
            log.warning("the vLLM server kept adapter %s: HTTP %d: %s", name, status, text)

    async def set_adapter(self, path: str | Path | None) -> Adapter | None:
        """Load a LoRA adapter on the server (or go back to the base model) for the next requests.

        The adapter is loaded before requests switch to its name, so one the
        server refuses raises ``ModelError`` here and the one serving keeps
        serving; the previous one is unloaded after the switch. A server that
        does not answer is not a refusal: the adapter becomes the wanted one and
        the reconnect loads it once the server is back.
        """
        previous = self._adapter
        if path is None:
            self._adapter = None
            log.info("serving the base model")
        else:
            directory = await asyncio.to_thread(_adapter_dir, path)
            adapter = Adapter(adapter_model_name(directory), 0, str(directory))
            try:
                await self._load_lora(adapter.name, adapter.path)
            except _Unreachable as exc:
                # Not the adapter's fault: it is loaded when the server is back.
                self._adapter = adapter
                self._server_lost(str(exc))
                log.warning("adapter %s will be loaded when the server is back", adapter.path)
                return adapter
            self._adapter = adapter
            log.info("serving adapter %s (server model %s)", adapter.path, adapter.name)
        if previous is not None and previous != self._adapter:
            with contextlib.suppress(ModelError):  # unreachable: it has forgotten it anyway
                await self._unload_lora(previous.name)
        return self._adapter

    async def reset_prefix_cache(self) -> None:
        """Forget cached prompt prefixes (needs a server started with VLLM_SERVER_DEV_MODE=1)."""
        try:
            async with self._session.post(
                f"{self.url}/reset_prefix_cache", timeout=self._timeout
            ) as response:
                if not response.ok:
                    raise EngineError(
                        f"the vLLM server at {self.url} did not reset its prefix cache "
                        f"(HTTP {response.status}; it needs VLLM_SERVER_DEV_MODE=1)"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineError(f"cannot reach the vLLM server at {self.url}: {exc}") from None

    # -- generation ------------------------------------------------------------------

    async def generate(self, prompt_ids: list[int], options: SamplingOptions) -> Generation:
        """Generate ``options.n`` candidates for one prompt, streamed; abort on cancel."""
        if self._reconnecting is not None:
            raise EngineError(f"the vLLM server at {self.url} is unreachable; reconnecting")
        adapter = self._adapter
        for attempt in (1, 2):
            try:
                return await self._stream(prompt_ids, options, adapter)
            except _AdapterGone:
                # The server restarted between two replies and forgot the adapter.
                if attempt == 2 or adapter is None:
                    raise EngineError(f"the vLLM server lost adapter {adapter}") from None
                try:
                    await self._load_lora(adapter.name, adapter.path)
                except ModelError as exc:
                    raise EngineError(str(exc)) from None
        raise AssertionError("unreachable")

    async def _stream(
        self, prompt_ids: list[int], options: SamplingOptions, adapter: Adapter | None
    ) -> Generation:
        body = completion_body(adapter.name if adapter else self.model_name, prompt_ids, options)
        got = StreamedCandidates(options.n)
        started = time.perf_counter()
        first_token_s = 0.0
        try:
            async with self._session.post(
                f"{self.url}/v1/completions", json=body, timeout=self._timeout
            ) as response:
                if response.status != 200:
                    text = await error_text(response)
                    if response.status == 404 and adapter is not None and adapter.name in text:
                        raise _AdapterGone
                    raise EngineError(
                        f"the vLLM server refused the reply: HTTP {response.status}: {text}"
                    )
                try:
                    async for event in sse_events(response):
                        if "error" in event:
                            raise EngineError(f"the vLLM server failed the reply: {event}")
                        if got.add(event) and not first_token_s:
                            first_token_s = time.perf_counter() - started
                except asyncio.CancelledError:
                    response.close()  # drop the connection: vLLM aborts the request
                    raise
        except TimeoutError:
            self._server_lost("no streamed token in time")
            raise EngineError(
                f"the vLLM server at {self.url} stalled; reply dropped "
                "(CHATLING_MODEL__SERVER_STALL_TIMEOUT_S)"
            ) from None
        except aiohttp.ClientError as exc:
            self._server_lost(str(exc) or type(exc).__name__)
            raise EngineError(
                f"the vLLM server at {self.url} went away mid-reply ({exc or type(exc).__name__})"
            ) from None
        total_s = time.perf_counter() - started
        return Generation(
            texts=got.texts,
            first_token_s=first_token_s or total_s,
            total_s=total_s,
            completion_tokens=got.completion_tokens,
            adapter=adapter.path if adapter else None,
            truncated=tuple(got.truncated),
            mean_logprobs=got.mean_logprobs() if options.logprobs is not None else (),
        )


async def sample_texts(
    settings: ModelSettings,
    adapter: str | Path | None,
    prompts: list[list[int]],
    options: SamplingOptions,
) -> list[str]:
    """One sampled reply per prompt from the configured server, with ``adapter`` on it.

    The nightly gate's blocked-share check runs here when the bot serves from a
    server, so candidates are sampled by the engine that would serve them. The
    adapter is unloaded afterwards only if this call loaded it: the serving one
    (the same directory, the same name) stays for the live bot. Seeds count up
    from ``options.seed`` per prompt.
    """
    async with ServerEngine.start(settings.model_copy(update={"adapter": None})) as engine:
        loaded = False
        if adapter is not None:
            directory = await asyncio.to_thread(_adapter_dir, adapter)
            chosen = Adapter(adapter_model_name(directory), 0, str(directory))
            loaded = await engine._load_lora(chosen.name, chosen.path)
            engine._adapter = chosen
        try:
            texts = []
            for i, ids in enumerate(prompts):
                seed = None if options.seed is None else options.seed + i
                gen = await engine.generate(ids, dataclasses.replace(options, seed=seed))
                texts.append(gen.texts[0])
            return texts
        finally:
            if loaded and engine._adapter is not None:
                with contextlib.suppress(ModelError):
                    await engine._unload_lora(engine._adapter.name)
            engine._adapter = None


class _Unreachable(ModelError):
    """The server did not answer an adapter request (internal)."""


class _AdapterGone(Exception):
    """The server answered 404 for the adapter's model name (internal)."""


__all__ = ["Backoff", "ServerEngine", "sample_texts"]
