"""Turn a context snapshot into the model's prompt, from templates in ``prompts/``.

The persona (system prompt) and the reply template are plain text files a
streamer can edit. Chat text is quoted as data inside ``<chat>`` tags and
stripped of anything that could close those tags or open a chat-template turn,
so a viewer's "ignore your instructions" stays a line of chat, never a turn
of the conversation.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chatling.context import ContextSnapshot, trim_to_budget
from chatling.core.errors import ConfigError
from chatling.core.events import ChatMessage, Utterance
from chatling.core.paths import resolve_path
from chatling.core.settings import ReplySettings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Markers of chat templates and of our own quoting tags.
_MARKUP = re.compile(r"<\|[^|>]{0,40}\|>|</?\s*(?:transcript|chat|message|system|user)\s*>", re.I)
_WHITESPACE = re.compile(r"\s+")


def quote_as_data(text: str, limit: int = 300, *, tags: bool = True) -> str:
    """One line of viewer text, safe to place in the prompt.

    Chat templates' markers and our quoting tags always go. ``tags`` (the
    ``chat`` form, whose lines sit inside ``<chat>`` tags) also turns every
    other ``<``/``>`` into ``‹``/``›``; the ``log`` form has no tags to close,
    so chat's own ``<3`` and ``>:(`` stay as chat wrote them (the model copies
    what it sees, and ``‹3`` is nobody's emote).
    """
    text = _MARKUP.sub(" ", text)
    if tags:
        text = text.replace("<", "‹").replace(">", "›")
    return _WHITESPACE.sub(" ", text).strip()[:limit]


def _render_line(item: Utterance | ChatMessage, *, tags: bool = True) -> str:
    """One speech or chat line of the prompt (``tags``: as ``quote_as_data``)."""
    if isinstance(item, Utterance):
        return quote_as_data(item.text, limit=1000, tags=tags)
    return f"{item.display_name or item.user}: {quote_as_data(item.text, tags=tags)}"


def _read_template(path: str) -> str:
    file = resolve_path(path)
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read prompt template ({exc.strerror})") from None


@dataclass(frozen=True, slots=True)
class PromptParts:
    """A rendered prompt: system and user text, plus the snapshot it shows.

    ``form`` says how it reaches the model: ``chat`` puts ``system`` and ``user``
    in the model's chat template; ``log`` sends ``user`` as plain text (the chat
    log the model continues) and ``system`` is empty.
    """

    system: str
    user: str
    snapshot: ContextSnapshot = field(default_factory=lambda: ContextSnapshot(now=0.0))
    form: str = "chat"


def prompt_token_ids(parts: PromptParts, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The token ids the model is given for ``parts``: the one rendering that serving
    (``VllmEngine.render``), training (``chatling.training.sft.collate``) and evaluation share."""
    return tokenizer(prompt_text(parts, tokenizer), add_special_tokens=False)["input_ids"]


def prompt_text(parts: PromptParts, tokenizer: PreTrainedTokenizerBase) -> str:
    """The text the model is given for ``parts`` (chat template applied for ``chat``)."""
    if parts.form == "log":
        return parts.user
    messages = [
        {"role": "system", "content": parts.system},
        {"role": "user", "content": parts.user},
    ]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def completion_text(parts: PromptParts, tokenizer: PreTrainedTokenizerBase, message: str) -> str:
    """What the model writes after ``prompt_text`` when its answer is ``message``: the
    chat template's assistant turn and end-of-turn token, or the log line and its
    newline (the stop sequence)."""
    if parts.form == "log":
        return " " + message.strip() + "\n"
    messages = [
        {"role": "system", "content": parts.system},
        {"role": "user", "content": parts.user},
        {"role": "assistant", "content": message},
    ]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt = prompt_text(parts, tokenizer)
    if not full.startswith(prompt):
        raise ConfigError(
            "the model's chat template renders the prompt differently with and without the "
            "assistant turn, so the message cannot be told apart; use a model whose template "
            "continues the generation prompt with the assistant's text, or the `log` prompt form"
        )
    # "message<end-of-turn>\n" -> "message<end-of-turn>": the trailing newline is not trained.
    return full[len(prompt) :].rstrip()


