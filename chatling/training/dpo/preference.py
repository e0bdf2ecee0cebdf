"""Preference pairs from moderators' marks: (live prompt, good reply, bad reply) for DPO.

Moderators mark the bot's replies ``good`` or ``bad`` (Twitch: ``!good``/``!bad``
as a reply to the bot's message; Discord: a reaction on a ``/chat`` answer);
the store logs each mark in ``feedback`` (``chatling/store/sql/002_learning.sql``).
``preference_pairs_from_db`` turns the marks into DPO pairs (the rows read through
``chatling.store.reader``, the one reader of the log):

1. Each mark is resolved to the ``bot_replies`` row it judges. Discord marks
   name the exchange (``target_message_id == bot_replies.in_reply_to``,
   ``discord:<id>``). Twitch marks name the bot's own chat message; the row is
   the latest ``posted`` reply before the mark whose ``chosen`` text is the
   marked text (``target_text``, or the logged chat message's text), in the
   same stream when the chat message is logged.
2. Several marks on one reply: the latest decides.
3. A ``bad`` reply gives ``rejected`` = its text, ``chosen`` = the text of the
   ``good`` reply closest in time (none marked good: no pair), on the bad
   reply's prompt. A ``good`` reply gives ``chosen`` = its text, ``rejected`` =
   the lowest-scored other candidate generated for the same prompt (allowed or
   blocked; none: no pair).

``bot_replies.prompt`` holds the user turn of the live prompt (the rendered
``prompts/reply.txt``); the system turn is the persona, rendered from the
current ``ReplySettings`` exactly as ``chatling.prompt.PromptBuilder`` renders it
live. ``encode_preference`` puts both through the model's chat template with
the generation prompt (the token ids ``VllmEngine.render_chat`` sends) and
each reply after it with the template's end-of-turn token, as
``chatling.training.sft.collate`` encodes SFT examples;
``chatling.training.dpo.dpo`` trains on these ids, and ``preference_margins``
measures log p(chosen) - log p(rejected) on them under a model's active adapter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatling.core.errors import ConfigError, StoreError
from chatling.core.settings import ReplySettings
from chatling.prompt import PromptParts, completion_text, prompt_token_ids
from chatling.store.reader import (
    FeedbackMark,
    PostedReply,
    chat_message,
    connect_read_only,
    feedback_marks,
    has_feedback,
    posted_replies_before,
    posted_reply_to,
)

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DISCORD_PREFIX = "discord:"


@dataclass(frozen=True, slots=True)
class PreferencePair:
    """One DPO example: on the live prompt (``system`` + ``user``) ``chosen`` beats ``rejected``."""

    system: str
    """System turn of the live prompt (the persona)."""
    user: str
    """User turn of the live prompt, as logged in ``bot_replies.prompt``."""
    chosen: str
    rejected: str
    prompt_reply_id: int | None = None
    """``bot_replies.id`` of the marked reply whose prompt this is (None: not from marks)."""
    chosen_reply_id: int | None = None
    """``bot_replies.id`` the chosen text comes from."""
    rejected_reply_id: int | None = None
    """``bot_replies.id`` the rejected text comes from."""
    feedback_ids: tuple[int, ...] = ()
    """The ``feedback`` rows (marks) that made this pair (none for ``training.contrast``)."""
    form: str = "chat"
    """The prompt form (``ReplySettings.prompt_form``): how system + user reach the model."""

    @property
    def parts(self) -> PromptParts:
        """The prompt as the engine renders it (``chatling.prompt.prompt_text``)."""
        return PromptParts(self.system, self.user, form=self.form)


@dataclass(frozen=True, slots=True)
class MarkedReply:
    """A ``bot_replies`` row and the mark that decides it (the latest one)."""

    reply_id: int
    mark: str
    feedback_id: int
    marked_at: float
    created_at: float
    prompt: str
    chosen: str
    candidates: tuple[dict[str, Any], ...]


def live_system_prompt(settings: ReplySettings | None = None) -> str:
    """The system turn the live bot sends (the persona; empty in the ``log`` prompt form),
    as ``PromptBuilder`` renders it with ``settings`` (default: the bot's own, from .env)."""
    from chatling.context import ContextSnapshot
    from chatling.core.settings import load_settings
    from chatling.prompt import PromptBuilder

    settings = settings or load_settings().reply
    builder = PromptBuilder(settings, lambda text: len(text.split()))
    return builder.build(ContextSnapshot(now=0.0), None).system


def _strip_mention(text: str) -> str:
    """``"@user hi"`` -> ``"hi"``: a reply's text as some clients show it."""
    head, sep, rest = text.partition(" ")
    return rest.strip() if sep and head.startswith("@") and len(head) > 1 else text


def same_text(posted: str, marked: str) -> bool:
    """Whether a mark's text is the posted reply's (whitespace and a leading @mention aside)."""
    posted, marked = posted.strip(), marked.strip()
    return bool(posted) and (posted == marked or posted == _strip_mention(marked))


def _resolve_twitch(db: sqlite3.Connection, mark: FeedbackMark) -> PostedReply | None:
    message = chat_message(db, mark.target_message_id)
    if message is not None and not message.is_bot:
        return None  # a viewer's message: the mark keeps it out of SFT, it is no preference
    text = mark.target_text or (message.text if message is not None else None)
    if not text:
        return None
    replies = posted_replies_before(
        db, mark.created_at, message.stream_id if message is not None else None
    )
    return next((reply for reply in replies if same_text(reply.chosen, text)), None)


def marked_replies(db: sqlite3.Connection) -> list[MarkedReply]:
    """Every marked reply with the text it posted, decided by its latest mark, oldest first
    (``db``: the log, e.g. from ``chatling.store.reader.connect_read_only``)."""
    latest: dict[int, tuple[PostedReply, FeedbackMark]] = {}
    unresolved = 0
    for mark in feedback_marks(db):
        is_discord = mark.source == "discord" or mark.target_message_id.startswith(DISCORD_PREFIX)
        if is_discord:
            reply = posted_reply_to(db, mark.target_message_id, mark.created_at)
        else:
            reply = _resolve_twitch(db, mark)
        if reply is None or not reply.chosen.strip():
            unresolved += 1
            continue
        latest[reply.id] = (reply, mark)  # marks come oldest first: the last one wins
    if unresolved:
        log.info("%d marks name no posted bot reply (viewers' messages, fallbacks)", unresolved)
    result = [
        MarkedReply(
            reply_id=reply.id,
            mark=mark.mark,
            feedback_id=mark.id,
            marked_at=mark.created_at,
            created_at=reply.created_at,
            prompt=reply.prompt,
            chosen=reply.chosen,
            candidates=tuple(json.loads(reply.candidates_json)),
        )
        for reply, mark in latest.values()
    ]
    return sorted(result, key=lambda r: (r.created_at, r.reply_id))


def _other_candidate(reply: MarkedReply) -> str | None:
    """The lowest-scored candidate of the reply's prompt other than the posted text."""
    others = [
        c
        for c in reply.candidates
        if str(c.get("text") or "").strip() and str(c["text"]).strip() != reply.chosen.strip()
    ]
    if not others:
        return None
    return str(min(others, key=lambda c: float(c.get("score") or 0.0))["text"])


def pair_marks(
    replies: Sequence[MarkedReply], system: str, form: str = "chat"
) -> list[PreferencePair]:
    """Preference pairs from decided marks (see the module docstring), in reply order."""
    good = [r for r in replies if r.mark == "good"]
    pairs: list[PreferencePair] = []
    for reply in replies:
        if reply.mark == "bad":
            if not good:
                continue
            best = min(good, key=lambda g: (abs(g.created_at - reply.created_at), g.reply_id))
            if best.chosen.strip() == reply.chosen.strip():
                continue
            pairs.append(
                PreferencePair(
                    system=system,
                    user=reply.prompt,
                    chosen=best.chosen,
                    rejected=reply.chosen,
                    prompt_reply_id=reply.reply_id,
                    chosen_reply_id=best.reply_id,
                    rejected_reply_id=reply.reply_id,
                    feedback_ids=(reply.feedback_id, best.feedback_id),
                    form=form,
                )
            )
        elif reply.mark == "good":
            rejected = _other_candidate(reply)
            if rejected is None:
                continue
            pairs.append(
                PreferencePair(
                    system=system,
                    user=reply.prompt,
                    chosen=reply.chosen,
                    rejected=rejected,
                    prompt_reply_id=reply.reply_id,
                    chosen_reply_id=reply.reply_id,
                    rejected_reply_id=reply.reply_id,
                    feedback_ids=(reply.feedback_id,),
                    form=form,
                )
            )
    return pairs


def preference_pairs_from_db(
    db_path: Path, *, settings: ReplySettings | None = None
) -> list[PreferencePair]:
    """The preference pairs the marks in the chatling log at ``db_path`` make (read-only).

    ``settings`` renders the system turn (default ``ReplySettings()``); pass the
    bot's own so the pairs carry the persona it serves with.
    """
    from chatling.core.settings import load_settings

    settings = settings or load_settings().reply
    system = live_system_prompt(settings)
    db = connect_read_only(Path(db_path))
    try:
        if not has_feedback(db):
            log.info("%s predates feedback marks (schema before 002): no preference pairs", db_path)
            return []
        replies = marked_replies(db)
    except sqlite3.Error as exc:
        raise StoreError(f"{db_path}: cannot read the feedback marks ({exc})") from None
    finally:
        db.close()
    pairs = pair_marks(replies, system, settings.prompt_form)
    good = sum(r.mark == "good" for r in replies)
    log.info(
        "%d preference pairs from %d marked replies (%d good, %d bad)",
        len(pairs),
        len(replies),
        good,
        len(replies) - good,
    )
    return pairs


def feedback_ids(pairs: Iterable[PreferencePair]) -> list[int]:
    """The distinct marks behind ``pairs``, sorted (for provenance)."""
    return sorted({i for p in pairs for i in p.feedback_ids})


# --- what the model sees and how likely it finds each reply ------------------------------


def pairs_sha256(pairs: Sequence[PreferencePair]) -> str:
    """Content hash of the pairs (prompt and replies, in order)."""
    text = json.dumps(
        [
            [p.system, p.user, p.chosen, p.rejected] + ([p.form] if p.form != "chat" else [])
            for p in pairs
        ],
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class EncodedPreference:
    """Token ids of one pair: the live prompt, and each reply with its end-of-turn token."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]

    @property
    def longest(self) -> int:
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


def encode_preference(
    pair: PreferencePair, tokenizer: PreTrainedTokenizerBase
) -> EncodedPreference:
    """The ids the live engine sends for the pair's prompt, and those of each reply after it
    (``chatling.prompt``: the same rendering as serving and SFT)."""
    parts = pair.parts

    def completion(reply: str) -> list[int]:
        text = completion_text(parts, tokenizer, reply)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    return EncodedPreference(
        prompt_ids=list(prompt_token_ids(parts, tokenizer)),
        chosen_ids=completion(pair.chosen),
        rejected_ids=completion(pair.rejected),
    )


def encode_preferences(
    pairs: Sequence[PreferencePair], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[Dataset, list[PreferencePair]]:
    """A dataset of ``prompt_ids``/``chosen_ids``/``rejected_ids`` and the pairs kept in it."""
    import datasets

    rows, kept = [], []
    for pair in pairs:
        encoded = encode_preference(pair, tokenizer)
        if encoded.longest > max_length:
            continue
        rows.append(asdict(encoded))
        kept.append(pair)
    if len(kept) < len(pairs):
        log.warning(
            "dropped %d of %d preference pairs longer than max_length=%d tokens",
            len(pairs) - len(kept),
            len(pairs),
            max_length,
        )
    if not rows:
        raise ConfigError(
            f"no preference pair fits max_length={max_length} tokens; raise --max-length"
        )
    return datasets.Dataset.from_list(rows), kept


def completion_logps(
    model: PreTrainedModel, sequences: Sequence[tuple[list[int], list[int]]], batch_size: int = 4
) -> list[float]:
    """Summed log-probability of each completion after its prompt, ``(prompt_ids, completion_ids)``
    each; ``batch_size`` sequences (right-padded) a forward pass."""
    import torch

    device = next(model.parameters()).device
    result: list[float] = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        width = max(len(p) + len(c) for p, c in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        scored = torch.zeros((len(chunk), width), dtype=torch.bool)
        for i, (prompt, completion) in enumerate(chunk):
            n = len(prompt) + len(completion)
            ids[i, :n] = torch.as_tensor(prompt + completion)
            mask[i, :n] = 1
            scored[i, len(prompt) : n] = True
        ids, mask = ids.to(device), mask.to(device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        # Position t predicts token t + 1: score the logits that predict completion tokens.
        targets = scored[:, 1:].to(device)
        logps = torch.log_softmax(logits[:, :-1][targets].float(), dim=-1)
        token_logps = logps.gather(1, ids[:, 1:][targets][:, None])[:, 0]
        owner = torch.arange(len(chunk), device=device)[:, None].expand_as(targets)[targets]
        sums = torch.zeros(len(chunk), device=device).index_add_(0, owner, token_logps)
        result.extend(float(x) for x in sums.cpu())
    return result


def preference_margins(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    batch_size: int = 4,
) -> list[float]:
    """log p(chosen) - log p(rejected) of each pair under ``model`` (its active adapter), on
    the live prompt."""
    encoded = [encode_preference(pair, tokenizer) for pair in pairs]
    sequences = [(e.prompt_ids, c) for e in encoded for c in (e.chosen_ids, e.rejected_ids)]
    was_training = model.training
    model.eval()
    try:
        logps = completion_logps(model, sequences, batch_size)
    finally:
        model.train(was_training)
    return [logps[2 * i] - logps[2 * i + 1] for i in range(len(pairs))]


__all__ = [
    "EncodedPreference",
    "MarkedReply",
    "PreferencePair",
    "completion_logps",
    "encode_preference",
    "encode_preferences",
    "feedback_ids",
    "live_system_prompt",
    "marked_replies",
    "pair_marks",
    "pairs_sha256",
    "preference_margins",
    "preference_pairs_from_db",
    "same_text",
]
