"""The Discord front end: a ``/chat prompt:<text>`` slash command answered by the bot.

A discord.py client with one application command. ``/chat`` acknowledges at
once with a deferred "thinking" response (Discord allows 3 s for that), asks
the ``ChatResponder`` (``chatling.responder``: same engine, persona, filter and
log as the stream replies) and sends the answer as the follow-up (allowed
for 15 minutes), with every mention disabled. A user who asks again within
``DiscordSettings.cooldown_s`` gets an ephemeral "wait" and no generation.
A command that fails is logged and answered with a short ephemeral message;
the bot keeps serving the next one.

The command is registered (synced) at start: to ``DiscordSettings.guild_id``
when set, which takes effect at once, else globally (Discord may take up to
an hour to show a new global command). The bot needs only the ``bot`` and
``applications.commands`` scopes and no privileged intents (guilds and guild
reactions).

Feedback marks: given a ``store`` and ``stream_id``, a 👍 or 👎 reaction
(``ScheduleSettings.good_reaction`` / ``bad_reaction``) on one of the last
``REMEMBERED_ANSWERS`` ``/chat`` answers, by a member who may manage messages
(or owns the server), is stored as ``Store.add_feedback(stream_id,
"discord:<interaction id>", mark, <member name>, "discord", <answer text>)``:
the same key the exchange's ``bot_replies.in_reply_to`` holds. Reactions by
anyone else, or on other messages, are ignored (logged at debug).

Lifetime: ``async with DiscordBot(settings, responder) as bot:`` returns once
the gateway session is ready, and leaving the block closes it; or ``await
bot.run()``, which serves until cancelled. The token is read from its
``SecretStr`` only when connecting and is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Protocol

import discord
from discord import app_commands

from chatling.core.errors import ChatlingError, ConfigError, EngineError, StoreError
from chatling.core.settings import DiscordSettings
from chatling.responder import Answer

if TYPE_CHECKING:
    from chatling.store import Store

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 1000
"""Longest ``prompt`` Discord lets a user type into ``/chat``."""
ERROR_TEXT = "Sorry, something went wrong on my side. Please try again in a moment."
CLOSING_TEXT = "I'm restarting right now. Please try again in a minute."
ENGINE_ERROR_TEXT = "Sorry, my language model failed on that one. Please try again in a moment."
REMEMBERED_ANSWERS = 1000
"""How many recent ``/chat`` answers moderators' reactions can still mark."""


class Responder(Protocol):
    """What ``/chat`` needs: ``chatling.responder.ChatResponder`` in production."""

    async def answer(
        self,
        user: str,
        text: str,
        *,
        display_name: str | None = None,
        message_id: str | None = None,
    ) -> Answer: ...


@dataclass(frozen=True, slots=True)
class Cooldowns:
    """When each user last had a ``/chat`` accepted; pure, time is passed in."""

    cooldown_s: float
    last: Mapping[int, float] = field(default_factory=lambda: MappingProxyType({}))

    def remaining(self, user_id: int, now: float) -> float:
        """Seconds ``user_id`` still has to wait (0 when they may ask now)."""
        last = self.last.get(user_id)
        if last is None:
            return 0.0
        return max(0.0, last + self.cooldown_s - now)

    def started(self, user_id: int, now: float) -> Cooldowns:
        """The state after accepting a command of ``user_id`` at ``now``; expired
        entries are dropped, so memory holds only users still cooling down."""
        kept = {u: t for u, t in self.last.items() if t + self.cooldown_s > now}
        kept[user_id] = now
        return Cooldowns(self.cooldown_s, MappingProxyType(kept))


def reaction_mark(emoji: str, good: str, bad: str) -> str | None:
    """``"good"``, ``"bad"`` or ``None`` for a reaction (emoji variation selectors aside)."""

    def plain(text: str) -> str:
        return text.replace("\ufe0f", "").strip()

    if good and plain(emoji) == plain(good):
        return "good"
    if bad and plain(emoji) == plain(bad):
        return "bad"
    return None


def cooldown_text(wait_s: float) -> str:
    """The ephemeral answer to a user still cooling down."""
    seconds = max(1, math.ceil(wait_s))
    return f"Slow down a little: you can /chat again in {seconds} s."


class _Client(discord.Client):
    """The discord.py client: only the (unprivileged) guilds and guild reactions intents;
    registers ``/chat`` on login. Interactions arrive whatever the intents."""

    def __init__(
        self,
        on_setup: Callable[[], Awaitable[None]],
        on_reaction: Callable[[discord.RawReactionActionEvent], None],
    ) -> None:
        super().__init__(intents=discord.Intents(guilds=True, guild_reactions=True))
        self._on_setup = on_setup
        self._on_reaction = on_reaction

    async def setup_hook(self) -> None:
        await self._on_setup()

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self._on_reaction(payload)


