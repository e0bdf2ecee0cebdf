"""The reply core: prompt -> engine -> clean-up -> safety filter -> score -> choice.

One algorithm, called by everything that writes as the bot: the reply loop
(``chatling.pipeline``), the direct-answer service (``chatling.responder``, Discord
``/chat``) and ``chatling generate`` (``chatling.training.eval.generate``), which measures
what the bot would post at held-out moments. Keeping it in one place is what
makes that measurement honest: the evaluation calls exactly what the live
bot calls.

The steps are separate methods because the callers time, log and cancel
between them (the pipeline may pre-empt a reply while the engine works, and
filters against the chat seen when the generation is ready).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from chatling.context import ContextSnapshot
from chatling.core.events import Candidate, ChatMessage
from chatling.core.settings import ReplySettings
from chatling.engine import Generation, SamplingOptions
from chatling.prompt import PromptBuilder, PromptParts, clean_generation
from chatling.safety import SafetyFilter
from chatling.scoring import score_candidate
from chatling.topical import topical_choice

CUT_OFF = "cut_off"
"""The reason of a candidate the engine stopped at the token limit before its line ended."""


class Engine(Protocol):
    """What writing a reply needs of an engine (``VllmEngine`` in production)."""

    model_name: str

    def count_tokens(self, text: str) -> int: ...

    def render(self, parts: PromptParts) -> list[int]: ...

    async def generate(self, prompt_ids: list[int], options: SamplingOptions) -> Generation: ...


@dataclass(frozen=True, slots=True)
class Judged:
    """The candidates of one generation, each with its verdict and score, and the pick."""

    candidates: list[Candidate]
    chosen: Candidate | None
    """The candidate to post; ``None`` when the filter blocked every one."""


class ReplyWriter:
    """Writes the bot's replies with the settings in force; holds no per-stream state."""

    def __init__(
        self,
        settings: ReplySettings,
        engine: Engine,
        prompts: PromptBuilder,
        safety: SafetyFilter,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.prompts = prompts
        self.safety = safety

    def prompt(self, snapshot: ContextSnapshot, target: ChatMessage | None) -> PromptParts:
        return self.prompts.build(snapshot, target)

    def sampling(self, seed: int | None) -> SamplingOptions:
        s = self.settings
        return SamplingOptions(
            n=s.candidates,
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            min_p=s.min_p,
            logprobs=0 if s.chooser == "likelihood" else None,
            seed=seed,
        )

    async def generate(self, prompt: PromptParts, seed: int | None) -> Generation:
        """Several candidates in one request; raises ``EngineError``; cancel aborts it."""
        return await self.engine.generate(self.engine.render(prompt), self.sampling(seed))

    def judge(
        self,
        generation: Generation,
        prompt: PromptParts,
        *,
        now: float,
        target: ChatMessage | None,
        recent_chat: Sequence[ChatMessage],
    ) -> Judged:
        """Clean, filter and score every candidate, then choose one (pure)."""
        names = {m.user for m in prompt.snapshot.chat} | {
            m.display_name for m in prompt.snapshot.chat if m.display_name
        }
        reply_to = target.user if target else None
        cut = generation.truncated or (False,) * len(generation.texts)
        candidates = []
        for raw, truncated in zip(generation.texts, cut, strict=True):
            text = clean_generation(raw, self.settings.bot_name, names)
            verdict = self.safety.check(
                text,
                now=now,
                reply_to_user=reply_to,
                recent_chat=recent_chat,
                prompt=f"{prompt.system}\n{prompt.user}",
            )
            final = verdict.text if verdict.allowed else text
            score = score_candidate(final, prompt.snapshot, target.text if target else None)
            if verdict.allowed and truncated and "\n" not in raw:
                # Stopped by max_tokens mid-line: it reads cut off, so it is never posted.
                candidates.append(Candidate(final, False, CUT_OFF, score))
                continue
            candidates.append(Candidate(final, verdict.allowed, verdict.reason, score))
        # Only the topical chooser reads the chat; the reply path builds nothing for the others.
        chat = (
            [f"{m.user}: {m.text}" for m in prompt.snapshot.chat]
            if self.settings.chooser == "topical"
            else ()
        )
        return Judged(candidates, self.choose(candidates, generation.mean_logprobs, chat))

    def choose(
        self,
        candidates: Sequence[Candidate],
        mean_logprobs: Sequence[float] = (),
        recent_chat: Sequence[str] = (),
    ) -> Candidate | None:
        """The allowed candidate to post: the first (a draw from the model itself), the
        best by ``chatling.scoring`` (which prefers longer, on-topic lines), the one the
        model finds likeliest per token (``mean_logprobs``; the first without them), or
        the one sharing most words with ``recent_chat`` (``name: text`` lines)."""
        allowed = [i for i, c in enumerate(candidates) if c.allowed]
        if not allowed:
            return None
        chooser = self.settings.chooser
        if chooser == "topical":
            return candidates[
                allowed[topical_choice([candidates[i].text for i in allowed], recent_chat)]
            ]
        if chooser == "score":
            return candidates[max(allowed, key=lambda i: candidates[i].score)]
        if chooser == "likelihood" and len(mean_logprobs) == len(candidates):
            return candidates[max(allowed, key=lambda i: mean_logprobs[i])]
        return candidates[allowed[0]]


__all__ = ["CUT_OFF", "Engine", "Judged", "ReplyWriter"]
