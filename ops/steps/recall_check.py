"""Is a rebuilt HNSW index worse than the one it replaces? A paired comparison with a confidence bound.

Both indexes answer the same queries (stored vectors sampled at random); each query's recall@k is
the share of its exact k nearest neighbours found. The rebuilt index is refused only when the
evidence says it is worse beyond a tolerance: the one-sided upper confidence bound of the mean
per-query difference (new - old) lies below -TOLERANCE, or (where the old index reached the
absolute floor, or there is no old index to compare with) the upper bound of the new index's mean
recall lies below the floor. Noise alone then refuses a good index with a probability of at most
1 - CONFIDENCE; an index truly worse by TOLERANCE plus about twice the bound's margin is refused
with at least that probability.

The queries are asked in two looks (`compare_in_looks`): the first FIRST_LOOK (FIRST_LOOK_REPAIRED
for a compaction), then all of them. The first look ends the check only when it shows the new index
kept beyond doubt (the lower bound of the difference above -TOLERANCE and, where the floor applies,
the lower bound of the new recall above it); it never refuses. A refusal is decided on all the
queries by the rule above, so noise refuses a good index no more often than with one look, and an
index truly worse as above passes the first look with a probability of at most 1 - CONFIDENCE. A
compaction, whose graph is the old one repaired, answers almost exactly as the old index (paired
differences near zero) and usually ends at the first look; a fresh graph differs query by query and
usually needs all of them.

The old index is asked only when it could matter. On the first look the new index is measured
alone first: when the lower bound of its recall is at least 1 - TOLERANCE (and the floor), no index,
the old one included, can be better than it by more than TOLERANCE except by the chance
1 - CONFIDENCE, so it is kept without loading the old index (`beyond_any_old`). An index truly worse
than the old one by more than TOLERANCE passes this shortcut, or the paired first look, each with a
probability of at most 1 - CONFIDENCE.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

Recalls = npt.NDArray[np.float64]

TOLERANCE = 0.01
"""Graph construction is randomised: a fresh graph may lose this much mean recall and still pass."""
FLOOR = 0.95
CONFIDENCE = 0.999
_Z = 3.090232306167813  # one-sided 99.9% normal quantile
MIN_QUERIES = 11
"""With fewer queries (an index of fewer vectors) nothing is refused: there is no sound bound."""
FIRST_LOOK = 250
"""Queries of the first look at a fresh graph (the paired bound's margin there is about twice that
at 1,000)."""
FIRST_LOOK_REPAIRED = 100
"""Queries of the first look at a repaired (compacted) graph: it answers almost as the old one, so
the paired differences are near zero and fewer queries settle it (on 50,000 x 384 at 20% and 50%
deleted, 100 queries settled both compactions; for the rebuilds 100 settled one of the two, 250 both)."""


@dataclass(frozen=True)
class RecallComparison:
    queries: int
    new: float
    new_upper: float
    new_lower: float
    old: float | None = None
    old_upper: float | None = None
    difference: float | None = None
    difference_upper: float | None = None
    difference_lower: float | None = None
    old_not_needed: bool = False
    """Kept on the new index's recall alone (`beyond_any_old`): the old index was not asked."""

    @property
    def beyond_any_old(self) -> bool:
        """Whether no index can be better than the new one by more than TOLERANCE (its recall's lower
        bound is within TOLERANCE of 1, and above the floor): the old one need not be asked."""
        return self.new_lower >= max(1.0 - TOLERANCE, FLOOR)

    @property
    def refusal(self) -> str | None:
        """Why the rebuilt index is refused, or None when it is kept."""
        if self.difference_upper is not None and self.difference_upper < -TOLERANCE:
            return f"it is worse than the old index beyond the tolerance of {TOLERANCE}"
        if (self.old is None or self.old >= FLOOR) and self.new_upper < FLOOR:
            reached = "" if self.old is None else " that the old index reached"
            return f"it is below the floor of {FLOOR}{reached}"
        return None

    @property
    def kept_beyond_doubt(self) -> bool:
        """Whether more queries could refuse the new index only by the chance 1 - CONFIDENCE."""
        if self.difference_lower is not None and self.difference_lower <= -TOLERANCE:
            return False
        return self.new_lower >= FLOOR or (self.old_upper is not None and self.old_upper < FLOOR)

    def describe(self, k: int, ef: int) -> str:
        """The measured figures, e.g. for the notes and a refusal."""
        level = f"{CONFIDENCE:.1%}".replace(".0%", "%")
        text = f"recall@{k} at ef {ef} on {self.queries:,} stored vectors: new {self.new:.4f}"
        if self.old_not_needed:
            return (
                f"{text} (lower {level} bound {self.new_lower:.4f}: no index is better by more than "
                f"{TOLERANCE}; the old one was not asked)"
            )
        if self.old is None or self.difference is None or self.difference_upper is None:
            return f"{text} (upper {level} bound {self.new_upper:.4f}; no old index to compare)"
        return (
            f"{text}, old {self.old:.4f}, paired difference {self.difference:+.4f} "
            f"(upper {level} bound {self.difference_upper:+.4f})"
        )