def _chat_command(bot: DiscordBot) -> app_commands.Command[None, ..., None]:
    """The ``/chat`` command object, calling back into ``bot``."""

    @app_commands.command(name="chat", description="Say something to the bot")
    @app_commands.describe(prompt="What you want to say")
    async def chat(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
    ) -> None:
        await bot.handle_chat(interaction, prompt)

    @chat.error
    async def chat_error(
        interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        await bot.handle_error(interaction, error)

    return chat


class DiscordBot:
    """Serves ``/chat`` from a ``Responder``; one instance per Discord application."""

    def __init__(
        self,
        settings: DiscordSettings,
        responder: Responder,
        *,
        clock: Callable[[], float] = time.monotonic,
        shutdown_grace_s: float = 10.0,
        store: Store | None = None,
        stream_id: int | None = None,
        good_reaction: str = "👍",
        bad_reaction: str = "👎",
    ) -> None:
        """``shutdown_grace_s``: on close, how long commands in flight may finish
        before they are cancelled (a cancelled generation is aborted). ``store`` and
        ``stream_id`` (both or neither): where moderators' reaction marks go."""
        if (store is None) != (stream_id is None):
            raise ValueError("give both store and stream_id, or neither")
        if not settings.token.get_secret_value().strip():
            raise ConfigError(
                "Discord is not configured: set CHATLING_DISCORD__TOKEN to the bot token "
                "from the Discord Developer Portal (Applications > your app > Bot)"
            )
        self._settings = settings
        self._responder = responder
        self._clock = clock
        self.cooldowns = Cooldowns(settings.cooldown_s)
        self.client = _Client(self._register_commands, self.handle_reaction)
        self.tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(self.client)
        self.tree.add_command(_chat_command(self))
        self.synced: list[app_commands.AppCommand] = []
        """The commands as Discord registered them at start."""
        self.answered = 0
        """``/chat`` commands answered with a follow-up (generated or fallback)."""
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[object]] = set()
        self._closing = False
        self._grace_s = shutdown_grace_s
        self._store = store
        self._stream_id = stream_id
        self._good = good_reaction
        self._bad = bad_reaction
        self._answers: OrderedDict[int, tuple[str, str]] = OrderedDict()
        """Discord message id of a recent answer -> ("discord:<interaction id>", its text)."""
        self.marked = 0
        """Moderators' reaction marks recorded."""

    def __repr__(self) -> str:
        return f"<DiscordBot guild_id={self._settings.guild_id} answered={self.answered}>"

    # -- lifetime -------------------------------------------------------------

    async def __aenter__(self) -> DiscordBot:
        """Log in, register ``/chat``, connect; return once the session is ready."""
        await self.client.__aenter__()
        self._task = asyncio.create_task(self._connect(), name="discord client")
        ready = asyncio.create_task(self.client.wait_until_ready(), name="discord ready")
        try:
            await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            ready.cancel()
            await self._close()
            raise
        if not ready.done():
            ready.cancel()
            await self._close()
            self._task.result()  # the reason it stopped (ConfigError, HTTPException...)
            raise ChatlingError("the Discord client stopped before its session was ready")
        log.info("Discord: connected as %s", self.client.user)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()
        task = self._task
        if exc_type is None and task is not None and not task.cancelled():
            task.result()  # a connection that failed for good surfaces here

    async def run(self) -> None:
        """Serve ``/chat`` until cancelled; a connection that fails for good raises."""
        async with self:
            assert self._task is not None
            await asyncio.wait([self._task])

    async def _connect(self) -> None:
        token = self._settings.token.get_secret_value().strip()
        try:
            await self.client.start(token)
        except discord.LoginFailure:
            raise ConfigError(
                "Discord refused the bot token in CHATLING_DISCORD__TOKEN: copy it again "
                "from the Developer Portal (Bot > Reset Token)"
            ) from None

    async def _close(self) -> None:
        self._closing = True
        if self._inflight:
            # Let answers in flight go out (the HTTP session is still open), then cancel.
            _, late = await asyncio.wait(set(self._inflight), timeout=self._grace_s)
            for task in late:
                task.cancel()
            if late:
                log.warning("Discord: %d /chat commands cancelled at shutdown", len(late))
                await asyncio.wait(late)
        await self.client.close()
        if self._task is not None:
            await asyncio.wait([self._task])
        await self.client.__aexit__(None, None, None)

    async def _register_commands(self) -> None:
        """Sync ``/chat``: to the configured guild (at once) or globally (slow)."""
        guild_id = self._settings.guild_id
        guild = discord.Object(id=guild_id) if guild_id is not None else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        where = f"guild {guild_id}" if guild is not None else "all guilds (global)"
        try:
            self.synced = await self.tree.sync(guild=guild)
        except discord.Forbidden:
            raise ConfigError(
                f"Discord refused to register /chat in {where}: invite the bot to that server "
                "with the 'applications.commands' scope, or fix CHATLING_DISCORD__GUILD_ID"
            ) from None
        log.info("Discord: /chat registered in %s", where)

    # -- the command ----------------------------------------------------------

    async def handle_chat(self, interaction: discord.Interaction, prompt: str) -> None:
        """``/chat``: cooldown check, defer, answer, follow up."""
        task = asyncio.current_task()
        if task is not None:  # tracked until its error handler, if any, has run too
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        user = interaction.user
        if self._closing:
            await interaction.response.send_message(CLOSING_TEXT, ephemeral=True)
            return
        now = self._clock()
        wait_s = self.cooldowns.remaining(user.id, now)
        if wait_s > 0:
            log.info("/chat from %s refused: cooldown, %.1f s left", user.name, wait_s)
            await interaction.response.send_message(cooldown_text(wait_s), ephemeral=True)
            return
        self.cooldowns = self.cooldowns.started(user.id, now)
        deferred = await interaction.response.defer(thinking=True)
        key = f"discord:{interaction.id}"
        answer = await self._responder.answer(
            user.name, prompt, display_name=user.display_name, message_id=key
        )
        no_pings = discord.AllowedMentions.none()
        sent = await interaction.followup.send(answer.text, allowed_mentions=no_pings, wait=True)
        self.answered += 1
        # Discord may show the answer in place of the "thinking" message: remember both ids.
        self._remember(sent.id, key, answer.text)
        if deferred is not None and deferred.message_id is not None:
            self._remember(deferred.message_id, key, answer.text)
        log.info("/chat from %s answered (%s, %.2f s)", user.name, answer.status, answer.latency_s)

    def _remember(self, message_id: int, key: str, text: str) -> None:
        self._answers[message_id] = (key, text)
        self._answers.move_to_end(message_id)
        while len(self._answers) > REMEMBERED_ANSWERS:
            self._answers.popitem(last=False)

    def handle_reaction(self, payload: discord.RawReactionActionEvent) -> None:
        """A reaction was added somewhere: store it if it is a moderator's mark on an answer."""
        answer = self._answers.get(payload.message_id)
        mark = reaction_mark(str(payload.emoji), self._good, self._bad)
        if answer is None or mark is None or self._store is None or self._stream_id is None:
            return
        member = payload.member
        if member is None or member.bot:
            log.debug("ignoring a %s reaction outside a server or by a bot", mark)
            return
        if not member.guild_permissions.manage_messages:
            log.debug("ignoring %s's %s reaction: may not manage messages", member.name, mark)
            return
        key, text = answer
        try:
            self._store.add_feedback(self._stream_id, key, mark, member.name, "discord", text)
        except StoreError as exc:
            log.error("could not log %s's %s mark on a /chat answer: %s", member.name, mark, exc)
            return
        self.marked += 1
        log.info("moderator %s marked a /chat answer %s", member.name, mark)

    async def handle_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Log a failed ``/chat`` and tell its user, privately; the bot carries on."""
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        who = interaction.user.name
        if isinstance(cause, EngineError):
            log.error("/chat from %s failed: %s", who, cause)
            text = ENGINE_ERROR_TEXT
        elif isinstance(cause, ChatlingError):
            log.error("/chat from %s failed: %s", who, cause)
            text = ERROR_TEXT
        else:
            log.error("/chat from %s failed", who, exc_info=cause)
            text = ERROR_TEXT
        await self._tell_privately(interaction, text)

    async def _tell_privately(self, interaction: discord.Interaction, text: str) -> None:
        """An ephemeral message; after a (public) defer, the thinking message is
        deleted first, else the follow-up would replace it and be public too."""
        try:
            if not interaction.response.is_done():
                await interaction.response.send_message(text, ephemeral=True)
                return
            await interaction.delete_original_response()
            await interaction.followup.send(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("could not tell %s that /chat failed: %s", interaction.user.name, exc)


__all__ = [
    "REMEMBERED_ANSWERS",
    "Cooldowns",
    "DiscordBot",
    "Responder",
    "cooldown_text",
    "reaction_mark",
]
