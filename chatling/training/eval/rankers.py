"""Rankers that score a test point's candidate messages: baselines and the model.

Every ranker maps a test point (its context and its frozen candidates) to one
or more score arrays, one number per candidate, **higher is better**; the
metric code in ``chatling.training.eval.evaluate`` only counts how many candidates score
strictly above the best ground truth, so no ranker ever sorts anything and the
"summed NLL sorted the wrong way" bug of the public LiveBot code cannot happen
here: a language model's score is its log-probability, never a loss.

- ``RandomRanker``: every candidate ties; with ties counted in expectation this
  is exactly the analytic expectation of a random ranking.
- ``FrequencyRanker``: how often the message occurs in the training chat.
- ``TfIdfRanker``: cosine similarity (TF-IDF fitted on training chat) of each
  candidate to the recent chat or to the transcript.
- ``ModelRanker``: log-probability of the candidate as the assistant turn of
  the live bot's exact prompt, summed and per token (the end-of-turn token
  included: P(message, then stop)). The prompt's KV cache is computed once per
  point and shared by all candidates (``shared_prompt=False`` scores full
  sequences instead; both give the same numbers, tested). With ``pmi=True`` a
  third score: pointwise mutual information with the context,
  ``log p(c | context) - log p(c | no context)``, where "no context" is the same
  live prompt with no transcript and no chat. A fine-tuned model learns chat's
  most frequent messages, which the protocol puts among every point's
  candidates on purpose; PMI cancels that prior and keeps what the context adds.
  The context-free scores are cached per candidate text (frequent candidates
  recur at every point).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from chatling.core.errors import ModelError
from chatling.prompt import PromptParts, completion_text, prompt_token_ids
from chatling.safety import dedupe_key
from chatling.training.data.pairs import Pair, chat_messages, render_prompt

if TYPE_CHECKING:
    from chatling.prompt import PromptBuilder
    from chatling.training.eval.points import TestPoint

log = logging.getLogger(__name__)

# Words, plus single non-ASCII symbols (emoji); ASCII punctuation is dropped.
_TOKEN = re.compile(r"\w+|[^\w\s!-/:-@\[-`{-~]")


def tokens(text: str) -> list[str]:
    """Lower-cased word and emoji tokens of a chat line or transcript."""
    return _TOKEN.findall(text.casefold())


def chat_text(line: str) -> str:
    """The text of a ``user: text`` chat line (as ``Pair.chat`` stores them)."""
    _user, sep, text = line.partition(": ")
    return text if sep else line


class TfIdf:
    """TF-IDF vectors (sublinear tf, smoothed idf, L2-normalised) as sparse dicts.

    Fitted on training messages; tokens never seen get the largest idf, so two
    texts sharing a rare word the training chat never used still match.
    """

    def __init__(self, documents: Iterable[str]) -> None:
        df: Counter[str] = Counter()
        n = 0
        for doc in documents:
            df.update(set(tokens(doc)))
            n += 1
        self.n_documents = n
        self._idf = {t: math.log((1 + n) / (1 + c)) + 1.0 for t, c in df.items()}
        self._unknown_idf = math.log(1 + n) + 1.0

    def vector(self, text: str) -> dict[str, float]:
        counts = Counter(tokens(text))
        vec = {
            t: (1.0 + math.log(c)) * self._idf.get(t, self._unknown_idf) for t, c in counts.items()
        }
        norm = math.sqrt(sum(w * w for w in vec.values()))
        return {t: w / norm for t, w in vec.items()} if norm > 0 else {}

    @staticmethod
    def cosine(a: dict[str, float], b: dict[str, float]) -> float:
        if len(a) > len(b):
            a, b = b, a
        return sum(w * b.get(t, 0.0) for t, w in a.items())


class TfIdfIndex:
    """An inverted index over many documents for nearest-neighbour search."""

    def __init__(self, tfidf: TfIdf, documents: Sequence[str]) -> None:
        self.tfidf = tfidf
        self.size = len(documents)
        postings: dict[str, tuple[list[int], list[float]]] = {}
        for i, doc in enumerate(documents):
            for t, w in tfidf.vector(doc).items():
                ids, ws = postings.setdefault(t, ([], []))
                ids.append(i)
                ws.append(w)
        self._postings = {
            t: (np.asarray(ids, dtype=np.int64), np.asarray(ws))
            for t, (ids, ws) in postings.items()
        }

    def similarities(self, text: str) -> np.ndarray:
        """Cosine similarity of ``text`` to every indexed document."""
        sims = np.zeros(self.size)
        for t, w in self.tfidf.vector(text).items():
            if t in self._postings:
                ids, ws = self._postings[t]
                sims[ids] += w * ws
        return sims


@dataclass(frozen=True, slots=True)
class CandidateScores:
    """A ranker's output for one point: score arrays by variant, higher is better."""

    scores: dict[str, np.ndarray]
    """Variant name (``""`` for a ranker with one) -> one score per candidate."""
    logprob: np.ndarray | None = None
    """Summed log-probability per candidate (language-model rankers only)."""
    n_tokens: np.ndarray | None = None
    """Tokens per candidate, end-of-turn token included (language-model rankers only)."""


