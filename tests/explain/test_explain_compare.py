"""Map comparison metrics on hand-made maps, and the lesion-mask scores."""

from __future__ import annotations

import numpy as np
import pytest

from training.explain import (
    MapComparison,
    MapComparisonSummary,
    aggregate,
    centre_of_mass,
    centre_of_mass_shift,
    compare_maps,
    energy_inside,
    pearson,
    pointing_game,
    top_region_iou,
    top_region_mask,
)


def _square(size: int, row: int, col: int, half: int = 1) -> np.ndarray:
    """A square of ones centred on (row, col): its centre of mass is exactly (row, col)."""
    out = np.zeros((size, size))
    out[row - half : row + half + 1, col - half : col + half + 1] = 1.0
    return out


def test_identical_maps():
    maps = np.random.default_rng(0).uniform(size=(3, 7, 7))
    np.testing.assert_allclose(pearson(maps, maps), 1.0)
    np.testing.assert_allclose(top_region_iou(maps, maps), 1.0)
    shift, fraction = centre_of_mass_shift(maps, maps)
    np.testing.assert_allclose(shift, 0.0, atol=1e-12)
    np.testing.assert_allclose(fraction, 0.0, atol=1e-12)
    for comparison in compare_maps(maps, maps):
        assert comparison.pearson == pytest.approx(1.0)
        assert comparison.top_iou == 1.0 and comparison.shift_px == pytest.approx(0.0, abs=1e-12)


def test_shifted_blob_moves_the_centre_by_the_shift():
    clean, moved = _square(16, 5, 5), _square(16, 8, 9)  # shift (3, 4): 5 px
    np.testing.assert_allclose(centre_of_mass(clean), [5.0, 5.0])
    shift, fraction = centre_of_mass_shift(clean, moved)
    assert shift == pytest.approx(5.0)
    assert fraction == pytest.approx(5.0 / np.hypot(16, 16))
    assert top_region_iou(clean, moved) < 1.0
    [comparison] = compare_maps(clean[None], moved[None])
    assert comparison.shift_px == pytest.approx(5.0)
    assert comparison.pearson < 0.0  # disjoint blobs on a zero background anti-correlate


def test_pearson_is_scale_invariant_and_sign_aware():
    maps = np.random.default_rng(1).uniform(size=(2, 5, 5))
    np.testing.assert_allclose(pearson(maps, 3 * maps + 1), 1.0)
    np.testing.assert_allclose(pearson(maps, -maps), -1.0)
    assert np.isnan(pearson(np.ones((5, 5)), maps[0]))


def test_top_region_masks_follow_the_quantile():
    ramp = np.arange(100, dtype=float).reshape(10, 10)
    mask = top_region_mask(ramp, 0.2)
    assert mask.sum() == 20 and mask[-2:].all()  # the two bottom rows hold the top 20 values
    assert top_region_mask(ramp, 0.5).sum() == 50
    flipped = ramp[::-1]
    assert top_region_iou(ramp, flipped, 0.2) == 0.0
    assert top_region_iou(ramp, flipped, 0.6) == pytest.approx(20 / 100)  # rows 4-5 shared
    with pytest.raises(ValueError):
        top_region_mask(ramp, 0.0)


def test_top_region_ignores_the_zero_floor_of_sparse_maps():
    sparse = _square(16, 5, 5)  # 9 of 256 pixels positive: the 80% quantile is 0
    mask = top_region_mask(sparse, 0.2)
    np.testing.assert_array_equal(mask, sparse > 0)
    assert top_region_iou(sparse, _square(16, 5, 6)) == pytest.approx(6 / 12)
    assert top_region_iou(sparse, _square(16, 12, 12)) == 0.0
    assert not top_region_mask(np.ones((4, 4))).any()
    assert np.isnan(top_region_iou(np.ones((4, 4)), np.zeros((4, 4))))


def test_batch_results_and_undefined_values():
    clean = np.stack([_square(8, 3, 3), np.zeros((8, 8))])
    adversarial = np.stack([_square(8, 3, 4), _square(8, 4, 4)])
    comparisons = compare_maps(clean, adversarial)
    assert len(comparisons) == 2 and all(isinstance(c, MapComparison) for c in comparisons)
    assert comparisons[0].shift_px == pytest.approx(1.0)
    assert comparisons[1].pearson is None and comparisons[1].shift_px is None
    assert comparisons[1].top_iou == 0.0  # an empty region against a non-empty one
    with pytest.raises(ValueError, match="same shape"):
        compare_maps(clean, adversarial[:, :4])


def test_aggregate_summarises_defined_values():
    comparisons = [
        MapComparison(pearson=1.0, top_iou=1.0, shift_px=0.0, shift_fraction=0.0),
        MapComparison(pearson=0.5, top_iou=0.5, shift_px=2.0, shift_fraction=0.1),
        MapComparison(pearson=None, top_iou=0.0, shift_px=None, shift_fraction=None),
    ]
    summary = aggregate(comparisons)
    assert isinstance(summary, MapComparisonSummary) and summary.n == 3
    assert summary.pearson.count == 2 and summary.pearson.mean == pytest.approx(0.75)
    assert summary.pearson.median == pytest.approx(0.75)
    assert summary.pearson.std == pytest.approx(0.25)
    assert summary.top_iou.count == 3 and summary.top_iou.median == pytest.approx(0.5)
    assert summary.shift_px.mean == pytest.approx(1.0)
    empty = aggregate([])
    assert empty.n == 0 and empty.pearson.count == 0 and empty.pearson.mean is None
    assert MapComparisonSummary.model_validate_json(summary.model_dump_json()) == summary


def test_energy_inside_a_mask():
    heat = np.zeros((4, 4))
    heat[:2, :2] = 1.0  # top-left quarter
    mask = np.zeros((16, 16), dtype=bool)
    mask[:8, :8] = True
    assert energy_inside(heat, np.ones((16, 16))) == pytest.approx(1.0)
    assert energy_inside(np.ones((4, 4)), mask) == pytest.approx(0.25)
    # bilinear upsampling spreads a little energy across the quarter's edge
    assert 0.8 < energy_inside(heat, mask) < 1.0
    assert energy_inside(heat, ~mask) == pytest.approx(1 - energy_inside(heat, mask))
    batch = energy_inside(np.stack([heat, np.ones((4, 4)), np.zeros((4, 4))]), np.stack([mask] * 3))
    assert batch.shape == (3,) and np.isnan(batch[2])


def test_pointing_game():
    heat = np.zeros((4, 4))
    heat[0, 3] = 1.0  # top-right
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[:8, 8:] = 1
    assert pointing_game(heat, mask) is True
    assert pointing_game(heat, 1 - mask) is False
    far = np.zeros((16, 16), dtype=np.uint8)
    far[:4, 8:10] = 1  # bilinear: the upsampled maximum is first reached at (0, 14), 5 px away
    assert pointing_game(heat, far) is False
    assert pointing_game(heat, far, tolerance=4) is False
    assert pointing_game(heat, far, tolerance=5) is True
    hits = pointing_game(np.stack([heat, heat[:, ::-1], np.zeros((4, 4))]), np.stack([mask] * 3))
    np.testing.assert_array_equal(hits, [True, False, False])  # all-zero maps miss
