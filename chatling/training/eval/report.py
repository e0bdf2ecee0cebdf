"""The evaluation report: ``report.json``, ``report.md`` and ``report.html`` with PNG plots.

``write_report(report_dir, data)`` takes the JSON-able dict that ``chatling
eval`` assembles (systems with metrics and intervals, split, candidate sets,
speed, optional generated-message statistics and loss curve), writes it as
``report.json``, draws ``metrics.png`` (Recall@1/5/10 and MRR per system with
95% moving-block bootstrap error bars), ``lengths.png`` (message lengths, real
vs generated) and ``loss.png`` (training loss) when their data is there, and
renders one document model to both Markdown and HTML, so the two never
disagree. Images are referenced by relative path: the directory is the report.
"""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PLOT_METRICS = ("recall@1", "recall@5", "recall@10", "mrr")
TABLE_METRICS = ("recall@1", "recall@5", "recall@10", "mean_rank", "mrr")
HEADERS = {
    "recall@1": "R@1",
    "recall@5": "R@5",
    "recall@10": "R@10",
    "mean_rank": "mean rank",
    "mrr": "MRR",
}


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)
    """(relative path, alt text)."""


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _cell(est: dict[str, Any] | None, ci: str, digits: int = 3) -> str:
    if not est:
        return "–"
    lo, hi = est[ci]
    return f"{est['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


