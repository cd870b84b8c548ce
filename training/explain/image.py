"""Explain one image end to end: prediction, Grad-CAM and attention overlays, clean vs attacked.

This is what ``medrobust explain`` and the service's ``/explain`` call; it holds no state, so one
loaded model serves concurrent requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.attacks import Attack
from training.explain.attention import aggregated_attention, has_attention
from training.explain.cam import get_method, upsample
from training.explain.compare import MapComparison, compare_maps
from training.explain.overlay import overlay, png_bytes
from training.predict import Prediction, prediction_from_probabilities
from training.preprocess import prepare_image
from training.store import LoadedModel


@dataclass(frozen=True)
class ImageExplanation:
    """Overlays are PNG bytes keyed by what they show, in display order.

    Keys: ``gradcam`` (or the method's name), ``attention`` for attention models; with an
    attack also ``adversarial_image`` and the same maps suffixed ``_adversarial``.
    """

    prediction: Prediction
    method: str
    layer: str
    class_explained: str
    overlays: dict[str, bytes] = field(default_factory=dict)
    adversarial_prediction: Prediction | None = None
    comparison: MapComparison | None = None
    attack: dict | None = None

    def panel_png(self) -> bytes:
        """All overlays side by side in one PNG (for the CLI and quick looks)."""
        import cv2

        tiles = []
        for name, png in self.overlays.items():
            tile = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            if tile is None:
                raise RuntimeError(f"the {name} overlay is not a decodable image")
            tiles.append(tile)
        ok, encoded = cv2.imencode(".png", np.concatenate(tiles, axis=1))
        if not ok:
            raise RuntimeError("could not encode the panel")
        return encoded.tobytes()


def explain_image(
    loaded: LoadedModel,
    image: np.ndarray,
    method: str = "gradcam",
    class_index: int | None = None,
    attack: Attack | None = None,
    alpha: float = 0.4,
    adversarial: np.ndarray | None = None,
) -> ImageExplanation:
    """Explain ``image`` (decoded, any size) with ``method`` at the model's last conv block.

    The class explained is ``class_index`` or the clean prediction; the adversarial map (if an
    attack is given, untargeted against that class) explains the same class, so the comparison
    shows where the evidence moved rather than a different question. ``adversarial``: an
    adversarial copy of the *prepared* image found elsewhere (e.g. the smallest flip of
    :mod:`training.trust`), explained instead of running ``attack``.
    """
    manifest = loaded.manifest
    pixels = prepare_image(image, manifest.preprocess)[None]
    size = (pixels.shape[1], pixels.shape[2])
    cam = get_method(method)
    clean = cam.explain(loaded.model, pixels, class_index)
    target = int(clean.class_indices[0])
    display = pixels[0]

    overlays = {method: png_bytes(overlay(display, upsample(clean.maps, size)[0], alpha))}
    attention = has_attention(loaded.model)
    if attention:
        overlays["attention"] = png_bytes(
            overlay(display, upsample(aggregated_attention(loaded.model, pixels), size)[0], alpha)
        )
    result = ImageExplanation(
        prediction=prediction_from_probabilities(manifest, clean.probabilities[0]),
        method=method,
        layer=cam.layer,
        class_explained=manifest.class_names[target],
        overlays=overlays,
    )
    if adversarial is not None:
        adversarial = np.asarray(adversarial, np.float32).reshape(pixels.shape)
    elif attack is not None:
        adversarial = attack.generate(loaded.model, pixels, np.array([target]))
    else:
        return result
    attacked = cam.explain(loaded.model, adversarial, target)
    overlays["adversarial_image"] = png_bytes(np.clip(adversarial[0], 0, 255).astype(np.uint8))
    overlays[f"{method}_adversarial"] = png_bytes(
        overlay(adversarial[0], upsample(attacked.maps, size)[0], alpha)
    )
    if attention:
        maps = upsample(aggregated_attention(loaded.model, adversarial), size)[0]
        overlays["attention_adversarial"] = png_bytes(overlay(adversarial[0], maps, alpha))
    return ImageExplanation(
        prediction=result.prediction,
        method=method,
        layer=cam.layer,
        class_explained=result.class_explained,
        overlays=overlays,
        adversarial_prediction=prediction_from_probabilities(manifest, attacked.probabilities[0]),
        comparison=compare_maps(clean.maps, attacked.maps)[0],
        attack=attack.params() if attack is not None else None,
    )
