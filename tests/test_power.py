"""The seed plan of a scale: expected Welch half-widths and the chance to resolve a difference, checked against
simulated seeds and hand-computed values."""
import math

import numpy as np
import pytest

from fullbatch.reproduce.intervals import welch_difference
from fullbatch.reproduce.power import expected_half_width, main, resolving_power, sd_upper_bound, welch_df


def test_the_expected_half_width_is_the_welch_interval_of_seeds_with_that_spread():
    rng = np.random.default_rng(0)
    for n_a, n_b, sd_a, sd_b in ((4, 4, 1.0, 1.0), (8, 6, 0.8, 1.3), (3, 5, 2.0, 0.5)):
        a = rng.standard_normal(n_a)
        b = rng.standard_normal(n_b)
        a = 40 + sd_a * (a - a.mean()) / a.std(ddof=1)  # samples whose standard deviation is exactly sd
        b = 38 + sd_b * (b - b.mean()) / b.std(ddof=1)
        interval = welch_difference(list(a), list(b))
        assert interval.half_width == pytest.approx(expected_half_width(sd_a, n_a, sd_b, n_b), rel=1e-9)
        assert interval.df == pytest.approx(welch_df(sd_a, n_a, sd_b, n_b), rel=1e-9)
    assert expected_half_width(1.0, 4, 1.0, 4) == pytest.approx(2.446912 * math.sqrt(0.5), rel=1e-6)  # t(0.975, 6)


def test_the_chance_to_resolve_matches_simulated_seeds():
    rng = np.random.default_rng(1)
    trials, n, sd, difference = 4000, 5, 1.0, 1.5
    hits = 0
    for _ in range(trials):
        interval = welch_difference(list(rng.normal(difference, sd, n)), list(rng.normal(0.0, sd, n)))
        hits += interval.excludes_zero
    predicted = resolving_power(difference, sd, n, sd, n)
    assert 0.3 < predicted < 0.9  # a case where the check has something to miss
    # Welch's df vary from sample to sample; the formula fixes them at their expected value, so allow 3 points
    assert abs(hits / trials - predicted) < 0.03, (hits / trials, predicted)
    assert resolving_power(0.0, sd, n, sd, n) == pytest.approx(0.05, abs=1e-9)


def test_the_upper_bound_of_a_standard_deviation_is_the_chi_square_one():
    assert sd_upper_bound(1.0, 8) == pytest.approx(math.sqrt(8 / 3.489539), rel=1e-6)  # chi2(0.10, 8)
    assert sd_upper_bound(1.0, 1000) == pytest.approx(1.0, abs=0.06)


def test_the_command_prints_one_row_per_seed_count_and_refuses_bad_input(capsys):
    assert main(["--sd", "1", "--sd-df", "8"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [int(line.split("|")[1]) for line in rows] == list(range(3, 11))
    with pytest.raises(SystemExit) as stopped:
        main(["--sd", "-1", "--sd-df", "8"])
    assert stopped.value.code == 2 and capsys.readouterr().err.startswith("fullbatch: expected --sd > 0")
