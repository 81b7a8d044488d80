"""When a difference of two seed-averaged losses is real: the one seed-noise rule behind every verdict.

Each side of a comparison is the final loss of the same run at n seeds: mean m, sample std s (ddof 1).
The noise of the difference m_a - m_b is its standard error over seeds,

    noise = sqrt(s_a^2 / n_a + s_b^2 / n_b),

and the difference is **real when |m_a - m_b| > 2 x noise** (``K``). With fewer than two seeds on a side
there is no estimate and no verdict. Used by lr-curves (muP at the transferred lr against SP at its
own best lr), transfer (the best perturbed point against the benchmark) and compare (the best
architecture against the runner-up).

Why this rule: it is the two-standard-error test on a difference of means. It keeps what was sound in
compare's rule (both sides' spread, a 2x threshold) and adds what none of the three old rules had, the
number of seeds: with 2 seeds a side (every committed result but one) the noise equals compare's pooled
seed std sqrt((s_a^2 + s_b^2) / 2), and more seeds shrink it. It is a convention, not a
significance level: an std from 2 seeds is itself uncertain (1 degree of freedom), so a ratio near 2 is
a weak call either way; the reports print the ratio so that a reader can tell.

Its history (the three rules it replaced, and the one verdict that changed) is in docs/experiments.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

K = 2.0  # a difference is real beyond K x its noise
RULE = (f"a difference of two seed means is real when it exceeds {K:g}x its seed noise, "
        "the standard error sqrt(s_a²/n_a + s_b²/n_b) (s: the std over seeds, n: seeds)")


@dataclass(frozen=True)
class Seeds:
    """One side of a comparison: the mean, sample std (nan with one seed) and count of its seeds' losses."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, losses: Iterable[float]) -> Seeds:
        values = np.asarray(list(losses), dtype=np.float64)
        if not len(values):
            return cls(math.nan, math.nan, 0)
        std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        return cls(float(np.mean(values)), std, len(values))


@dataclass(frozen=True)
class Difference:
    """``a - b`` and its seed noise; ``real`` is the verdict of the rule."""

    delta: float
    noise: float  # nan: no estimate (fewer than two seeds on a side)

    @property
    def estimated(self) -> bool:
        return math.isfinite(self.noise)

    @property
    def ratio(self) -> float:
        """|delta| / noise (nan without an estimate; inf for a nonzero difference of noiseless sides)."""
        if not self.estimated:
            return math.nan
        if self.noise == 0:
            return 0.0 if self.delta == 0 else math.inf
        return abs(self.delta) / self.noise

    @property
    def real(self) -> bool:
        return self.estimated and abs(self.delta) > K * self.noise


def difference(a: Seeds, b: Seeds) -> Difference:
    """The difference of the two sides' means and its standard error (the module's rule)."""
    if a.n < 2 or b.n < 2 or not (math.isfinite(a.std) and math.isfinite(b.std)):
        noise = math.nan
    else:
        noise = math.sqrt(a.std**2 / a.n + b.std**2 / b.n)
    return Difference(a.mean - b.mean, noise)
