"""How many seeds a scale needs: the expected 95% Welch interval of a comparison, and the chance that it
resolves a given true difference, from a seed-to-seed standard deviation measured beforehand.

    python -m fullbatch.reproduce.power --sd 0.86 --sd-df 8 --difference 2

A scale is sized with this before any of its validation results exist (docs/reproduce.md). The standard deviation
is an estimate from few seeds, so the table also uses its upper 90% confidence bound (chi-square, `--sd-df`
degrees of freedom): seeds chosen against that bound still resolve the target if the spread was underestimated.
"""
import math
from dataclasses import dataclass

from scipy import stats

from fullbatch.cli import OneLineParser
from fullbatch.reproduce.intervals import LEVEL


def welch_df(sd_a, n_a, sd_b, n_b):
    """Welch-Satterthwaite degrees of freedom of mean(a) - mean(b)."""
    va, vb = sd_a**2 / n_a, sd_b**2 / n_b
    return (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))


def expected_half_width(sd_a, n_a, sd_b, n_b, level=LEVEL):
    """The half-width of the 95% Welch interval when the seeds' standard deviations equal `sd_a`, `sd_b`."""
    scale = math.sqrt(sd_a**2 / n_a + sd_b**2 / n_b)
    return float(stats.t.ppf(0.5 + level / 2, welch_df(sd_a, n_a, sd_b, n_b))) * scale


def resolving_power(difference, sd_a, n_a, sd_b, n_b, level=LEVEL):
    """The chance that the interval excludes 0 when the true difference is `difference`: a two-sided t-test at
    1 - level, with the noncentral t distribution at Welch's degrees of freedom."""
    df = welch_df(sd_a, n_a, sd_b, n_b)
    critical = stats.t.ppf(0.5 + level / 2, df)
    shift = difference / math.sqrt(sd_a**2 / n_a + sd_b**2 / n_b)
    return float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))


def sd_upper_bound(sd, df, confidence=0.90):
    """The upper `confidence` bound of a standard deviation estimated with `df` degrees of freedom."""
    return sd * math.sqrt(df / stats.chi2.ppf(1 - confidence, df))


@dataclass(frozen=True)
class Plan:
    seeds: int
    half_width: float
    half_width_at_bound: float
    power: float
    power_at_bound: float


def plans(sd, sd_df, difference, seeds=range(3, 11)):
    """One Plan per seed count (the same for both rows of a comparison)."""
    bound = sd_upper_bound(sd, sd_df)
    return [Plan(n, expected_half_width(sd, n, sd, n), expected_half_width(bound, n, bound, n),
                 resolving_power(difference, sd, n, sd, n), resolving_power(difference, bound, n, bound, n))
            for n in seeds]


def main(argv=None):
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd", type=float, required=True, help="seed-to-seed standard deviation (points)")
    parser.add_argument("--sd-df", type=int, required=True, help="degrees of freedom of that estimate")
    parser.add_argument("--difference", type=float, default=2.0, help="the true difference to resolve (points)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.sd) and args.sd > 0 and args.sd_df >= 1 and math.isfinite(args.difference)
            and args.difference > 0):
        parser.error("expected --sd > 0, --sd-df >= 1 and --difference > 0")
    bound = sd_upper_bound(args.sd, args.sd_df)
    print(f"sd {args.sd:.3g} points (upper 90% bound {bound:.3g} from {args.sd_df} degrees of freedom); "
          f"a true difference of {args.difference:g} points; the same seeds on both rows")
    print("| seeds per row | expected half-width | at the sd bound | chance to resolve | at the sd bound |")
    print("|---|---|---|---|---|")
    for plan in plans(args.sd, args.sd_df, args.difference):
        print(f"| {plan.seeds} | {plan.half_width:.2f} | {plan.half_width_at_bound:.2f} | {plan.power:.2f} | "
              f"{plan.power_at_bound:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
