"""Our Grad-CAM / Grad-CAM++ against tf-keras-vis (a reference implementation) on ResNet-50.

Both architectures at 128 px, so ``conv5_block3_out`` is a 4×4 map, with seeded weights and
structured images (bright discs on a dark background) so the maps are not degenerate. The maps
are compared at feature-map resolution (``expand_cam=False``): upsampling differs between the two
(cv2 half-pixel bilinear vs scipy ``zoom``) and would only blur the comparison. tf-keras-vis
min-max-normalises, we divide by the maximum; Pearson correlation ignores that difference, and
the min-max-normalised maps must agree too.

tf-keras-vis is a test-only dependency (``pip install tf-keras-vis``); the test skips without it.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training.explain import GradCAM, GradCAMPlusPlus, pearson
from training.models import build_model

tf_keras_vis_gradcam = pytest.importorskip("tf_keras_vis.gradcam")
tf_keras_vis_gradcam_pp = pytest.importorskip("tf_keras_vis.gradcam_plus_plus")
scores = pytest.importorskip("tf_keras_vis.utils.scores")

SIZE, CLASSES, LAYER = 128, 3, "conv5_block3_out"
pytestmark = pytest.mark.slow


def _images(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    images = []
    for _ in range(count):
        image = np.full((SIZE, SIZE, 3), 40.0) + rng.normal(0.0, 10.0, (SIZE, SIZE, 3))
        for _ in range(2):
            centre_row, centre_col = rng.uniform(16, SIZE - 16, 2)
            disc = np.hypot(rows - centre_row, cols - centre_col) < rng.uniform(8, 20)
            image += disc[..., None] * rng.uniform(80, 200, 3)
        images.append(np.clip(image, 0, 255))
    return np.stack(images).astype("float32")


PIXELS = _images(4, seed=0)


@pytest.fixture(scope="module", params=["baseline", "attention"])
def model(request) -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_model(request.param, num_classes=CLASSES, input_size=SIZE)


def _min_max(maps: np.ndarray) -> np.ndarray:
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    return (maps - low) / (high - low + 1e-7)


@pytest.mark.parametrize(
    ("ours", "reference"),
    [
        (GradCAM, tf_keras_vis_gradcam.Gradcam),
        (GradCAMPlusPlus, tf_keras_vis_gradcam_pp.GradcamPlusPlus),
    ],
    ids=["gradcam", "gradcam++"],
)
def test_matches_tf_keras_vis(model, ours, reference):
    explainer = ours(LAYER)
    visualiser = reference(model, model_modifier=None, clone=False)
    correlations = []
    for class_index in range(CLASSES):
        mine = explainer(model, PIXELS, class_index).maps
        theirs = np.asarray(
            visualiser(
                scores.CategoricalScore([class_index] * len(PIXELS)),
                PIXELS,
                penultimate_layer=LAYER,
                seek_penultimate_conv_layer=False,
                normalize_cam=True,
                expand_cam=False,
            )
        )
        assert mine.shape == theirs.shape == (len(PIXELS), 4, 4)
        r = pearson(mine, theirs)
        defined = ~np.isnan(r)  # a map with no positive evidence is constant: no correlation
        np.testing.assert_array_equal(defined, mine.std(axis=(1, 2)) > 0)
        np.testing.assert_allclose(_min_max(mine)[defined], theirs[defined], atol=2e-3)
        correlations.extend(r[defined])
    print(
        f"{model.name} {explainer.name}: {len(correlations)} maps, "
        f"min Pearson r = {min(correlations):.8f} (1 - r = {1 - min(correlations):.1e})"
    )
    assert len(correlations) >= 8  # most of the 12 (image, class) maps are non-trivial
    assert min(correlations) > 0.99
