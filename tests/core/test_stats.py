"""Wilson intervals and McNemar's exact test against known values and scipy."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from training.stats import mcnemar_exact_p, wilson_interval


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), Table I: 81/263 → 0.2553 to 0.3662
    low, high = wilson_interval(81, 263)
    assert low == pytest.approx(0.2553, abs=1e-4) and high == pytest.approx(0.3662, abs=1e-4)


def test_wilson_interval_stays_inside_zero_one_at_the_extremes():
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(0, 20)[1] > 0.1
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(20, 20)[0] < 0.9
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("only_a,only_b", [(1, 7), (10, 10), (0, 5), (3, 40), (25, 12)])
def test_mcnemar_exact_equals_a_two_sided_binomial_test_on_discordant_pairs(only_a, only_b):
    expected = binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert mcnemar_exact_p(only_a, only_b) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_without_discordant_pairs_is_one():
    assert mcnemar_exact_p(0, 0) == 1.0
