"""What a person watching the terminal sees: speech, chat and the bot, live.

This is the product's output in replay mode (the stand-in for Twitch chat), so
it writes to the terminal through ``rich``; diagnostics go through ``logging``
to stderr. ``quiet=True`` shows only the bot's replies and the summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chatling.core.events import ChatMessage, Reply, Utterance


def _clock(offset: float) -> str:
    minutes, seconds = divmod(int(max(offset, 0)), 60)
    return f"{minutes:02d}:{seconds:02d}"


@dataclass(frozen=True, slots=True)
class SummaryRow:
    label: str
    value: str


class Display:
    """Prints events as they happen and a summary table at the end."""

    def __init__(
        self, *, show_chat: bool = True, quiet: bool = False, file: TextIO | None = None
    ) -> None:
        self._console = Console(file=file, highlight=False, soft_wrap=True)
        self._show_chat = show_chat and not quiet
        self._quiet = quiet

    def utterance(self, utterance: Utterance) -> None:
        if not self._quiet:
            self._console.print(
                f"[cyan]{_clock(utterance.end)} 🎙  streamer[/]: {escape(utterance.text)}"
            )

    def chat(self, message: ChatMessage) -> None:
        if self._show_chat:
            who = escape(message.display_name or message.user)
            style = "dim" if message.is_bot else "white"
            self._console.print(
                f"[dim]{_clock(message.offset)}[/] [{style}]{who}: {escape(message.text)}[/]"
            )

    def reply(self, reply: Reply) -> None:
        when = _clock(reply.offset)
        if reply.status == "posted":
            to = f" → @{escape(reply.reply_to_user)}" if reply.reply_to_user else ""
            self._console.print(
                f"[bold green]{when} 🤖 chatling{to}: {escape(reply.chosen or '')}[/]"
                f" [dim]({reply.trigger}, {reply.latency_s:.2f} s)[/]"
            )
        elif not self._quiet:
            reasons = ", ".join(sorted({c.reason for c in reply.candidates if not c.allowed}))
            detail = reasons or reply.status
            self._console.print(f"[red]{when} 🤖 held back ({reply.status}: {escape(detail)})[/]")

    def summary(self, title: str, rows: list[SummaryRow]) -> None:
        table = Table(title=title, show_header=False)
        table.add_column("what")
        table.add_column("value", justify="right")
        for row in rows:
            table.add_row(row.label, row.value)
        self._console.print(table)
