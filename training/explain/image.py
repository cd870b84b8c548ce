"""Explain one image end to end: prediction, Grad-CAM and attention overlays, clean vs attacked.

This is what ``medrobust explain`` and the service's ``/explain`` call; it holds no state, so one
loaded model serves concurrent requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from training.attacks import Attack
from training.explain.attention import aggregated_attention, has_attention
from training.explain.cam import get_method, upsample
from training.explain.compare import MapComparison, compare_maps
from training.explain.overlay import overlay, png_bytes
from training.explain.panel import Tile, render_panel, tile_side
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
    source_shape: tuple[int, ...] | None = None  # the image as given, before preparation

    def panel_png(self, attack_title: str | None = None) -> bytes:
        """All overlays side by side in one readable PNG (CLI, ``/explain?format=png``).

        Tiles are scaled to at least 512 px (or the source image's size), each titled: clean
        or attacked, the map, model and version, the explained class's probability, and for
        attacked tiles the attack and ε (``attack_title`` in place of the attack's own, e.g.
        the smallest flip a trust search found). See :mod:`training.explain.panel`.
        """
        tiles = []
        for key, png in self.overlays.items():
            bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise RuntimeError(f"the {key} overlay is not a decodable image")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            tiles.append(Tile(key, self._title(key, attack_title), rgb))
        label = f"{self.method} / attention" if "attention" in self.overlays else self.method
        return render_panel(tiles, tile_side(self.source_shape), scale_label=f"{label}: 0 to 1")

    def _title(self, key: str, attack_title: str | None) -> tuple[str, ...]:
        """Three lines: what the tile shows, whose model, the explained class's probability."""
        attacked = key == "adversarial_image" or key.endswith("_adversarial")
        shown = "image" if key == "adversarial_image" else key.removesuffix("_adversarial")
        prediction = self.adversarial_prediction if attacked else self.prediction
        what = f"attacked: {attack_title or _attack_title(self.attack)}" if attacked else "clean"
        probability = "?"
        if prediction is not None and self.class_explained in prediction.probabilities:
            probability = f"{prediction.probabilities[self.class_explained]:.3f}"
        model = f"{shown} | {self.prediction.model} v{self.prediction.version}"
        top = f", top {prediction.top_class}" if attacked and prediction is not None else ""
        return what, model, f"p({self.class_explained}) = {probability}{top}"


def _attack_title(attack: dict | None) -> str:
    """``pgd L∞ ε=4/255`` from an attack's recorded parameters."""
    if not attack:
        return "adversarial"
    norm = {"inf": "L∞", "2": "L2"}.get(str(attack.get("norm")), "")
    epsilon = attack.get("epsilon")
    budget = f"ε={epsilon:g}/255" if isinstance(epsilon, int | float) else ""
    return " ".join(part for part in (str(attack.get("name", "attack")), norm, budget) if part)


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
        source_shape=tuple(np.shape(image)),
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
        source_shape=result.source_shape,
    )