def compare(new: Recalls, old: Recalls | None) -> RecallComparison:
    """Per-query recalls of the rebuilt index and (same queries, same order) of the old one."""
    new = np.asarray(new, dtype=np.float64)
    mean, lower, upper = _bounds(new)
    if old is None:
        return RecallComparison(queries=len(new), new=mean, new_upper=upper, new_lower=lower)
    old = np.asarray(old, dtype=np.float64)
    if old.shape != new.shape:
        raise ValueError(f"{len(old)} old recalls for {len(new)} queries")
    difference, difference_lower, difference_upper = _bounds(new - old)
    old_mean, _, old_upper = _bounds(old)
    return RecallComparison(
        queries=len(new),
        new=mean,
        new_upper=upper,
        new_lower=lower,
        old=old_mean,
        old_upper=old_upper,
        difference=difference,
        difference_upper=difference_upper,
        difference_lower=difference_lower,
    )


Looked = Callable[[int, int], Recalls]
"""Per-query recalls of an index for queries start:stop (the old index's after the new one's)."""


def compare_in_looks(
    new_recalls: Looked, old_recalls: Looked | None, queries: int, first_look: int = FIRST_LOOK
) -> RecallComparison:
    """The new index alone on the first `first_look` queries when no index can beat it by more than
    TOLERANCE; else the paired comparison on them when it keeps the new index beyond doubt; else
    the paired comparison on all `queries` (module docstring). `old_recalls` None: there is no old
    index to ask (a damaged graph)."""
    first = min(first_look, queries)
    new = new_recalls(0, first)
    alone = compare(new, None)
    if old_recalls is not None and alone.beyond_any_old:
        return replace(alone, old_not_needed=True)
    old = None if old_recalls is None else old_recalls(0, first)
    comparison = compare(new, old)
    if first == queries or comparison.kept_beyond_doubt:
        return comparison
    more_new = new_recalls(first, queries)
    both_old = None if old_recalls is None or old is None else np.concatenate([old, old_recalls(first, queries)])
    return compare(np.concatenate([new, more_new]), both_old)


def _bounds(values: Recalls) -> tuple[float, float, float]:
    """The mean and its one-sided lower and upper confidence bounds (Student t; too few values:
    no bounds)."""
    n = len(values)
    if n == 0:
        return 1.0, 1.0, 1.0
    mean = float(values.mean())
    if n < MIN_QUERIES:
        return mean, -math.inf, math.inf
    margin = _t_quantile(n - 1) * float(values.std(ddof=1)) / math.sqrt(n)
    return mean, mean - margin, mean + margin


def _t_quantile(df: int) -> float:
    """Student t quantile at CONFIDENCE, by the Cornish-Fisher expansion around the normal one
    (within 0.2% of the exact value from 10 degrees of freedom up; too low below, hence MIN_QUERIES)."""
    z = _Z
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3
