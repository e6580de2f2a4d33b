"""When a training run has converged: validation PSNR on a plateau at the final learning rate.

A run with a ``[plateau]`` table watches its validation PSNR. When ``patience`` validations in a row
have not raised the best score by more than ``min_delta`` dB, the learning rate is multiplied by
``gamma``; after ``drops`` such drops the next plateau ends the run, and the run is *converged* under
this rule. Without that, a run that reaches ``iters`` first is not. The rule is an operational
definition (a few validation images are a noisy measure), stated with its parameters wherever it is
reported, e.g. in the shipped model cards::

    [plateau]
    patience = 3       # validations without a gain of more than min_delta dB ...
    min_delta = 0.02
    gamma = 0.2        # ... multiply the learning rate by gamma ...
    drops = 1          # ... this many times; the next plateau stops the run (converged)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from refsr_cli.errors import RefsrError

DROP, CONVERGED = "lr_drop", "converged"


@dataclass
class PlateauRule:
    patience: int
    min_delta: float = 0.02
    gamma: float = 0.2
    drops: int = 1
    # Progress, saved in the training state so that a resumed run continues the same count.
    best: float | None = None
    since: int = 0
    dropped: int = 0
    converged_at: int | None = None

    @classmethod
    def from_config(cls, table: dict | None) -> "PlateauRule | None":
        """The rule of a run configuration's ``plateau`` table (``None`` or empty: no rule)."""
        if not table:
            return None
        settings = {"patience", "min_delta", "gamma", "drops"}
        unknown = set(table) - settings
        if unknown or "patience" not in table:
            raise RefsrError(f"[plateau] takes {', '.join(sorted(settings))} (patience required); "
                             f"got {', '.join(sorted(table))}")
        rule = cls(**table)
        if rule.patience < 1 or rule.drops < 0 or not 0 < rule.gamma < 1 or rule.min_delta < 0:
            raise RefsrError(f"[plateau] needs patience ≥ 1, drops ≥ 0, 0 < gamma < 1, min_delta ≥ 0: {table}")
        return rule

    def observe(self, psnr: float, iteration: int) -> str | None:
        """Record one validation; returns ``DROP`` (lower the learning rate now), ``CONVERGED`` (stop
        now) or ``None``."""
        if self.best is None or psnr > self.best + self.min_delta:
            self.best, self.since = psnr, 0
            return None
        self.since += 1
        if self.since < self.patience:
            return None
        self.since = 0
        if self.dropped < self.drops:
            self.dropped += 1
            return DROP
        self.converged_at = iteration
        return CONVERGED

    def state(self) -> dict:
        return asdict(self)

    def load_state(self, state: dict) -> None:
        """Continue the count of a resumed run (its settings stay those of this run's configuration)."""
        for name in ("best", "since", "dropped", "converged_at"):
            setattr(self, name, state[name])

    def describe(self) -> str:
        return (f"stopped when {self.patience} validations in a row did not raise the best PSNR by more "
                f"than {self.min_delta} dB, after {self.drops} learning-rate drop(s) ×{self.gamma} on "
                f"earlier such plateaus")