class PromptBuilder:
    """Renders prompts within a token budget; templates are read once."""

    def __init__(self, settings: ReplySettings, count_tokens: Callable[[str], int]) -> None:
        self._settings = settings
        self._count_tokens = count_tokens
        self._persona = _read_template(settings.persona_file).strip()
        self._template = _read_template(settings.template_file)
        addressed_file = str(Path(settings.template_file).with_name("addressed.txt"))
        self._addressed = _read_template(addressed_file)
        self._log_template = _read_template(settings.log_template_file).rstrip()
        try:
            self._persona.format(bot_name="x")
            self._template.format(transcript="", chat="", addressed="")
            self._addressed.format(user="", text="")
            self._log_template.format(bot_name="", transcript="", chat="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"prompt template has an unknown placeholder: {exc}") from None

    @property
    def form(self) -> str:
        return self._settings.prompt_form

    def build(self, snapshot: ContextSnapshot, target: ChatMessage | None) -> PromptParts:
        """The prompt for a reply at ``snapshot.now``, answering ``target`` if given."""
        if self._settings.prompt_form == "log":
            return self._build_log(snapshot, target)
        trimmed, spoken, said = self._lines(snapshot, target)
        addressed = ""
        if target is not None:
            addressed = self._addressed.format(
                user=target.display_name or target.user, text=quote_as_data(target.text)
            )

        def render(spoken: list[str], said: list[str]) -> str:
            return self._template.format(
                transcript="\n".join(spoken) or "(silence)",
                chat="\n".join(said) or "(no messages yet)",
                addressed=addressed,
            )

        system = self._persona.format(bot_name=self._settings.bot_name)
        user = self._fit(render, spoken, said)
        return PromptParts(system=system, user=user, snapshot=trimmed)

    def _build_log(self, snapshot: ContextSnapshot, target: ChatMessage | None) -> PromptParts:
        """The chat log the model continues: the stream's own recent lines are its
        examples of how this chat writes, and the last line is the bot's name."""
        if target is not None and target not in snapshot.chat:
            # A direct question from outside the chat (Discord /chat): its newest line.
            snapshot = ContextSnapshot(snapshot.now, snapshot.utterances, (*snapshot.chat, target))
        trimmed, spoken, said = self._lines(snapshot, target)

        def render(spoken: list[str], said: list[str]) -> str:
            return self._log_template.format(
                bot_name=self._settings.bot_name,
                transcript=" ".join(spoken) or "(nothing)",
                chat="\n".join(said),
            )

        return PromptParts(
            system="", user=self._fit(render, spoken, said), snapshot=trimmed, form="log"
        )

    def _lines(
        self, snapshot: ContextSnapshot, target: ChatMessage | None
    ) -> tuple[ContextSnapshot, list[str], list[str]]:
        """The snapshot trimmed to the token budget, and its speech and chat lines."""
        render_line = functools.partial(_render_line, tags=self._settings.prompt_form != "log")
        trimmed = trim_to_budget(
            snapshot,
            self._count_tokens,
            self._settings.prompt_token_budget,
            render_line=render_line,
            keep=target,
        )
        return (
            trimmed,
            [render_line(u) for u in trimmed.utterances],
            [render_line(m) for m in trimmed.chat],
        )

    def _fit(
        self, render: Callable[[list[str], list[str]], str], spoken: list[str], said: list[str]
    ) -> str:
        """``render(spoken, said)`` with its length on the grid: the transcript's oldest
        lines are cut first, then chat's; never the newest."""
        grid = self._settings.prompt_length_grid
        if grid > 1:
            spoken = self._on_grid(spoken, lambda lines: render(lines, said), grid)
            said = self._on_grid(said, lambda lines: render(spoken, lines), grid)
        return render(spoken, said)

    def _on_grid(
        self, lines: list[str], render: Callable[[list[str]], str], grid: int
    ) -> list[str]:
        """``lines`` with the start of the oldest cut so the user text's token count is a
        multiple of ``grid`` (the chat template adds a constant, so every prompt length
        then falls on one residue). Whole old lines may go, never the newest."""
        lines = list(lines)
        for _ in range(8):
            excess = self._count_tokens(render(lines)) % grid
            if excess == 0 or len(lines) < 2:
                return lines
            oldest = lines[0]
            have = self._count_tokens(oldest)
            if have <= excess:
                lines.pop(0)
                continue
            # The shortest cut of the line's start that removes at least ``excess`` tokens.
            low, high = 1, len(oldest)
            while low < high:
                mid = (low + high) // 2
                if have - self._count_tokens(oldest[mid:]) >= excess:
                    high = mid
                else:
                    low = mid + 1
            lines[0] = oldest[low:].lstrip() or oldest[-1:]
        return lines


_SPEAKER = re.compile(r"^\s*([^\s:]{2,25})\s*:\s+")


def clean_generation(text: str, bot_name: str, names: Iterable[str] = ()) -> str:
    """First line of a generation, without a speaker prefix or wrapping quotes.

    A prefix is dropped when it is the bot's own name, a generic speaker word, or
    one of ``names`` (the chat users the prompt showed): a model continuing a chat
    log copies the log's ``name: text`` format, and a viewer's name in front of
    the bot's line reads as impersonation.
    """
    line = text.strip().split("\n", 1)[0].strip()
    speakers = {bot_name.casefold(), "chat", "message", "viewer", *(n.casefold() for n in names)}
    for _ in range(2):  # "chatling: viewer42: hi" -> "hi"
        match = _SPEAKER.match(line)
        if not match or match.group(1).casefold().lstrip("@") not in speakers:
            break
        line = line[match.end() :].strip()
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'“”":
        line = line[1:-1].strip()
    return line.strip('“”"').strip()


__all__ = [
    "PromptBuilder",
    "PromptParts",
    "clean_generation",
    "completion_text",
    "prompt_text",
    "prompt_token_ids",
    "quote_as_data",
]
