"""The training example: (what the bot would see at time t) -> a real chat message at t.

One schema for every step: alignment writes ``Pair`` rows (a HF ``datasets``
dataset with the same columns), training renders them into the exact prompt the
live bot uses (``chatling.prompt.PromptBuilder``), and evaluation scores candidates
against the same context. Keeping the prompt identical between training and
serving is the point: an adapter trained on another prompt format learns
little that the live bot can use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from chatling.context import ContextSnapshot
from chatling.core.events import ChatMessage, Utterance
from chatling.prompt import PromptBuilder, PromptParts

COLUMNS = ("source", "offset", "transcript", "chat", "target", "user")


@dataclass(frozen=True, slots=True)
class Pair:
    """One example. ``chat`` lines are ``user: text``; both lists are oldest first."""

    source: str
    """Which VOD or live stream it comes from (splits keep sources whole or cut by time)."""
    offset: float
    """Seconds from the stream's start at which ``target`` was posted."""
    transcript: tuple[str, ...]
    """The streamer's speech in the context window, one utterance or segment a line."""
    chat: tuple[str, ...]
    """The chat messages before ``offset`` that the bot would have seen."""
    target: str
    """The real chat message: what the model learns to write."""
    user: str
    """Who wrote ``target`` (for filtering and statistics; not shown to the model)."""

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["transcript"] = list(self.transcript)
        row["chat"] = list(self.chat)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Pair:
        return cls(
            source=str(row["source"]),
            offset=float(row["offset"]),
            transcript=tuple(row["transcript"] or ()),
            chat=tuple(row["chat"] or ()),
            target=str(row["target"]),
            user=str(row.get("user") or ""),
        )


def snapshot_of(pair: Pair, *, with_transcript: bool = True) -> ContextSnapshot:
    """The ``ContextSnapshot`` the live bot would have had (times are nominal)."""
    utterances = tuple(
        Utterance(start=pair.offset - 1.0, end=pair.offset - 1.0, text=line)
        for line in (pair.transcript if with_transcript else ())
    )
    chat = []
    for i, line in enumerate(pair.chat):
        user, sep, text = line.partition(": ")
        if not sep:
            user, text = "viewer", line
        chat.append(
            ChatMessage(offset=pair.offset - 0.001 * (len(pair.chat) - i), user=user, text=text)
        )
    return ContextSnapshot(now=pair.offset, utterances=utterances, chat=tuple(chat))


def render_prompt(
    pair: Pair, builder: PromptBuilder, *, with_transcript: bool = True
) -> PromptParts:
    """The live prompt for this pair (in the builder's prompt form); the target answers it."""
    return builder.build(snapshot_of(pair, with_transcript=with_transcript), None)


def chat_messages(system: str, user: str, target: str | None = None) -> list[dict[str, str]]:
    """Chat-template messages; with ``target`` the assistant turn is the label."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if target is not None:
        messages.append({"role": "assistant", "content": target})
    return messages


def pairs_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[Pair]:
    return [Pair.from_row(r) for r in rows]