class Ranker(Protocol):
    name: str

    def score(self, point: TestPoint) -> CandidateScores: ...


@dataclass
class RandomRanker:
    """All candidates tie: counted in expectation, that is a random ranking's exact mean."""

    name: str = "random (exact expectation)"

    def score(self, point: TestPoint) -> CandidateScores:
        return CandidateScores({"": np.zeros(len(point.candidates))})


@dataclass
class FrequencyRanker:
    """Scores a candidate by how often (normalised) it was written in the training chat."""

    counts: Counter[str]
    name: str = "frequency"

    @classmethod
    def from_messages(cls, messages: Iterable[str]) -> FrequencyRanker:
        return cls(Counter(dedupe_key(m) for m in messages))

    def score(self, point: TestPoint) -> CandidateScores:
        values = [self.counts.get(dedupe_key(c), 0) for c in point.candidates]
        return CandidateScores({"": np.asarray(values, dtype=float)})


@dataclass
class TfIdfRanker:
    """Cosine similarity of each candidate to the recent chat or to the transcript."""

    tfidf: TfIdf
    field: str
    """``chat`` or ``transcript``."""
    name: str = ""

    def __post_init__(self) -> None:
        if self.field not in ("chat", "transcript"):
            raise ValueError(f"TfIdfRanker field must be chat or transcript, not {self.field!r}")
        self.name = (
            self.name or f"TF-IDF to {'recent chat' if self.field == 'chat' else 'transcript'}"
        )

    def score(self, point: TestPoint) -> CandidateScores:
        pair = point.pair
        lines = [chat_text(x) for x in pair.chat] if self.field == "chat" else list(pair.transcript)
        query = self.tfidf.vector("\n".join(lines))
        values = [TfIdf.cosine(query, self.tfidf.vector(c)) for c in point.candidates]
        return CandidateScores({"": np.asarray(values, dtype=float)})


