"""Posting to Twitch chat through Helix ``POST /chat/messages`` (``TwitchSink``).

Implements ``chatling.sinks.ChatSink``: ``send`` returns True only when Twitch says
``is_sent: true``. Everything else returns False with one log line and never
raises: a refusal (``is_sent: false`` with a ``drop_reason``, or HTTP 403)
pauses sending for ``drop_backoff_s``; HTTP 429 pauses until Twitch's
``Ratelimit-Reset`` (unix seconds); 5xx and network errors just fail that one
message. A 401 refreshes the token once and retries; if Twitch refuses the
refresh too (the authorisation was revoked), nothing more is sent, ever, by
this sink: one error says to run ``chatling auth twitch``.

Besides the pipeline's own (stricter) limiter, the sink keeps a last-line
guard at Twitch's hard chat limit (20 messages per 30 s, 100 as moderator or
broadcaster), so nothing that calls it (replies, moderator command answers)
can earn the bot Twitch's 30-minute lock-out. When to send is decided by
``SendGate``, a pure function of its state and the time passed in.

The request is made with aiohttp directly rather than through twitchio,
because twitchio's exception drops the response headers (``Ratelimit-Reset``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from chatling.core.events import ChatMessage
from chatling.platforms.twitch.auth import TwitchAuthError, TwitchError
from chatling.ratelimit import TokenBucket

log = logging.getLogger(__name__)

HELIX_BASE = "https://api.twitch.tv/helix/"
MAX_MESSAGE_CHARS = 500
PLATFORM_WINDOW_S = 31.0
"""Twitch's window is 30 s; one more second of margin for clock and network skew."""
PLATFORM_LIMIT = 19
"""Twitch allows 20 messages per 30 s to a normal account; keep one in reserve."""
PLATFORM_LIMIT_MODERATOR = 95
"""... and 100 to a moderator or the broadcaster."""


class TokenSource(Protocol):
    """Where the sink gets the bot's current access token."""

    def access_token(self) -> str: ...

    async def refresh_access(self, rejected: str) -> str:
        """A fresh token after Twitch rejected ``rejected``; raises ``TwitchError`` if none."""
        ...


@dataclass(slots=True)
class SendGate:
    """Whether the sink may post now: backoffs after refusals plus the platform guard."""

    capacity: int
    window_s: float
    blocked_until: float = 0.0
    """Unix time before which nothing is sent (after a drop, a 403 or a 429)."""
    why: str = ""
    bucket: TokenBucket = field(init=False)

    def __post_init__(self) -> None:
        self.bucket = TokenBucket(self.capacity, self.window_s)

    def refusal(self, now: float) -> str | None:
        """Why nothing may be sent at ``now`` (None: a send may go ahead)."""
        if now < self.blocked_until:
            if math.isinf(self.blocked_until):
                return self.why
            return f"{self.why}: holding for {self.blocked_until - now:.0f} s more"
        if self.bucket.time_until_available(now) > 0:
            return f"Twitch's limit of {self.capacity} messages per {self.window_s:.0f} s"
        return None

    def acquire(self, now: float) -> bool:
        """Take one message from the platform guard (after ``refusal`` said None)."""
        return now >= self.blocked_until and self.bucket.try_acquire(now)

    def block(self, until: float, why: str) -> None:
        """Send nothing before ``until`` (keeps the later of two blocks)."""
        if until > self.blocked_until:
            self.blocked_until, self.why = until, why


def rate_limit_reset(headers: Any, now: float, fallback_s: float) -> float:
    """Unix time from a 429's ``Ratelimit-Reset`` header (``now + fallback_s`` if absent)."""
    raw = headers.get("Ratelimit-Reset") if headers is not None else None
    try:
        reset = float(raw)
    except (TypeError, ValueError):
        return now + fallback_s
    return reset if reset > now else now + 1.0


