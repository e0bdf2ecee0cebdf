"""Twitch user tokens for the bot account: device-code login, refresh, validation, token file.

``chatling auth twitch`` runs ``device_code_login``: it asks id.twitch.tv for a
device code, shows the user where to enter it (logged in as the *bot*
account), polls until the user agrees, validates the token and writes it to
the token file (``data/twitch-tokens.json`` by default; JSON, mode 0600,
written atomically with ``os.replace``). The live client loads that file,
refreshes the token when Twitch rejects it, and writes the new pair back.

No secret ever reaches a URL (every token travels in a form body or a header),
a log line or an exception message: tokens are ``SecretStr`` everywhere, and
``SecretRedactor`` scrubs them from third-party log records (twitchio puts the
refresh token in a URL when it refreshes on its own).

Every function takes ``id_base`` (default: the real ``https://id.twitch.tv/``)
so tests run against a local fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from chatling.core.errors import TwitchAuthError, TwitchError
from chatling.core.paths import resolve_path

log = logging.getLogger(__name__)

ID_BASE = "https://id.twitch.tv/"
BOT_SCOPES: tuple[str, ...] = ("user:read:chat", "user:write:chat", "user:bot")
"""What the bot account must grant: read chat over EventSub, send through Helix, appear as a bot."""
MODERATION_SCOPES: tuple[str, ...] = ("moderator:read:blocked_terms", "moderation:read")
"""Asked for too, never required: read the channel's blocked terms and ask AutoMod before
sending, used only when the bot moderates the channel (``twitch.moderation``; without
them each check is off after one warning)."""
DEFAULT_TOKEN_FILE = "data/twitch-tokens.json"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass(frozen=True, slots=True)
class Tokens:
    """The bot account's user access token pair (masked in reprs)."""

    access_token: SecretStr
    refresh_token: SecretStr
    scopes: tuple[str, ...] = ()
    user_id: str = ""
    login: str = ""
    expires_at: float = 0.0
    """Unix time the access token expires (0: unknown)."""

    def secrets(self) -> tuple[str, ...]:
        """The raw secret values, for ``SecretRedactor``."""
        return tuple(
            s
            for s in (self.access_token.get_secret_value(), self.refresh_token.get_secret_value())
            if s
        )


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What ``/oauth2/validate`` says about a token."""

    user_id: str
    login: str
    client_id: str
    scopes: tuple[str, ...]
    expires_in: int


def default_token_file() -> Path:
    """``data/twitch-tokens.json`` under the project (or the working directory)."""
    return resolve_path(DEFAULT_TOKEN_FILE)


# -- token file -------------------------------------------------------------------------


def load_tokens(path: str | Path) -> Tokens | None:
    """The tokens in ``path``, or ``None`` when the file does not exist."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return Tokens(
            access_token=SecretStr(str(data["access_token"])),
            refresh_token=SecretStr(str(data["refresh_token"])),
            scopes=tuple(data.get("scopes") or ()),
            user_id=str(data.get("user_id") or ""),
            login=str(data.get("login") or ""),
            expires_at=float(data.get("expires_at") or 0.0),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # ``exc`` may quote the file's content (a token): name only its type.
        raise TwitchError(
            f"{p}: not a readable token file ({type(exc).__name__}); "
            "delete it and run `chatling auth twitch` again"
        ) from None


def save_tokens(path: str | Path, tokens: Tokens) -> None:
    """Write ``tokens`` to ``path`` atomically (temp file + ``os.replace``), mode 0600."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "access_token": tokens.access_token.get_secret_value(),
        "refresh_token": tokens.refresh_token.get_secret_value(),
        "scopes": list(tokens.scopes),
        "user_id": tokens.user_id,
        "login": tokens.login,
        "expires_at": tokens.expires_at,
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.fchmod(fd, 0o600)  # mkstemp already creates 0600; make it explicit
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    log.info("saved Twitch tokens of %s to %s", tokens.login or "the bot account", p)


# -- redaction --------------------------------------------------------------------------


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``**********``."""
    for s in sorted(secrets, key=len, reverse=True):
        if s:
            text = text.replace(s, "**********")
    return text


