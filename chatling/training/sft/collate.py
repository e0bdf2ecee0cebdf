"""From pair files to token ids with loss labels: what the trainer's collator packs.

Each pair is rendered exactly like the live bot renders its prompt
(``render_prompt`` with the bot's own reply settings, then ``chatling.prompt``'s
rendering of the prompt form: the chat template with the generation prompt,
or the plain chat log), and the chat message is the assistant turn or the
log's next line. Labels are ``-100`` on every prompt token, so the loss
falls only on the message and the chat template's end-of-turn token (the
whitespace the template writes after it is not trained: the live bot stops
at the end-of-turn token or a newline).

Prompt and completion are tokenised separately, as the engine sees them: the
prompt ids are the ids ``VllmEngine.render_chat`` sends, and the completion
ids are what the model generates after them.

Packing: trl's ``pack_dataset`` fills rows of up to ``max_length`` tokens
with several examples (best fit decreasing), and the collator gives each
example ``position_ids`` that restart at 0 and no attention mask.
transformers turns such positions into a block-diagonal causal mask
(``masking_utils.find_packed_sequence_indices``) for SDPA, eager and flex
attention, so packed examples never attend to each other (tests/test_train.py
checks the logits against separate forward passes). Two layouts:

- ``PackedRowsCollator`` (SDPA, eager, flex; CPU and GPU): one tensor row per
  packed row, rows padded to the longest (bfd leaves little to pad). The mask
  costs ``rows * max_length**2`` like a padded batch, but every row is full.
- trl's padding-free collator (flash-attention kernels): all rows flattened
  into one sequence with ``cu_seq_lens``; only flash-attention's varlen
  kernels make that cheap, a dense mask over the flattened batch would cost
  ``(rows * max_length)**2``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatling.core.errors import ConfigError, InputFileError
from chatling.core.settings import ReplySettings
from chatling.prompt import PromptBuilder, completion_text, prompt_token_ids
from chatling.training.data.pairs import COLUMNS, Pair, render_prompt

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
HELD_OUT_PREFIXES = ("test", "eval", "val", "dev")
MANIFEST = "manifest.json"
SPLITS = ("time", "source", "none")


@dataclass(frozen=True, slots=True)
class PairFiles:
    """The parquet files a training run reads, and their content hash."""

    root: Path
    files: tuple[Path, ...]
    sha256: str

    @property
    def is_dataset(self) -> bool:
        """A pairs dataset written by ``chatling data ingest`` (``manifest.json``)."""
        return self.root.is_dir() and (self.root / MANIFEST).exists()


@dataclass(frozen=True, slots=True)
class Encoded:
    """One training example: token ids and labels (``-100`` where no loss is taken)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def prompt_tokens(self) -> int:
        return sum(1 for label in self.labels if label == IGNORE_INDEX)

    @property
    def completion_tokens(self) -> int:
        return len(self.labels) - self.prompt_tokens


@dataclass(frozen=True, slots=True)
class EncodeStats:
    """What encoding kept and dropped."""

    pairs: int
    examples: int
    dropped_too_long: int
    dropped_empty: int
    prompt_tokens: int
    completion_tokens: int


def find_pair_files(data: Path) -> PairFiles:
    """The parquet files behind ``data``, sorted by name and hashed together.

    ``data`` is a pairs dataset (``manifest.json`` + ``data/*.parquet``, from
    ``chatling data ingest``: every file, split later), a directory of split
    files (those named ``train*``; ``test*``/``eval*``/``val*``/``dev*`` stay
    held out), a directory of other parquet files (all of them), or one file.
    """
    if data.is_file():
        files = [data]
    elif data.is_dir():
        files = sorted(p for p in data.rglob("*.parquet") if p.is_file())
        if not (data / MANIFEST).exists():
            train = [p for p in files if p.name.startswith("train")]
            files = train or [p for p in files if not p.name.startswith(HELD_OUT_PREFIXES)]
    else:
        raise ConfigError(
            f"{data}: no such training data; pass --data with a pairs dataset "
            "(`chatling data ingest --out DIR`) or a directory of pair parquet files"
        )
    if not files:
        raise InputFileError(data, None, "holds no .parquet pair files to train on")
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(data) if data.is_dir() else path.name).encode() + b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return PairFiles(root=data, files=tuple(files), sha256=digest.hexdigest())


