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

Feedback marks: a moderator who answers one of the bot's messages with a
Twitch reply starting with ``!good`` or ``!bad`` (``MarkCommands``, from
``ScheduleSettings.good_command`` / ``bad_command``) marks it for the nightly
retrain: ``Store.add_feedback(stream_id, <the bot message's id>, mark,
<moderator login>, "twitch", <its text>)``. Twitch puts ``@<parent login>``
in front of a reply's text; that mention is skipped. Marks by anyone else, or
on anyone else's message, are ignored (logged at debug). A mark gets no
answer in chat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from chatling.control import BotControl
from chatling.core.errors import StoreError
from chatling.core.events import ChatMessage
from chatling.sinks import ChatSink

if TYPE_CHECKING:
    from chatling.store import Store

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


@dataclass(frozen=True, slots=True)
class MarkCommands:
    """The chat words that mark a bot message good or bad (case-insensitive)."""

    good: str = "!good"
    bad: str = "!bad"

    def parse(self, text: str) -> str | None:
        """``"good"``, ``"bad"`` or ``None`` for a reply's text (a leading @mention skipped)."""
        words = text.split()
        if words and words[0].startswith("@"):
            words = words[1:]
        if not words:
            return None
        first = words[0].casefold()
        if self.good and first == self.good.casefold():
            return "good"
        if self.bad and first == self.bad.casefold():
            return "bad"
        return None


def feedback_mark(message: ChatMessage, marks: MarkCommands, bot_login: str) -> str | None:
    """The mark ``message`` puts on a bot message, or ``None`` (not a mark, or not allowed)."""
    mark = marks.parse(message.text) if message.parent_message_id else None
    if mark is None or message.is_bot:
        return None
    if not message.is_moderator:
        log.debug("ignoring %s's %s mark: not a moderator or the broadcaster", message.user, mark)
        return None
    if not bot_login or (message.parent_user or "").casefold() != bot_login.casefold():
        log.debug(
            "ignoring %s's %s mark on a message of %s: not the bot's",
            message.user,
            mark,
            message.parent_user,
        )
        return None
    return mark


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
        marks: MarkCommands | None = None,
        store: Store | None = None,
        stream_id: int | None = None,
        bot_login: str = "",
    ) -> None:
        """``store`` and ``stream_id`` (both or neither) record moderators' marks."""
        if (store is None) != (stream_id is None):
            raise ValueError("give both store and stream_id, or neither")
        self.prefix = prefix
        self.sink = sink
        self.control = control
        self.answer_cooldown_s = answer_cooldown_s
        self.marks = marks or MarkCommands()
        self.store = store
        self.stream_id = stream_id
        self.bot_login = bot_login
        self.marked = 0
        """Feedback marks recorded."""
        self._clock = clock
        self._last_answer: dict[Command, float] = {}

    def record_mark(self, message: ChatMessage) -> str | None:
        """Store a moderator's ``!good``/``!bad`` reply to a bot message; returns the mark.

        Never blocks (the store queues the row)."""
        if self.store is None or self.stream_id is None:
            return None
        mark = feedback_mark(message, self.marks, self.bot_login)
        if mark is None:
            return None
        assert message.parent_message_id is not None
        try:
            self.store.add_feedback(
                self.stream_id,
                message.parent_message_id,
                mark,
                message.user,
                "twitch",
                message.parent_text,
            )
        except StoreError as exc:
            log.error("could not log %s's %s mark: %s", message.user, mark, exc)
            return None
        self.marked += 1
        log.info("moderator %s marked a bot message %s", message.user, mark)
        return mark

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