class TwitchSink:
    """Sends chat messages as the bot account; see the module docstring."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        client_id: str,
        broadcaster_id: str,
        sender_id: str,
        tokens: TokenSource,
        channel: str = "",
        is_moderator: bool = False,
        helix_base: str = HELIX_BASE,
        drop_backoff_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._client_id = client_id
        self.broadcaster_id = broadcaster_id
        self.sender_id = sender_id
        self._tokens = tokens
        self.channel = channel
        self._url = f"{helix_base}chat/messages"
        self.drop_backoff_s = drop_backoff_s
        self._clock = clock
        capacity = PLATFORM_LIMIT_MODERATOR if is_moderator else PLATFORM_LIMIT
        self.gate = SendGate(capacity, PLATFORM_WINDOW_S)
        self.sent = 0
        self.refused = 0
        self.automod: Callable[[str], Awaitable[bool | None]] | None = None
        """Asked before each send when set (``TwitchModeration.automod_permits``, for a
        moderator bot): ``False`` means AutoMod would hold the message, so it is not sent."""

    async def send(self, text: str, reply_to: ChatMessage | None) -> bool:
        """Post ``text`` (as a reply when ``reply_to`` has a message id); True if Twitch sent it."""
        now = self._clock()
        if len(text) > MAX_MESSAGE_CHARS:
            log.warning(
                "not sending a %d-character message: Twitch allows %d", len(text), MAX_MESSAGE_CHARS
            )
            return False
        if self.automod is not None and await self.automod(text) is False:
            log.info("not sending to Twitch chat: AutoMod would hold the message")
            self.refused += 1
            return False
        refusal = self.gate.refusal(now)
        if refusal is not None or not self.gate.acquire(now):
            log.info("not sending to Twitch chat (%s)", refusal or "blocked")
            self.refused += 1
            return False
        body: dict[str, Any] = {
            "broadcaster_id": self.broadcaster_id,
            "sender_id": self.sender_id,
            "message": text,
        }
        if reply_to is not None and reply_to.message_id:
            body["reply_parent_message_id"] = reply_to.message_id
        ok = await self._post(body)
        if ok:
            self.sent += 1
        else:
            self.refused += 1
        return ok

    async def _post(self, body: dict[str, Any]) -> bool:
        token = self._tokens.access_token()
        for attempt in (1, 2):
            try:
                status, data, headers = await self._request(body, token)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("could not reach Twitch to send a message (%s)", type(exc).__name__)
                return False
            if status == 401 and attempt == 1:
                try:
                    token = await self._tokens.refresh_access(token)
                except TwitchAuthError as exc:
                    self.gate.block(math.inf, "the bot's token was revoked")
                    log.error(
                        "Twitch rejected the bot's token and its refresh (%s): sending nothing "
                        "more; run `chatling auth twitch`, then restart chatling",
                        exc,
                    )
                    return False
                except TwitchError as exc:
                    log.error("Twitch rejected the bot's token: %s", exc)
                    return False
                continue
            return self._judge(status, data, headers)
        return False

    async def _request(self, body: dict[str, Any], token: str) -> tuple[int, Any, Any]:
        headers = {"Authorization": f"Bearer {token}", "Client-Id": self._client_id}
        timeout = aiohttp.ClientTimeout(total=10)
        async with self._session.post(
            self._url, json=body, headers=headers, timeout=timeout
        ) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = None
            return resp.status, data, resp.headers

    def _judge(self, status: int, data: Any, headers: Any) -> bool:
        now = self._clock()
        message = data.get("message", "") if isinstance(data, dict) else ""
        if status == 429:
            reset = rate_limit_reset(headers, now, self.drop_backoff_s)
            self.gate.block(reset, "Twitch rate limit (HTTP 429)")
            log.warning(
                "Twitch rate-limited the bot (HTTP 429): not sending for %.0f s", reset - now
            )
            return False
        if status >= 500:
            log.warning("Twitch failed to send a message (HTTP %d: %s)", status, message)
            return False
        if status == 403:
            self.gate.block(now + self.drop_backoff_s, "Twitch refused (HTTP 403)")
            log.error(
                "Twitch refused the bot's message (HTTP 403: %s): the broadcaster must grant "
                "`channel:bot` or make the bot a moderator (`/mod <bot>`); "
                "see `chatling auth twitch`",
                message,
            )
            return False
        if status != 200 or not isinstance(data, dict) or not data.get("data"):
            log.error("Twitch answered a send with HTTP %d: %s", status, message or "no data")
            return False
        result = data["data"][0]
        if result.get("is_sent"):
            return True
        drop = result.get("drop_reason") or {}
        code, why = drop.get("code", "unknown"), drop.get("message", "")
        self.gate.block(now + self.drop_backoff_s, f"Twitch dropped a message ({code})")
        log.warning(
            "Twitch dropped the bot's message (%s: %s); not sending for %.0f s",
            code,
            why,
            self.drop_backoff_s,
        )
        return False
