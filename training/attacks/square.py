"""Square Attack under the L∞ norm: a score-based black-box attack by random search.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020, Algorithm 1 and §3 (L∞).

It uses only the model's logits, never a gradient, so gradient masking cannot weaken it; that is
why AutoAttack runs it last. Per image it minimises the margin
``L = z_y − max_{j≠y} z_j`` (targeted: ``max_{j≠t} z_j − z_t``), fooled once ``L < 0``:

* start: vertical stripes, ``x + ε·s`` with one random sign ``s`` per column and channel;
* query ``i``: a random ``s×s`` square gets a random ``±ε`` per channel (a vertex of the ε-ball
  on that window); the proposal is kept only if it lowers ``L``. The side is
  ``s = round(√(p_i·H·W))`` (at least 1, at most ``H − 1``), where ``p_i`` starts at ``p_init``
  and halves at queries 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10 000 (the
  schedule is stretched to the ``queries`` budget).

Each image stops querying once fooled. (The reference code redraws a proposal that would leave
the window unchanged; here such a proposal is simply not accepted, costing one query.)

Input ``x``: float32 ``(N, H, W, 3)`` raw pixels in ``[0, 255]``; ``y``: int ``(N,)``. Output:
float32, same shape, in ``[clip_min, clip_max]`` with ``‖x_adv − x‖∞ ≤ ε`` (pixel units). All
randomness is drawn per image from ``(seed, sample_id)``, so an image follows the same search
in any batch.
"""

from __future__ import annotations

import bisect
from numbers import Real

import keras
import numpy as np

from training import gradients
from training.attacks._common import check_count
from training.attacks.base import Attack, AttackError

SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
"""Queries (out of 10 000) at which the window fraction p halves (paper, §A / reference code)."""
_STREAM = 0x5C  # keeps Square's draws apart from the random starts of the gradient attacks


def window_fraction(query: int, queries: int, p_init: float) -> float:
    """``p`` at ``query``: ``p_init`` halved once per schedule mark passed, on a 10 000 scale."""
    scaled = int(query / queries * 10_000)
    return p_init / 2 ** bisect.bisect_right(SCHEDULE, scaled)


def margin(logits: np.ndarray, onehot: np.ndarray, targeted: bool) -> np.ndarray:
    """Per-image margin to minimise; negative exactly when the attack has succeeded."""
    labelled = np.sum(logits * onehot, axis=1)
    others = np.max(np.where(onehot > 0, -np.inf, logits), axis=1)
    return others - labelled if targeted else labelled - others


class Square(Attack):
    """Square Attack (L∞): ``queries`` model evaluations per image at most, ``p_init`` the
    initial fraction of the image a square covers."""

    name = "square"
    kind = "black-box"
    norm = "inf"

    def __init__(
        self,
        epsilon: float,
        queries: int = 5000,
        p_init: float = 0.8,
        targeted: bool = False,
        clip_min: float = 0.0,
        clip_max: float = 255.0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            epsilon, targeted=targeted, clip_min=clip_min, clip_max=clip_max, seed=seed
        )
        self.queries = check_count(self.name, "queries", queries)
        if isinstance(p_init, bool) or not isinstance(p_init, Real) or not 0 < p_init <= 1:
            raise AttackError(f"{self.name}: p_init must be in (0, 1], got {p_init!r}")
        self.p_init: float = float(p_init)

    def _perturb(
        self, model: keras.Model, x: np.ndarray, onehot: np.ndarray, sample_ids: np.ndarray
    ) -> np.ndarray:
        n, height, width, channels = x.shape
        generators = [np.random.default_rng((self.seed, int(i), _STREAM)) for i in sample_ids]
        stripes = np.stack([g.choice([-1.0, 1.0], size=(1, width, channels)) for g in generators])
        # Every query's window corner (as fractions) and signs, drawn up front per image.
        corners = np.stack([g.uniform(size=(self.queries, 2)) for g in generators])
        signs = np.stack([g.choice([-1.0, 1.0], size=(self.queries, channels)) for g in generators])

        x_adv = np.clip(x + self.epsilon * stripes.astype(np.float32), self.clip_min, self.clip_max)
        loss = margin(gradients.logits(model, x_adv), onehot, self.targeted)
        rows, cols = np.arange(height), np.arange(width)
        for query in range(1, self.queries):
            active = np.flatnonzero(loss >= 0)
            if len(active) == 0:
                break
            p = window_fraction(query, self.queries, self.p_init)
            side = int(min(max(round(np.sqrt(p * height * width)), 1), height - 1, width - 1))
            top = np.floor(corners[active, query, 0] * (height - side + 1)).astype(int)
            left = np.floor(corners[active, query, 1] * (width - side + 1)).astype(int)
            in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
            in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
            window = (in_rows[:, :, None] & in_cols[:, None, :])[..., None]
            vertex = x[active] + self.epsilon * signs[active, query][:, None, None, :]
            vertex = np.clip(vertex, self.clip_min, self.clip_max).astype(np.float32)
            candidate = np.where(window, vertex, x_adv[active])
            proposed = margin(gradients.logits(model, candidate), onehot[active], self.targeted)
            better = proposed < loss[active]
            x_adv[active[better]] = candidate[better]
            loss[active[better]] = proposed[better]
        return x_adv
