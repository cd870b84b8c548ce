"""Small exact statistics for robustness reports: Wilson intervals and McNemar's exact test.

Written out (rather than pulled from scipy) because both are a few lines and the report must be
reproducible bit for bit from its per-sample outcomes.
"""

from __future__ import annotations

import math

Z_95 = 1.959963984540054  # two-sided 95 % standard-normal quantile


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n is 0.

    Preferred over the normal approximation because robust accuracies sit near 0 or 1, where
    the Wald interval collapses or leaves [0, 1].
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs.

    ``only_a``: images model A gets right and B wrong; ``only_b`` the reverse. Under the null
    hypothesis each discordant pair is a fair coin, so the p-value is a binomial tail, doubled.
    """
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def paired_difference_interval(
    only_a: int, only_b: int, n: int, z: float = Z_95
) -> tuple[float, float]:
    """95 % interval for acc(A) − acc(B) on the same n images (Agresti–Min adjusted Wald).

    Only the discordant pairs carry information about a paired difference; adding ½ to each of
    the four cells (so ``n`` grows by 2) keeps the interval sensible when they are few or zero.
    """
    if n == 0:
        return -1.0, 1.0
    a, b, total = only_a + 0.5, only_b + 0.5, n + 2
    difference = (a - b) / total
    half = z * math.sqrt(max(a + b - (a - b) ** 2 / total, 0.0)) / total
    return max(-1.0, difference - half), min(1.0, difference + half)