# --- plots -----------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(systems: dict[str, Any], path: Path) -> None:
    """Grouped bars: one group per metric, one bar per system, block-bootstrap CI whiskers."""
    plt = _pyplot()
    names = list(systems)
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(names) + 3), 4.5))
    for i, name in enumerate(names):
        metrics = systems[name]["metrics"]
        values = [metrics[m]["value"] for m in PLOT_METRICS]
        lows = [metrics[m]["value"] - metrics[m]["ci95_blocks"][0] for m in PLOT_METRICS]
        highs = [metrics[m]["ci95_blocks"][1] - metrics[m]["value"] for m in PLOT_METRICS]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(PLOT_METRICS))]
        ax.bar(xs, values, width, yerr=[lows, highs], capsize=2, label=name)
    ax.set_xticks(range(len(PLOT_METRICS)), [HEADERS[m] for m in PLOT_METRICS])
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (95% moving-block bootstrap CI)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_lengths(real: Sequence[int], generated: Sequence[int], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    top = max([*real, *generated, 1])
    bins = range(0, min(top, 40) + 2)
    ax.hist([min(x, 40) for x in real], bins=bins, density=True, alpha=0.6, label="real chat")
    ax.hist([min(x, 40) for x in generated], bins=bins, density=True, alpha=0.6, label="generated")
    ax.set_xlabel("message length (words, 40 = 40 or more)")
    ax.set_ylabel("share of messages")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss(curve: Sequence[Sequence[float]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([p[0] for p in curve], [p[1] for p in curve], marker="." if len(curve) < 50 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- document ------------------------------------------------------------------------------


def _ranking_table(data: dict[str, Any], ci: str) -> tuple[list[str], list[list[str]]]:
    headers = ["system", *(HEADERS[m] for m in TABLE_METRICS), "perplexity"]
    rows = []
    for name, sys in data["systems"].items():
        cells = [_cell(sys["metrics"][m], ci, 2 if m == "mean_rank" else 3) for m in TABLE_METRICS]
        rows.append([name, *cells, _cell(sys.get("perplexity"), ci, 2)])
    return headers, rows


def sections(data: dict[str, Any], images: dict[str, str]) -> list[Section]:
    """The report's content, independent of Markdown or HTML."""
    cands = data["candidates"]
    intro = Section(
        "Setup",
        [
            f"{cands['points']} test points from held-out stream time, {cands['n_candidates']} "
            f"candidates each (ground truth: distinct messages in the {cands['window_s']:g} s "
            f"after the moment, at most {cands['max_truth']}; mean {cands['mean_truth']:.2f} per "
            f"point), frozen in `{cands['path']}` (sha256 {cands['sha256'][:12]}…, seed "
            f"{cands['seed']}).",
            f"Split: {data['split']['kind']}; train {data['split']['train']['pairs']} pairs, test "
            f"{data['split']['test']['pairs']} pairs; share of test messages also written in "
            f"training: {data['split']['test_messages_seen_in_train']:.3f}.",
            f"Ties: {data['ties']}",
        ],
    )
    main = Section(
        "Ranking",
        [
            "Scores are higher-is-better (log-probabilities for models). Each cell: value "
            "[95% moving-block bootstrap interval, blocks of "
            f"{data['bootstrap']['block_s']:g} s of stream time, {data['bootstrap']['n_boot']} "
            "resamples]. Perplexity is of the ground-truth messages (end-of-turn token included).",
            "Random expectation (analytic, averaged over points): "
            + ", ".join(f"{HEADERS[m]} {v:.3f}" for m, v in data["random_expectation"].items()),
        ],
        [_ranking_table(data, "ci95_blocks")],
    )
    if "metrics" in images:
        main.images.append((images["metrics"], "Recall@k and MRR per system"))
    points = Section(
        "Intervals over independent points",
        [
            "The same metrics with an ordinary bootstrap over test points (narrower: it "
            "ignores that neighbouring points share context)."
        ],
        [_ranking_table(data, "ci95_points")],
    )
    out = [intro, main, points]
    paired = data.get("paired") or []
    if paired:
        rows = [
            [
                row["what"],
                row["system"],
                row["reference"],
                *(_cell(row[m], "ci95_blocks") for m in ("recall@10", "mrr")),
            ]
            for row in paired
        ]
        out.append(
            Section(
                "Paired differences",
                [
                    "System minus reference on the same points, with a paired moving-block "
                    "bootstrap interval: a system is better only where all of its interval is "
                    "above 0 (separate intervals overlap far more often than this one crosses 0)."
                ],
                [(["what", "system", "reference", "ΔR@10", "ΔMRR"], rows)],
            )
        )
    gen = data.get("generated")
    if gen:
        length, emote, distinct = gen["length_words"], gen["emote_rate"], gen["distinct"]
        rows = [
            ["length (words), mean", _fmt(length["real_mean"]), _fmt(length["generated_mean"])],
            ["emote rate, mean", _fmt(emote["real_mean"]), _fmt(emote["generated_mean"])],
            ["distinct-1", _fmt(distinct["real_1"]), _fmt(distinct["generated_1"])],
            ["distinct-2", _fmt(distinct["real_2"]), _fmt(distinct["generated_2"])],
        ]
        paragraphs = [
            f"{gen['n_generated']} generated messages against {gen['n_real']} real ones. "
            f"Wasserstein distance, length: {gen['length_words']['wasserstein']:.3f} words; "
            f"emote rate: {gen['emote_rate']['wasserstein']:.4f}.",
            f"Copies of a training message (verbatim after normalisation): "
            f"{gen['verbatim_train_copy_share']:.3f}.",
        ]
        if "blocked_share" in gen:
            reasons = ", ".join(f"{k} {v}" for k, v in gen["blocked_reasons"].items()) or "none"
            paragraphs.append(
                f"Blocked by the safety filter: {gen['blocked_share']:.3f} ({reasons})."
            )
        section = Section(
            "Generated messages", paragraphs, [(["statistic", "real chat", "generated"], rows)]
        )
        if "lengths" in images:
            section.images.append((images["lengths"], "message lengths, real vs generated"))
        out.append(section)
    writing = data.get("writing")
    if writing:
        out.append(writing_section(writing))
    if "loss" in images:
        out.append(Section("Training loss", [], [], [(images["loss"], "training loss curve")]))
    speed = data.get("speed") or {}
    if speed:
        rows = [[k, str(v)] for k, v in speed.items()]
        out.append(Section("Scoring speed", [], [(["measure", "value"], rows)]))
    return out


def writing_section(writing: dict[str, Any]) -> Section:
    """What the bot writes: the headline table, then moments side by side."""
    from chatling.training.eval.writing import summary_rows

    paragraphs = [
        f"{writing['posted']} replies posted at {writing['moments']} held-out moments "
        "(`chatling generate`: the live prompt, engine, sampling, filter and choice). "
        "Classifier: character 1-4-gram TF-IDF + logistic regression, repeated stratified "
        "5-fold cross-validation, ROC AUC mean ± standard deviation over folds; "
        "0.5 means it cannot tell the bot from chat."
    ]
    side = [
        [
            f"{row['time']:.0f}",
            " · ".join(row["real"]).replace("|", "¦"),
            (row["posted"] or "(nothing postable)").replace("|", "¦"),
        ]
        for row in writing["side_by_side"]
    ]
    return Section(
        "What the bot writes",
        paragraphs,
        [
            (["", "real chat", "posted"], summary_rows(writing)),
            (["t (s)", "chat at that moment", "the bot posted"], side),
        ],
    )


def to_markdown(title: str, parts: Sequence[Section]) -> str:
    lines = [f"# {title}", ""]
    for s in parts:
        lines += [f"## {s.title}", ""]
        for p in s.paragraphs:
            lines += [p, ""]
        for headers, rows in s.tables:
            lines.append("| " + " | ".join(headers) + " |")
            lines.append("|" + "---|" * len(headers))
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
            lines.append("")
        for path, alt in s.images:
            lines += [f"![{alt}]({path})", ""]
    return "\n".join(lines)


def to_html(title: str, parts: Sequence[Section]) -> str:
    esc = html.escape
    body = [f"<h1>{esc(title)}</h1>"]
    for s in parts:
        body.append(f"<h2>{esc(s.title)}</h2>")
        body += [f"<p>{esc(p)}</p>" for p in s.paragraphs]
        for headers, rows in s.tables:
            head = "".join(f"<th>{esc(h)}</th>" for h in headers)
            cells = "".join(
                "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        body += [f'<p><img src="{esc(p)}" alt="{esc(a)}"></p>' for p, a in s.images]
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}"
        "img{max-width:100%}"
    )
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write_report(report_dir: Path, data: dict[str, Any]) -> list[Path]:
    """Write the JSON, plots, Markdown and HTML; returns the files written."""
    report_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, str] = {}
    if data.get("systems"):
        plot_metrics(data["systems"], report_dir / "metrics.png")
        images["metrics"] = "metrics.png"
    gen = data.get("generated")
    if gen and gen.get("lengths"):
        plot_lengths(
            gen["lengths"]["real"], gen["lengths"]["generated"], report_dir / "lengths.png"
        )
        images["lengths"] = "lengths.png"
    if data.get("loss_curve"):
        plot_loss(data["loss_curve"], report_dir / "loss.png")
        images["loss"] = "loss.png"
    _atomic_write(report_dir / "report.json", json.dumps(data, indent=2, default=str) + "\n")
    title = data.get("title", "chatling evaluation")
    parts = sections(data, images)
    _atomic_write(report_dir / "report.md", to_markdown(title, parts))
    _atomic_write(report_dir / "report.html", to_html(title, parts))
    files = [report_dir / n for n in ("report.json", "report.md", "report.html")]
    files += [report_dir / p for p in images.values()]
    log.info("report written to %s", report_dir)
    return files


__all__ = [
    "Section",
    "plot_lengths",
    "plot_loss",
    "plot_metrics",
    "sections",
    "to_html",
    "to_markdown",
    "write_report",
]
