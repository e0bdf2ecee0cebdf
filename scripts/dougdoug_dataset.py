"""Build the DougDoug development dataset (pairs) for the training issue's real run.

Reads the corpus in place (``../shared/data/dougdoug-takeover-europe``, no
licence: never copied into the repository), aligns it with the product's own
code (``chatling.training.data.filters.make_pairs``) and writes a dataset directory outside
the repository's tracked files (default ``data/runs/dougdoug-pairs``, ignored
by git) that ``chatling train`` and ``chatling eval`` read.

Run: ``.venv/bin/python scripts/dougdoug_dataset.py [--out DIR]``
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chatling.training.data.dataset import SourceInfo, write_source
from chatling.training.data.filters import make_pairs
from devtools.dougdoug_corpus import DEFAULT_DIR, load_corpus

log = logging.getLogger("dougdoug_dataset")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--out", type=Path, default=Path("data/runs/dougdoug-pairs"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    corpus = load_corpus(args.corpus)
    pairs, report = make_pairs(corpus.messages, corpus.segments, "dougdoug-takeover-europe")
    info = SourceInfo(
        name="dougdoug-takeover-europe",
        kind="vod",
        inputs={
            "chat": str(args.corpus / "chat_frames.jsonl"),
            "transcript": str(args.corpus / "transcript.jsonl"),
        },
        report=report,
        transcript_segments=len(corpus.segments),
    )
    write_source(args.out, pairs, info)
    log.info("%d pairs from %d messages written to %s", len(pairs), len(corpus.messages), args.out)


if __name__ == "__main__":
    main()
