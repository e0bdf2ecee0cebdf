"""Twitch's own safety checks, used where the bot's account may: blocked terms and AutoMod.

- ``fetch_blocked_terms``: Helix ``GET /moderation/blocked_terms`` (scope
  ``moderator:read:blocked_terms``; the bot must be a moderator or the
  broadcaster), every page. ``TwitchChat`` merges the terms into the safety
  filter at start and every ``refresh_s`` seconds (``keep_terms_fresh``), so
  a term the streamer adds on Twitch is never said by the bot either.
- ``automod_permits``: Helix ``POST /moderation/enforcements/status`` (Check
  AutoMod Status, scope ``moderation:read``), asked before each send when the
  bot is a moderator: a message AutoMod would hold is not sent.

A missing permission (HTTP 401 naming a scope, or 403) is one log line
saying what to grant, and the check is off from then on; it is never a
failure of the bot. Network errors and 5xx skip one fetch or one check (the
bot's own filter has already passed the message).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from chatling.platforms.twitch.auth import TwitchError
from chatling.platforms.twitch.sink import TokenSource

log = logging.getLogger(__name__)

BLOCKED_TERMS_SCOPE = "moderator:read:blocked_terms"
AUTOMOD_SCOPE = "moderation:read"


class TwitchModeration:
    """Asks Helix about the channel's blocked terms and AutoMod; see the module docstring."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        client_id: str,
        broadcaster_id: str,
        moderator_id: str,
        tokens: TokenSource,
        helix_base: str,
        refresh_s: float = 600.0,
        timeout_s: float = 5.0,
    ) -> None:
        self._session = session
        self._client_id = client_id
        self.broadcaster_id = broadcaster_id
        self.moderator_id = moderator_id
        self._tokens = tokens
        self._base = helix_base
        self.refresh_s = refresh_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.blocked_terms_enabled = True
        self.automod_enabled = True
        self.automod_checks = 0
        self.automod_held = 0

    async def _call(
        self, method: str, path: str, params: dict[str, str], body: Any = None
    ) -> tuple[int, Any]:
        token = self._tokens.access_token()
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {token}", "Client-Id": self._client_id}
            async with self._session.request(
                method, f"{self._base}{path}", params=params, json=body, headers=headers,
                timeout=self._timeout,
            ) as resp:  # fmt: skip
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = None
                status = resp.status
            message = data.get("message", "") if isinstance(data, dict) else ""
            if status == 401 and attempt == 1 and "scope" not in message.lower():
                token = await self._tokens.refresh_access(token)
                continue
            return status, data
        return status, data

    def _refused(self, what: str, scope: str, status: int, data: Any) -> None:
        message = data.get("message", "") if isinstance(data, dict) else ""
        log.warning(
            "Twitch refused %s (HTTP %d: %s): off for this run; grant the bot the `%s` scope "
            "and make it a moderator (`/mod <bot>`) to use it",
            what, status, message or "no reason given", scope,
        )  # fmt: skip

    async def fetch_blocked_terms(self) -> list[str] | None:
        """The channel's blocked terms, or ``None`` when Twitch would not say."""
        if not self.blocked_terms_enabled:
            return None
        terms: list[str] = []
        params = {"broadcaster_id": self.broadcaster_id, "moderator_id": self.moderator_id,
                  "first": "100"}  # fmt: skip
        try:
            while True:
                status, data = await self._call("GET", "moderation/blocked_terms", params)
                if status in (401, 403):
                    self.blocked_terms_enabled = False
                    self._refused("reading the channel's blocked terms", BLOCKED_TERMS_SCOPE,
                                  status, data)  # fmt: skip
                    return None
                if status != 200 or not isinstance(data, dict):
                    log.warning("could not read the channel's blocked terms (HTTP %d)", status)
                    return None
                terms += [t["text"] for t in data.get("data") or () if t.get("text")]
                cursor = (data.get("pagination") or {}).get("cursor")
                if not cursor:
                    return terms
                params = {**params, "after": cursor}
        except (aiohttp.ClientError, TimeoutError, TwitchError) as exc:
            log.warning("could not read the channel's blocked terms (%s)", type(exc).__name__)
            return None

    async def keep_terms_fresh(self, apply: Callable[[list[str]], object]) -> None:
        """Fetch and ``apply`` the blocked terms every ``refresh_s`` until cancelled."""
        while self.blocked_terms_enabled:
            await asyncio.sleep(self.refresh_s)
            terms = await self.fetch_blocked_terms()
            if terms is not None:
                apply(terms)

    async def automod_permits(self, text: str) -> bool | None:
        """Whether AutoMod lets ``text`` through; ``None`` when it could not be asked."""
        if not self.automod_enabled:
            return None
        body = {"data": [{"msg_id": uuid.uuid4().hex, "msg_text": text}]}
        try:
            status, data = await self._call(
                "POST", "moderation/enforcements/status",
                {"broadcaster_id": self.broadcaster_id}, body,
            )  # fmt: skip
        except (aiohttp.ClientError, TimeoutError, TwitchError) as exc:
            log.warning("could not ask AutoMod (%s): sending on the bot's own filter",
                        type(exc).__name__)  # fmt: skip
            return None
        if status in (401, 403):
            self.automod_enabled = False
            self._refused("the AutoMod check", AUTOMOD_SCOPE, status, data)
            return None
        try:
            permitted = bool(data["data"][0]["is_permitted"])
        except (KeyError, IndexError, TypeError):
            log.warning("AutoMod answered HTTP %d without a verdict: sending on the bot's own "
                        "filter", status)  # fmt: skip
            return None
        self.automod_checks += 1
        self.automod_held += not permitted
        return permitted
