"""What one nightly run needs to know (``NightlyConfig``), apart from the steps that use it.

Its own module so the parts of a run (``children``, ``scoring``, ``export``) and the step
sequence (``nightly``) all import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from chatling.core.paths import resolve_path
from chatling.core.settings import Settings
from chatling.learn.gate import GateOptions


@dataclass(frozen=True, slots=True)
class NightlyConfig:
    """Everything one run needs; ``from_settings`` is the normal way to get one."""

    db_path: Path
    adapters_dir: Path
    runs_dir: Path
    preset: str = "cpu-tiny"
    base_model: str | None = None
    base_data: Path | None = None
    max_steps: int | None = None
    min_new_pairs: int = 50
    min_preference_pairs: int = 8
    eval_points: int = 200
    gate_generations: int = 32
    test_fraction: float = 0.2
    gate: GateOptions = field(default_factory=GateOptions)
    nice: int = 15
    threads: int = 1
    seed: int = 0
    trigger: str = "manual"
    env_file: str | None = ".env"

    @classmethod
    def from_settings(
        cls, settings: Settings, trigger: str = "manual", env_file: str | None = ".env"
    ) -> NightlyConfig:
        s = settings.schedule
        return cls(
            db_path=resolve_path(settings.storage.db_path),
            adapters_dir=resolve_path(s.adapters_dir),
            runs_dir=resolve_path(s.runs_dir),
            preset=s.preset,
            base_model=s.base_model,
            base_data=resolve_path(s.base_data) if s.base_data else None,
            max_steps=s.max_steps,
            min_new_pairs=s.min_new_pairs,
            min_preference_pairs=s.min_preference_pairs,
            eval_points=s.eval_points,
            gate_generations=s.gate_generations,
            gate=GateOptions(
                ranking_required=s.gate_ranking == "required",
                rank_margin=s.gate_rank_margin,
                perplexity_margin=s.gate_perplexity_margin,
                blocked_margin=s.gate_blocked_margin,
                writing_required=s.gate_writing == "required",
                writing_margin=s.gate_writing_margin,
            ),
            nice=s.nice,
            threads=s.train_threads,
            seed=settings.model.seed,
            trigger=trigger,
            env_file=env_file,
        )
