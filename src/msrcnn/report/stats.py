"""Our numbers over seeds: the mean ± sample sd (:class:`Stat`), a difference with Welch's standard
error (:class:`Diff`), and the mask scoring gain's per-seed intervals (:class:`Intervals`)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

SIGNIFICANT_SE = 2.0  # a difference beyond this many standard errors is marked
MARK = "*"


class Stat(float):
    """Our number for a cell over the seeds of one configuration: the float's value is the mean;
    ``sd`` the sample standard deviation (None for one run), ``n`` the number of values, ``ratio``
    printed with three decimals (a correlation), ``mark`` a suffix (Table 7's stand-in)."""

    values: tuple[float, ...]
    n: int
    sd: float | None
    ratio: bool
    mark: str

    def __new__(cls, values: Iterable[float], ratio: bool = False, mark: str = "") -> Stat:
        values = tuple(float(v) for v in values)
        if not values:
            raise ValueError("a Stat needs at least one value")
        self = super().__new__(cls, statistics.fmean(values))
        self.values, self.n, self.ratio, self.mark = values, len(values), ratio, mark
        self.sd = statistics.stdev(values) if len(values) > 1 else None
        return self


class Ratio(float):
    """A value printed with three decimals (a correlation), not as a percentage."""


@dataclass(frozen=True)
class Diff:
    """A row's mean minus its baseline's, with Welch's standard error (None: n = 1 on a side)."""

    diff: float
    se: float | None

    @property
    def marked(self) -> bool:
        return self.se is not None and abs(self.diff) > SIGNIFICANT_SE * self.se


def welch(a: Stat, b: Stat) -> Diff:
    """``a - b`` with SE = sqrt(sd_a^2/n_a + sd_b^2/n_b); no SE when either side has one run."""
    if a.sd is None or b.sd is None:
        return Diff(float(a) - float(b), None)
    return Diff(float(a) - float(b), math.sqrt(a.sd**2 / a.n + b.sd**2 / b.n))


def legend(diff: str, baseline: str) -> str:
    """The note that reads our cells and the difference column ``diff`` (to ``baseline``)."""
    return (
        f"ours: mean \u00b1 sd (n finished seeds); {diff}: our mean minus {baseline}, (SE) its standard "
        f"error sqrt(sd_a\u00b2/n_a + sd_b\u00b2/n_b), n/a with one run on either side; "
        f"{MARK}: |diff| > {SIGNIFICANT_SE:g} SE"
    )


@dataclass(frozen=True)
class Intervals:
    """The mask scoring gain's 95% paired bootstrap interval of each finished seed, ``(AP, low, high)``
    per run. Not averaged over seeds (the mean of the bounds is no interval): each seed's interval is
    listed, with how many lie wholly above 0 (helps) and below 0 (hurts)."""

    values: tuple[tuple[float, float, float], ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def above(self) -> int:
        return sum(low > 0 for _, low, _ in self.values)

    @property
    def below(self) -> int:
        return sum(high < 0 for _, _, high in self.values)
