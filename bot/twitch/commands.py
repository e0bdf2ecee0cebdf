"""Moderators' chat commands: ``!chatling pause``, ``!chatling resume``, ``!chatling status``.

Only the broadcaster and moderators (by chat badge) may use them; anyone
else's command is ignored without a word. ``pause`` stops replies (everything
is still logged), ``resume`` restarts them, ``status`` answers the bot's state
in chat. Answers go through the sink (so they count against Twitch's limit
like any message) as replies to the command, at most one per
command and ``answer_cooldown_s`` so a repeated command cannot eat the reply budget.

Commands stay ordinary chat: they are on the inbox like every message, and
the pipeline decides whether they may trigger a reply (its safety filter
already refuses to post commands; a command is not a question to answer).
The prefix is ``TwitchSettings.command_prefix``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum

from bot.control import BotControl
from bot.events import ChatMessage
from bot.sinks import ChatSink

log = logging.getLogger(__name__)


class Command(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    STATUS = "status"
    HELP = "help"


def parse_command(text: str, prefix: str) -> Command | None:
    """The command in ``text`` (``None`` when it does not start with ``prefix``)."""
    words = text.strip().split()
    if not prefix or not words or words[0].casefold() != prefix.casefold():
        return None
    if len(words) < 2:
        return Command.HELP
    try:
        return Command(words[1].casefold())
    except ValueError:
        return Command.HELP


class ModeratorCommands:
    """Runs moderators' commands against a ``BotControl`` and answers through a sink."""

    def __init__(
        self,
        prefix: str,
        sink: ChatSink,
        control: BotControl | None = None,
        *,
        answer_cooldown_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prefix = prefix
        self.sink = sink
        self.control = control
        self.answer_cooldown_s = answer_cooldown_s
        self._clock = clock
        self._last_answer: dict[Command, float] = {}

    def wants(self, message: ChatMessage) -> bool:
        """Cheap check for the reader: a command from someone allowed to give it."""
        if message.is_bot or parse_command(message.text, self.prefix) is None:
            return False
        if not message.is_moderator:
            log.debug("ignoring %s's command: not a moderator or the broadcaster", message.user)
            return False
        return True

    async def handle(self, message: ChatMessage) -> Command | None:
        """Run the command in ``message`` if its sender may; returns what was run."""
        if not self.wants(message):
            return None
        command = parse_command(message.text, self.prefix)
        assert command is not None
        if self.control is None:
            log.warning(
                "%s sent %s %s, but no bot is attached to control",
                message.user,
                self.prefix,
                command,
            )
            return None
        if command is Command.PAUSE:
            self.control.pause()
            answer = (
                f"paused by {message.display_name or message.user}: still logging, not replying"
            )
        elif command is Command.RESUME:
            self.control.resume()
            answer = f"resumed by {message.display_name or message.user}"
        elif command is Command.STATUS:
            answer = self.control.status_line()
        else:
            answer = f"usage: {self.prefix} pause | resume | status"
        log.info("moderator %s ran %s %s", message.user, self.prefix, command)
        await self._answer(command, answer, message)
        return command

    async def _answer(self, command: Command, text: str, to: ChatMessage) -> None:
        now = self._clock()
        if now - self._last_answer.get(command, float("-inf")) < self.answer_cooldown_s:
            log.info(
                "not answering %s in chat: answered it less than %.0f s ago",
                command,
                self.answer_cooldown_s,
            )
            return
        self._last_answer[command] = now
        if not await self.sink.send(text, to):
            log.warning("could not answer %s's command in chat", to.user)
