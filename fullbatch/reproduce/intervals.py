"""95% confidence intervals over seeds: a row's mean (t-distribution) and the difference between two rows'
means (Welch's t, unequal variances). A verdict follows the interval alone: it excludes 0, or it does not."""
import math
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    centre: float
    half_width: Optional[float]  # None: a single seed somewhere, no spread to build an interval from
    df: Optional[float] = None

    @property
    def excludes_zero(self):
        return None if self.half_width is None else abs(self.centre) > self.half_width

    def text(self, digits=2):
        if self.half_width is None:
            return f"{self.centre:.{digits}f}"
        return f"{self.centre:.{digits}f} ± {self.half_width:.{digits}f}"


def _from(result, centre):
    interval = result.confidence_interval(LEVEL)
    return Interval(centre, float(interval.high - interval.low) / 2, float(result.df))


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean and the half-width of its 95% interval, t-distribution with n-1 degrees of freedom."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean, None)
    if statistics.pstdev(values) == 0:
        return Interval(mean, 0.0, len(values) - 1)
    return _from(stats.ttest_1samp(values, 0.0), mean)


def welch_difference(a: Sequence[float], b: Sequence[float]) -> Interval:
    """mean(a) - mean(b) with its 95% Welch interval (Welch-Satterthwaite degrees of freedom). Seeds that all
    agree on both sides give a zero-width interval."""
    difference = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Interval(difference, None)
    if statistics.pstdev(a) == 0 and statistics.pstdev(b) == 0:
        return Interval(difference, 0.0, math.inf)
    return _from(stats.ttest_ind(a, b, equal_var=False), difference)
