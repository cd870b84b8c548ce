"""The explanation panel read back from its PNG: tile size, titles (drawn and in the iTXt
chunk), the colour bar, and the tiles' pixels at their boxes."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from training.explain.image import ImageExplanation
from training.explain.overlay import overlay, png_bytes
from training.explain.panel import (
    BACKGROUND,
    MAX_TILE_SIDE,
    MIN_TILE_SIDE,
    PNG_KEY,
    Tile,
    render_panel,
    tile_side,
)
from training.predict import Prediction


def _prediction(malignant: float) -> Prediction:
    probabilities = {"benign": 1 - malignant, "malignant": malignant}
    top = max(probabilities, key=probabilities.__getitem__)
    return Prediction(
        model="derm",
        version=2,
        weights_sha256="0" * 64,
        probabilities=probabilities,
        top_class=top,
        top_probability=probabilities[top],
    )


def _explanation(source_shape: tuple[int, ...] = (40, 48, 3)) -> ImageExplanation:
    """A 48-px explanation against PGD: gradcam | attention | attacked image | attacked maps."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 48, 3)).astype(np.uint8)
    heat = np.outer(np.hanning(7), np.hanning(7))
    overlays = {
        "gradcam": png_bytes(overlay(image, heat)),
        "attention": png_bytes(overlay(image, heat.T)),
        "adversarial_image": png_bytes(image),
        "gradcam_adversarial": png_bytes(overlay(image, heat[::-1])),
    }
    return ImageExplanation(
        prediction=_prediction(0.8),
        method="gradcam",
        layer="conv5_block3_out",
        class_explained="malignant",
        overlays=overlays,
        adversarial_prediction=_prediction(0.1),
        attack={"name": "pgd", "norm": "inf", "epsilon": 4.0, "steps": 10},
        source_shape=source_shape,
    )


def _read(png: bytes) -> tuple[np.ndarray, dict]:
    """(RGB pixels, the panel's iTXt layout), as a client would read them."""
    with Image.open(io.BytesIO(png)) as image:
        layout = json.loads(image.text[PNG_KEY])
        return np.asarray(image.convert("RGB")), layout


def test_the_panel_is_readable_size_titled_and_has_a_colour_bar() -> None:
    explanation = _explanation()
    pixels, layout = _read(explanation.panel_png())

    tiles = layout["tiles"]
    assert [tile["key"] for tile in tiles] == list(explanation.overlays)
    assert pixels.shape[0] >= MIN_TILE_SIDE and pixels.shape[1] >= 4 * MIN_TILE_SIDE
    for tile in tiles:
        left, top, width, height = tile["box"]
        assert width == height == MIN_TILE_SIDE  # 48-px overlays of a 48×40 image
        # the title band holds ink (drawn text), on the background elsewhere
        x, y, w, h = tile["title_box"]
        band = pixels[y : y + h, x : x + w]
        assert (band < 100).all(axis=2).sum() > 200, tile["key"]
        assert (band == BACKGROUND).all(axis=2).mean() > 0.5
        # the tile is the overlay, nearest-neighbour upsampled
        source = cv2.cvtColor(
            cv2.imdecode(np.frombuffer(explanation.overlays[tile["key"]], np.uint8), 1),
            cv2.COLOR_BGR2RGB,
        )
        expected = cv2.resize(source, (width, height), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(pixels[top : top + height, left : left + width], expected)
    assert tiles[0]["title"] == ["clean", "gradcam | derm v2", "p(malignant) = 0.800"]
    assert tiles[2]["title"] == [
        "attacked: pgd L∞ ε=4/255",
        "image | derm v2",
        "p(malignant) = 0.100, top benign",
    ]
    # the colour bar is the jet ramp, high (red end) at the top
    x, y, w, h = layout["colorbar"]["box"]
    column = pixels[y : y + h, x + w // 2]
    ramp = np.linspace(255, 0, h).round().astype(np.uint8)[:, None]
    jet = cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)[:, 0]
    assert np.array_equal(column, jet)
    assert column[0, 0] > 100 and column[0, 2] < 50  # red at the top
    assert column[-1, 2] > 100 and column[-1, 0] < 50  # blue at the bottom


def test_an_override_titles_the_attacked_tiles() -> None:
    """/explain with robustness=flip shows the smallest flip, not an attack of its own."""
    _, layout = _read(_explanation().panel_png("smallest flip L∞ ε=2.5/255 (pgd)"))
    titles = {tile["key"]: tile["title"][0] for tile in layout["tiles"]}
    assert titles["gradcam"] == "clean"
    assert titles["gradcam_adversarial"] == "attacked: smallest flip L∞ ε=2.5/255 (pgd)"


@pytest.mark.parametrize(
    ("source_shape", "side"),
    [
        (None, MIN_TILE_SIDE),
        ((28, 28), MIN_TILE_SIDE),
        ((700, 600, 3), 700),
        ((4000, 3000), MAX_TILE_SIDE),
    ],
)
def test_tiles_are_at_least_512_px_or_the_source_size_up_to_a_cap(source_shape, side) -> None:
    assert tile_side(source_shape) == side


def test_the_panel_follows_the_source_size() -> None:
    pixels, layout = _read(_explanation((700, 650)).panel_png())
    assert {tuple(tile["box"][2:]) for tile in layout["tiles"]} == {(700, 700)}
    assert pixels.shape[0] > 700


def test_long_and_non_ascii_titles_stay_inside_their_tile() -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    title = ("clean", "gradcam | modèle-pour-la-dermatoscopie-" + "x" * 200, "p(bénin) = 0.5")
    pixels, layout = _read(render_panel([Tile("gradcam", title, rgb)], 512))
    assert layout["tiles"][0]["title"] == list(title)  # the chunk keeps the full Unicode title
    x, y, w, h = layout["tiles"][0]["title_box"]
    # nothing drawn in the gap between the tile's title and the colour bar
    bar_left = layout["colorbar"]["box"][0]
    gap = pixels[y : y + h, x + w + 2 : bar_left - 2]
    assert (gap == BACKGROUND).all()


def test_bad_tiles_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one tile"):
        render_panel([], 512)
    with pytest.raises(ValueError, match=r"tile 'x' must be \(H, W, 3\) uint8"):
        render_panel([Tile("x", ("t",), np.zeros((4, 4), np.uint8))], 512)