def load_train_pairs(
    files: PairFiles, *, split: str = "time", test_fraction: float = 0.1
) -> Dataset:
    """The training pairs as a ``datasets.Dataset``.

    A pairs dataset is split exactly as ``chatling eval`` splits it
    (``chatling.training.data.dataset.split_pairs`` with the same ``split`` and
    ``test_fraction``) and only its train part is returned, so an adapter is
    never trained on the pairs it is evaluated on; ``split="none"`` takes
    every pair (a final adapter). Other files are read as they are.
    """
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    if files.is_dataset:
        from chatling.training.data.dataset import load_pairs, split_pairs

        dataset = load_pairs(files.root)
        if split != "none":
            dataset = split_pairs(dataset, by=split, test_fraction=test_fraction)["train"]  # type: ignore[arg-type]
    else:
        dataset = _read_parquet(files.files)
    if len(dataset) == 0:
        raise InputFileError(files.root, None, "holds no training pairs")
    return dataset


def _read_parquet(paths: Sequence[Path]) -> Dataset:
    import datasets
    import pyarrow.parquet as pq

    for path in paths:
        try:
            names = set(pq.read_schema(path).names)
        except (OSError, ValueError) as exc:
            raise InputFileError(path, None, f"not a readable parquet file ({exc})") from None
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise InputFileError(
                path, None, f"lacks the pair column(s) {', '.join(missing)} (expected {COLUMNS})"
            )
    return datasets.load_dataset(
        "parquet", data_files=[str(p) for p in paths], split="train", keep_in_memory=True
    )


def token_counter(tokenizer: PreTrainedTokenizerBase) -> Callable[[str], int]:
    """Token counts for prompt budgets, as the engine counts them (``VllmEngine.count_tokens``)."""
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def prompt_builder(
    tokenizer: PreTrainedTokenizerBase, settings: ReplySettings | None = None
) -> PromptBuilder:
    """The live bot's prompt builder for this tokenizer.

    ``settings`` default to the bot's own (``load_settings().reply``: .env and the
    environment), never to ``ReplySettings()``: a streamer who changes the bot's
    name, persona or prompt form must train on the prompt the bot serves.
    """
    from chatling.core.settings import load_settings

    return PromptBuilder(settings or load_settings().reply, token_counter(tokenizer))


def encode_pair(pair: Pair, builder: PromptBuilder, tokenizer: PreTrainedTokenizerBase) -> Encoded:
    """Token ids of the live prompt + the message, labels masking the prompt.

    Both halves come from ``chatling.prompt`` (``prompt_token_ids``, ``completion_text``),
    the rendering the engine serves: the chat template's assistant turn, or the chat
    log's next line and its newline.
    """
    parts = render_prompt(pair, builder)
    prompt_ids = prompt_token_ids(parts, tokenizer)
    completion = completion_text(parts, tokenizer, pair.target)
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return Encoded(
        input_ids=list(prompt_ids) + list(completion_ids),
        labels=[IGNORE_INDEX] * len(prompt_ids) + list(completion_ids),
    )


