"""The wire format of the server backend: vLLM's OpenAI-compatible completions API.

Pure helpers of ``chatling.engine_server``: the request body of one reply (every
``SamplingOptions`` field, by name), the served name of an adapter directory,
reading a server-sent event stream and an error body, and putting the ``n``
streamed candidates together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from chatling.engine import SamplingOptions

_BODY_NAMES: dict[str, str] = {}
"""``SamplingOptions`` fields whose ``/v1/completions`` key has another name (none today:
vLLM's completion request uses the sampling parameters' own names)."""


def completion_body(model: str, prompt_ids: list[int], options: SamplingOptions) -> dict[str, Any]:
    """The ``/v1/completions`` request for one reply: every ``SamplingOptions`` field, mapped.

    Fields travel under their own names (``_BODY_NAMES`` renames); tuples become
    JSON lists. ``tests/test_engine_server.py`` checks every field is a key vLLM knows.
    """
    body: dict[str, Any] = {
        "model": model,
        "prompt": list(prompt_ids),
        "stream": True,
        "stream_options": {"include_usage": True},
        "add_special_tokens": False,
        "skip_special_tokens": True,
    }
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        body[_BODY_NAMES.get(field.name, field.name)] = (
            list(value) if isinstance(value, tuple) else value
        )
    return body


def adapter_model_name(directory: Path) -> str:
    """The served model name of one adapter directory (unique per absolute path)."""
    digest = hashlib.sha1(str(directory).encode()).hexdigest()[:8]
    return f"chatling-{directory.name}-{digest}"


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON events of a server-sent event stream, up to ``data: [DONE]``."""
    async for raw in response.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        yield json.loads(data)
    raise aiohttp.ClientPayloadError("the stream ended without [DONE]")


async def error_text(response: aiohttp.ClientResponse) -> str:
    """The server's own message of an error response (vLLM's or FastAPI's shape)."""
    text = await response.text()
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:300] or response.reason or str(response.status)
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data))
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error)
    return str(data)


@dataclasses.dataclass(slots=True)
class StreamedCandidates:
    """The ``n`` candidates of one streamed completion, put together chunk by chunk."""

    n: int
    texts: list[str] = dataclasses.field(init=False)
    truncated: list[bool] = dataclasses.field(init=False)
    completion_tokens: int = 0
    _logprob_sums: list[float] = dataclasses.field(init=False)
    _logprob_counts: list[int] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.texts = [""] * self.n
        self.truncated = [False] * self.n
        self._logprob_sums = [0.0] * self.n
        self._logprob_counts = [0] * self.n

    def add(self, event: dict[str, Any]) -> bool:
        """Take one SSE event; True if it carried text (the first one times the first token)."""
        got_text = False
        for choice in event.get("choices") or ():
            index = choice["index"]
            if choice.get("text"):
                self.texts[index] += choice["text"]
                got_text = True
            if choice.get("finish_reason") == "length":
                self.truncated[index] = True
            logprobs = choice.get("logprobs") or {}
            for value in logprobs.get("token_logprobs") or ():
                if value is not None:
                    self._logprob_sums[index] += value
                    self._logprob_counts[index] += 1
        if event.get("usage"):
            self.completion_tokens = int(event["usage"].get("completion_tokens") or 0)
        return got_text

    def mean_logprobs(self) -> tuple[float, ...]:
        """Per candidate, the mean log-probability of its sampled tokens (-inf: none)."""
        return tuple(
            total / count if count else float("-inf")
            for total, count in zip(self._logprob_sums, self._logprob_counts, strict=True)
        )


__all__ = [
    "StreamedCandidates",
    "adapter_model_name",
    "completion_body",
    "error_text",
    "sse_events",
]
