"""devtools/writing_table.py: the mean over seeds that settings are chosen on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.writing_table import main


def _report(root: Path, name: str, auc: float) -> Path:
    writing = {
        "classifier_auc": {
            "posted vs real": {"mean": auc, "std": 0.05},
            "control: another real message of the moment": {"mean": 0.46, "std": 0.05},
            "control: a random training message": {"mean": 0.79, "std": 0.05},
        },
        "shape": {"posted": {"one_word": 0.4, "all_caps": 0.3}},
        "length_wasserstein_chars": 2.0,
        "copies": {"recent_chat": 0.05},
        "junk": {"share": 0.0},
        "postable_share": 1.0,
        "candidates": {"blocked_share": 0.1},
    }
    directory = root / f"rep-{name}"
    directory.mkdir()
    (directory / "report.json").write_text(json.dumps({"writing": writing}), encoding="utf-8")
    return directory


def test_runs_of_one_setting_are_averaged_over_their_seeds(tmp_path, capsys):
    dirs = [
        _report(tmp_path, "sft-b-s0", 0.60),
        _report(tmp_path, "sft-b-s1", 0.80),
        _report(tmp_path, "sft-c-s0", 0.75),
    ]
    out = tmp_path / "table.json"
    assert main([*map(str, dirs), "--json", str(out)]) == 0
    means = json.loads(out.read_text(encoding="utf-8"))["means"]
    assert means["sft-b"] == pytest.approx(
        {"seeds": 2, "auc": 0.70, "min": 0.60, "max": 0.80, "w1": 2.0}
    )
    assert means["sft-c"]["seeds"] == 1
    printed = capsys.readouterr().out
    # Sorted by mean AUC, lowest (most chat-like) first.
    assert printed.index("| sft-b | 2 | 0.700") < printed.index("| sft-c | 1 | 0.750")


def test_a_directory_that_is_no_report_names_its_file(tmp_path):
    (tmp_path / "rep-x").mkdir()
    (tmp_path / "rep-x" / "report.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"rep-x/report.json"):
        main([str(tmp_path / "rep-x")])