def encode_pairs(
    pairs: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    *,
    settings: ReplySettings | None = None,
    context_free_share: float = 0.0,
    seed: int = 0,
) -> tuple[Dataset, EncodeStats]:
    """A dataset of ``input_ids`` + ``labels`` for trl, and what was kept.

    Examples longer than ``max_length`` are dropped (cutting them would train
    on a prompt the live bot never sends), as are empty targets.

    ``context_free_share``: this share of the pairs is added a second time with
    no transcript and no chat, so the model also learns chat's unconditional
    distribution, the denominator of PMI scoring (``chatling.training.eval.rankers``), on the
    exact context-free prompt the ranker uses.
    """
    import random

    import datasets

    builder = prompt_builder(tokenizer, settings)
    rng = random.Random(seed)
    context_free = 0
    rows: list[dict[str, Any]] = []
    too_long = empty = prompt_tokens = completion_tokens = 0
    for row in pairs:
        pair = Pair.from_row(row)
        if not pair.target.strip():
            empty += 1
            continue
        encoded = encode_pair(pair, builder, tokenizer)
        if len(encoded.input_ids) > max_length:
            too_long += 1
            continue
        prompt_tokens += encoded.prompt_tokens
        completion_tokens += encoded.completion_tokens
        rows.append({"input_ids": encoded.input_ids, "labels": encoded.labels})
        if context_free_share and rng.random() < context_free_share:
            free = encode_pair(replace(pair, transcript=(), chat=()), builder, tokenizer)
            rows.append({"input_ids": free.input_ids, "labels": free.labels})
            context_free += 1
    if context_free:
        log.info(
            "added %d context-free copies of pairs (share %.2f)", context_free, context_free_share
        )
    stats = EncodeStats(
        pairs=len(pairs),
        examples=len(rows),
        dropped_too_long=too_long,
        dropped_empty=empty,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
    if too_long:
        log.warning(
            "dropped %d of %d pairs longer than max_length=%d tokens (raise --max-length)",
            too_long,
            len(pairs),
            max_length,
        )
    if not rows:
        raise ConfigError(
            f"no pair fits max_length={max_length} tokens ({too_long} too long, {empty} "
            "with an empty target); raise --max-length"
        )
    return datasets.Dataset.from_list(rows), stats


@dataclass
class PackedRowsCollator:
    """Batches of packed rows for attention with a mask (SDPA, eager, flex).

    Each row (``input_ids``, ``labels``, ``seq_lengths`` from trl's
    ``pack_dataset``) becomes one tensor row; ``position_ids`` restart at 0 at
    each example and at the padding after the row, which is labelled ``-100``.
    No ``attention_mask`` is returned: its absence is what makes transformers
    build the per-example mask from the positions. ``real_tokens`` counts the
    tokens that are not padding (this process's share).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    real_tokens: int = 0

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            lengths = list(row.get("seq_lengths") or [n])
            if sum(lengths) != n:
                raise ValueError(f"row {i}: seq_lengths {lengths} do not add up to {n} tokens")
            input_ids[i, :n] = torch.as_tensor(row["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.as_tensor(row["labels"], dtype=torch.long)
            segments = [*lengths, width - n] if width > n else lengths
            position_ids[i] = torch.cat([torch.arange(length) for length in segments])
            self.real_tokens += n
        # The first token of an example is never the target of the one before it.
        labels[position_ids == 0] = IGNORE_INDEX
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def uses_varlen_kernels(attn_implementation: str) -> bool:
    """Whether the attention takes sequence boundaries (``cu_seq_lens``) rather than a mask."""
    return "flash" in attn_implementation


def packed_collator(attn_implementation: str, pad_token_id: int) -> Any:
    """The collator for packed rows that suits the attention implementation (see above)."""
    if uses_varlen_kernels(attn_implementation):
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        return DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=True)
    return PackedRowsCollator(pad_token_id=pad_token_id)


def pack_examples(examples: Dataset, max_length: int, seed: int) -> Dataset:
    """Shuffled examples packed into rows of at most ``max_length`` tokens (best fit decreasing)."""
    from trl import pack_dataset

    shuffled = examples.select_columns(["input_ids", "labels"]).shuffle(seed=seed)
    return pack_dataset(shuffled, max_length, strategy="bfd")


def label_text(tokenizer: PreTrainedTokenizerBase, labels: Sequence[int]) -> str:
    """The text the loss is taken on (for checks and debugging)."""
    return tokenizer.decode([t for t in labels if t != IGNORE_INDEX], skip_special_tokens=False)


__all__ = [
    "IGNORE_INDEX",
    "EncodeStats",
    "Encoded",
    "PackedRowsCollator",
    "PairFiles",
    "encode_pair",
    "encode_pairs",
    "find_pair_files",
    "label_text",
    "load_train_pairs",
    "pack_examples",
    "packed_collator",
    "prompt_builder",
    "token_counter",
    "uses_varlen_kernels",
]