def load_model(
    base: str, adapter: str | None = None, device: str | None = None, dtype: str = "bfloat16"
) -> tuple[Any, Any]:
    """(model, tokenizer) for scoring, in eval mode.

    ``bfloat16`` by default: the dtype the live engine serves (``ModelSettings.dtype``)
    and about twice as fast as ``float32`` on a 2-core CPU with AVX-512 BF16; summed
    log-probabilities differ from float32 by up to ~0.7 nats on 100 candidates,
    ranks correlate at 0.999.

    With ``adapter`` the model is a ``peft.PeftModel`` (unmerged, so
    ``ModelRanker(adapter_enabled=False)`` scores the base model with no reload).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatling.engine import resolve_model

    name = resolve_model(base)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype not in ("bfloat16", "float32", "float16"):
        raise ModelError(f"dtype must be bfloat16, float16 or float32, not {dtype!r}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=getattr(torch, dtype))
    except OSError as exc:
        raise ModelError(f"{name}: cannot load the model ({exc}); pass --base DIR|HF_ID") from None
    if adapter is not None:
        from peft import PeftModel

        directory = Path(adapter).expanduser().resolve()
        if not (directory / "adapter_config.json").exists():
            raise ModelError(f"{directory} is not a LoRA adapter (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(directory))
    model.to(device)
    model.eval()
    return model, tokenizer


@dataclass
class ModelRanker:
    """Log-probability of each candidate as the assistant turn of the live prompt."""

    model: Any
    tokenizer: Any
    builder: PromptBuilder
    name: str = "model"
    with_transcript: bool = True
    adapter_enabled: bool = True
    """False on a ``PeftModel``: score with the adapter disabled (the base model)."""
    batch_size: int = 8
    """Candidates per forward pass: 8 is fastest on a 2-core CPU; larger on a GPU."""
    shared_prompt: bool = True
    pmi: bool = False
    """Also score ``pmi``: the log-probability minus the context-free one."""
    _end_of_turn: list[int] = field(default_factory=list, init=False, repr=False)
    _context_free: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._end_of_turn = self._end_of_turn_ids()

    def score(self, point: TestPoint) -> CandidateScores:
        parts = render_prompt(point.pair, self.builder, with_transcript=self.with_transcript)
        logprob, n_tokens = self.logprobs(parts, point.candidates)
        scores = {"summed": logprob, "per token": logprob / n_tokens}
        if self.pmi:
            scores["pmi"] = logprob - self.context_free_logprobs(point.candidates)
        return CandidateScores(scores, logprob=logprob, n_tokens=n_tokens)

    def context_free_logprobs(self, candidates: Sequence[str]) -> np.ndarray:
        """Summed log-probability of each candidate after a prompt with no context."""
        missing = list(dict.fromkeys(c for c in candidates if c not in self._context_free))
        if missing:
            empty = Pair("context-free", 0.0, (), (), "", "")
            parts = render_prompt(empty, self.builder, with_transcript=False)
            logprob, _ = self.logprobs(parts, missing)
            self._context_free.update(zip(missing, map(float, logprob), strict=True))
        return np.asarray([self._context_free[c] for c in candidates])

    def prompt_ids(self, parts: PromptParts) -> list[int]:
        """The prompt exactly as the live engine renders it (``VllmEngine.render``)."""
        return list(prompt_token_ids(parts, self.tokenizer))

    def candidate_ids(self, text: str) -> list[int]:
        """Tokens of the answer as the model writes it: the assistant turn and its
        end-of-turn token(s), or the chat log's next line and its newline."""
        if self.builder.form == "log":
            return self.tokenizer.encode(
                completion_text(PromptParts("", "", form="log"), self.tokenizer, text),
                add_special_tokens=False,
            )
        return self.tokenizer.encode(text, add_special_tokens=False) + self._end_of_turn

    def _end_of_turn_ids(self) -> list[int]:
        sentinel = "\x00SENTINEL\x00"
        full = self.tokenizer.apply_chat_template(chat_messages("s", "u", sentinel), tokenize=False)
        suffix = full.split(sentinel, 1)[1].rstrip()
        return self.tokenizer.encode(suffix, add_special_tokens=False)

    @contextmanager
    def _adapter_state(self) -> Iterator[None]:
        disable = getattr(self.model, "disable_adapter", None)
        with nullcontext() if self.adapter_enabled or disable is None else disable():
            yield

    def logprobs(
        self, parts: PromptParts, candidates: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(summed log-prob, token count) of each candidate after the prompt."""
        import torch

        prompt = self.prompt_ids(parts)
        cands = [self.candidate_ids(c) for c in candidates]
        with torch.inference_mode(), self._adapter_state():
            if self.shared_prompt:
                sums = self._shared(prompt, cands)
            else:
                sums = self._full(prompt, cands)
        return sums, np.asarray([len(c) for c in cands], dtype=float)

    def _device(self) -> Any:
        return next(self.model.parameters()).device

    def _batches(self, cands: list[list[int]]) -> Iterator[list[int]]:
        """Candidate indices in batches of similar length (less padding)."""
        order = sorted(range(len(cands)), key=lambda i: len(cands[i]))
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def _shared(self, prompt: list[int], cands: list[list[int]]) -> np.ndarray:
        """Prompt forward once; each batch of candidates attends to its KV cache."""
        import torch
        from transformers import DynamicCache

        device = self._device()
        out = self.model(
            input_ids=torch.tensor([prompt], device=device), use_cache=True, logits_to_keep=1
        )
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        sums = np.zeros(len(cands))
        for batch in self._batches(cands):
            width = max(len(cands[i]) for i in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long, device=device)
            for row, i in enumerate(batch):
                ids[row, : len(cands[i])] = torch.tensor(cands[i], device=device)
            # Each layer starts from a broadcast view of the prompt's keys and values: the
            # cache's first concatenation materialises it once (a copy per batch is the
            # price of transformers' cache; the prompt's forward pass is not repeated).
            cache = DynamicCache(config=self.model.config)
            for layer, (k, v) in zip(cache.layers, layers, strict=True):
                layer.lazy_initialization(k, v)
                layer.keys = k.expand(len(batch), -1, -1, -1)
                layer.values = v.expand(len(batch), -1, -1, -1)
            # Right padding needs no mask: causal attention never looks ahead at the pads.
            logits = self.model(input_ids=ids, past_key_values=cache, use_cache=True).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            next_lp = logp.gather(-1, ids[:, 1:, None])[..., 0]
            for row, i in enumerate(batch):
                n = len(cands[i])
                sums[i] = float(first[cands[i][0]]) + float(next_lp[row, : n - 1].sum())
        return sums

    def _full(self, prompt: list[int], cands: list[list[int]]) -> np.ndarray:
        """Reference path: prompt + candidate as one sequence per row, right-padded."""
        import torch

        device = self._device()
        p = len(prompt)
        sums = np.zeros(len(cands))
        for batch in self._batches(cands):
            width = p + max(len(cands[i]) for i in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long, device=device)
            for row, i in enumerate(batch):
                ids[row, : p + len(cands[i])] = torch.tensor(prompt + cands[i], device=device)
            keep = width - p + 1  # logits from the prompt's last token on
            logits = self.model(input_ids=ids, logits_to_keep=keep).logits[:, :-1]
            logp = torch.log_softmax(logits.float(), dim=-1)
            next_lp = logp.gather(-1, ids[:, p:, None])[..., 0]
            for row, i in enumerate(batch):
                sums[i] = float(next_lp[row, : len(cands[i])].sum())
        return sums


def prompt_pair(transcript: Sequence[str], chat: Sequence[str], offset: float = 60.0) -> Pair:
    """A context-only ``Pair`` (no target): handy for scoring ad-hoc contexts."""
    return Pair("adhoc", offset, tuple(transcript), tuple(chat), "", "")


__all__ = [
    "CandidateScores",
    "FrequencyRanker",
    "ModelRanker",
    "RandomRanker",
    "Ranker",
    "TfIdf",
    "TfIdfIndex",
    "TfIdfRanker",
    "chat_text",
    "load_model",
    "prompt_pair",
    "tokens",
]