class SecretRedactor(logging.Filter):
    """A logging filter that scrubs known secrets from messages and tracebacks.

    Attach it to third-party loggers (``attach``): a filter on a logger sees
    only that logger's own records, so ``attach`` adds it to every existing
    logger under the given prefix.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()
        self._attached: list[logging.Logger] = []

    def add(self, *secrets: str) -> None:
        """Scrub these values (and their URL-quoted forms: twitchio puts some in URLs)."""
        for s in secrets:
            if s:
                self.secrets.update({s, urllib.parse.quote(s, safe=""), urllib.parse.quote_plus(s)})

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text, self.secrets)
            record.exc_info = None
        return True

    def attach(self, prefix: str) -> None:
        names = [
            prefix,
            *(n for n in logging.root.manager.loggerDict if n.startswith(prefix + ".")),
        ]
        for name in names:
            logger = logging.getLogger(name)
            logger.addFilter(self)
            self._attached.append(logger)

    def detach(self) -> None:
        for logger in self._attached:
            logger.removeFilter(self)
        self._attached.clear()


# -- HTTP against id.twitch.tv ----------------------------------------------------------


async def _post_form(
    session: aiohttp.ClientSession, url: str, form: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    async with session.post(url, data=form) as resp:
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = {}
        return resp.status, body if isinstance(body, dict) else {}


def _twitch_message(body: dict[str, Any], secrets: Iterable[str] = ()) -> str:
    return redact(str(body.get("message") or body.get("error") or "no message"), secrets)


async def validate(
    access_token: SecretStr, *, session: aiohttp.ClientSession, id_base: str = ID_BASE
) -> TokenInfo | None:
    """What Twitch knows about the token, or ``None`` when it is invalid or expired."""
    headers = {"Authorization": f"OAuth {access_token.get_secret_value()}"}
    async with session.get(f"{id_base}oauth2/validate", headers=headers) as resp:
        if resp.status == 401:
            return None
        if resp.status != 200:
            raise TwitchError(
                f"{id_base}oauth2/validate answered HTTP {resp.status}; try again later"
            )
        data = await resp.json(content_type=None)
    return TokenInfo(
        user_id=str(data.get("user_id") or ""),
        login=str(data.get("login") or ""),
        client_id=str(data.get("client_id") or ""),
        scopes=tuple(data.get("scopes") or ()),
        expires_in=int(data.get("expires_in") or 0),
    )


async def refresh(
    client_id: str,
    tokens: Tokens,
    *,
    session: aiohttp.ClientSession,
    client_secret: SecretStr | None = None,
    id_base: str = ID_BASE,
) -> Tokens:
    """A new token pair from the refresh token (public clients need no secret)."""
    form = {
        "client_id": client_id,
        "grant_type": "refresh_token",
        "refresh_token": tokens.refresh_token.get_secret_value(),
    }
    if client_secret is not None and client_secret.get_secret_value():
        form["client_secret"] = client_secret.get_secret_value()
    status, body = await _post_form(session, f"{id_base}oauth2/token", form)
    if status != 200 or "access_token" not in body:
        # 4xx: the refresh token itself is refused (revoked); 5xx: Twitch's trouble.
        error = TwitchAuthError if 400 <= status < 500 else TwitchError
        raise error(
            f"Twitch refused to refresh the bot's token (HTTP {status}: "
            f"{_twitch_message(body, tokens.secrets())}); run `chatling auth twitch` again"
        )
    log.info("refreshed the Twitch token of %s", tokens.login or "the bot account")
    return replace(
        tokens,
        access_token=SecretStr(str(body["access_token"])),
        refresh_token=SecretStr(
            str(body.get("refresh_token") or tokens.refresh_token.get_secret_value())
        ),
        scopes=tuple(body.get("scope") or tokens.scopes),
        expires_at=time.time() + float(body.get("expires_in") or 0)
        if body.get("expires_in")
        else 0.0,
    )


def grant_instructions(bot_login: str, channel: str = "") -> str:
    """How the broadcaster lets the bot chat: ``channel:bot`` or moderator status."""
    where = f"#{channel}" if channel else "the channel"
    return (
        f"Before {bot_login or 'the bot'} can chat in {where}, the broadcaster must either\n"
        f"  - authorise this application with the `channel:bot` scope (log in as the "
        f"broadcaster and approve it once), or\n"
        f"  - make the bot a moderator: type `/mod {bot_login or '<botname>'}` in {where}\n"
        f"    (moderators may also send 100 messages per 30 s instead of 20; then set "
        f"CHATLING_TWITCH__IS_MODERATOR=true)."
    )


async def device_code_login(
    client_id: str,
    scopes: Iterable[str] = BOT_SCOPES + MODERATION_SCOPES,
    token_file: str | Path | None = None,
    *,
    id_base: str = ID_BASE,
    show: Callable[[str], None] = print,  # the CLI's product output, not logging
    session: aiohttp.ClientSession | None = None,
    channel: str = "",
) -> Tokens:
    """Log the bot account in with the device-code flow and save its tokens.

    Shows the verification URL and code through ``show``, polls Twitch at the
    interval it asks for (``authorization_pending`` means "not yet"), validates
    the token, writes ``token_file`` and shows how to let the bot chat.
    """
    if not client_id:
        raise TwitchError(
            "no Twitch client id: set CHATLING_TWITCH__CLIENT_ID (create an application "
            "with the public client type at dev.twitch.tv/console)"
        )
    scope_text = " ".join(scopes)
    path = Path(token_file) if token_file is not None else default_token_file()
    async with contextlib.AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(aiohttp.ClientSession())
        status, start = await _post_form(
            session, f"{id_base}oauth2/device", {"client_id": client_id, "scopes": scope_text}
        )
        if status != 200 or "device_code" not in start:
            raise TwitchError(
                f"Twitch refused the device-code login (HTTP {status}: {_twitch_message(start)}); "
                "check CHATLING_TWITCH__CLIENT_ID and that the application is a public client"
            )
        show(
            f"Log in to Twitch as the BOT account, open {start.get('verification_uri')} "
            f"and enter the code {start.get('user_code')} "
            f"(valid {int(start.get('expires_in', 0))} s)."
        )
        body = await _poll_device_token(session, id_base, client_id, scope_text, start)
        tokens = Tokens(
            access_token=SecretStr(str(body["access_token"])),
            refresh_token=SecretStr(str(body.get("refresh_token") or "")),
            scopes=tuple(body.get("scope") or ()),
            expires_at=time.time() + float(body.get("expires_in") or 0),
        )
        info = await validate(tokens.access_token, session=session, id_base=id_base)
        if info is None:
            raise TwitchError(
                "Twitch issued a token it then rejected; run `chatling auth twitch` again"
            )
        tokens = replace(tokens, user_id=info.user_id, login=info.login, scopes=info.scopes)
    await asyncio.to_thread(save_tokens, path, tokens)
    show(f"Logged in as {info.login} (id {info.user_id}); tokens saved to {path} (mode 0600).")
    show(grant_instructions(info.login, channel))
    return tokens


async def _poll_device_token(
    session: aiohttp.ClientSession,
    id_base: str,
    client_id: str,
    scope_text: str,
    start: dict[str, Any],
) -> dict[str, Any]:
    interval = float(start.get("interval") or 5)
    deadline = time.monotonic() + float(start.get("expires_in") or 1800)
    form = {
        "client_id": client_id,
        "scopes": scope_text,
        "device_code": str(start["device_code"]),
        "grant_type": DEVICE_GRANT,
    }
    while time.monotonic() < deadline:
        await asyncio.sleep(interval)
        status, body = await _post_form(session, f"{id_base}oauth2/token", form)
        if status == 200 and "access_token" in body:
            return body
        message = _twitch_message(body).lower()
        if status == 400 and message == "authorization_pending":
            continue
        if status == 400 and message == "slow_down":
            interval += 5
            continue
        raise TwitchError(
            f"the device-code login failed (HTTP {status}: {message}); "
            "run `chatling auth twitch` again and enter the code within its time"
        )
    raise TwitchError(
        "the device code expired before it was entered; run `chatling auth twitch` again"
    )
